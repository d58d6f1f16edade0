"""PrefLoop settings: one module, every value from the environment with a safe local default, but for
DJANGO_SECRET_KEY, which a process with DEBUG off refuses to start without.

The defaults are the embedded setup (SQLite + a file-system Celery broker, no servers needed);
docker-compose and the test command point DATABASE_URL / CELERY_BROKER_URL at Postgres and Redis.
"""

from __future__ import annotations

from .env import (
    BASE_DIR,
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    proxy_ssl_header,
    secret_key,
)

VAR_DIR = BASE_DIR / env_str("PREFLOOP_VAR_DIR", "var")

DEBUG = env_bool("DJANGO_DEBUG", False)
# Required when DEBUG is off: the process refuses to start without it (webapp.env.secret_key).
SECRET_KEY = secret_key(debug=DEBUG)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS deployments ---
# All off by default so `make run` and compose work over plain http on localhost; a deployment behind HTTPS turns
# them on (README, "Production settings"), and `manage.py check --deploy` is then clean.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Behind a TLS-terminating proxy, the header it sets to say the client used HTTPS, e.g. `X-Forwarded-Proto: https`.
SECURE_PROXY_SSL_HEADER = proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
# Browsers remember HSTS for this long: start small (e.g. 3600) and raise it to a year once HTTPS is known good.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)

# --- Content-Security-Policy (django-csp) ---
# Every script and stylesheet is a static file of this app (htmx vendored, Swagger UI from drf-spectacular-sidecar),
# so nothing inline and nothing from another origin is allowed. The pages keep to it: no inline <script>/<style>,
# no style= attributes, htmx told not to inject its indicator <style> (htmx-config meta). data: images are Swagger
# UI's CSS icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from our static files (works offline)
    "csp",
    "django_htmx",
    "django_celery_results",
    "django_celery_beat",
    "labeling",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside the rest, so every error under /api/ (a 404 no view answered, a 500) reaches it and becomes JSON.
    "webapp.api_errors.ApiJsonErrorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-csp's, with the policy built once instead of per response (webapp/csp.py).
    "webapp.csp.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, without the per-request `SELECT 1` health check on a connection in steady use.
    DATABASES["default"]["ENGINE"] = "webapp.postgres"
# A persistent connection idle for longer than this is health-checked (SELECT 1) before a request uses it.
DB_HEALTH_CHECK_IDLE_SECONDS = env_float("DB_HEALTH_CHECK_IDLE_SECONDS", 2.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labeling:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files from the app dirs too when no collectstatic ran (embedded default, tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads: JSONL/CSV imports are parsed in memory; bigger files belong to the management command.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("PREFLOOP_MAX_UPLOAD_BYTES", 64 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
# Largest JSON body the API parses (answered 413 above it); an import sent inline as JSON is bounded
# like an upload instead. A ranking or a run config is well under a kilobyte.
PREFLOOP_MAX_JSON_BODY_BYTES = env_int("PREFLOOP_MAX_JSON_BODY_BYTES", 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's token check, with the user's permissions read in the same query (no per-request perm queries).
        "webapp.authentication.TokenWithPermissionsAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies are bounded by PREFLOOP_MAX_JSON_BODY_BYTES, not only by the upload bound above.
    "DEFAULT_PARSER_CLASSES": [
        "webapp.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # Every operation documents each error status it can answer, with the one error shape as its body.
    "DEFAULT_SCHEMA_CLASS": "webapp.api_errors.ApiAutoSchema",
    # One error shape for every 4xx: {"code", "detail", "field"?, "errors"?} (see webapp/api_errors.py).
    "EXCEPTION_HANDLER": "webapp.api_errors.api_exception_handler",
    # limit/offset with a largest page: an absurd ?limit= is clamped instead of overflowing the query.
    "DEFAULT_PAGINATION_CLASS": "webapp.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PrefLoop API",
    "DESCRIPTION": "Collect human rankings of model rollouts; export preference datasets; train.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Two models have a `kind` field with different choices: name their enums instead of a hash suffix.
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "training.models.TrainingRun.Kind",
        "ModelKindEnum": "training.models.ModelVersion.Kind",
    },
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files, not a CDN: the docs work offline and
    # under the CSP above.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: it would load an image from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- labeling ---
# Our own settings are flat and named like the environment variable they come from, so a test
# overrides one with `settings.PREFLOOP_X = ...` and a reader greps for one name.
# How long an annotator holds a task before it returns to the pool.
PREFLOOP_LEASE_SECONDS = env_int("PREFLOOP_LEASE_SECONDS", 15 * 60)
# Longest prompt or response accepted on import (characters); longer is an import error.
PREFLOOP_MAX_TEXT_CHARS = env_int("PREFLOOP_MAX_TEXT_CHARS", 100_000)

# --- training ---
# Dataset versions, model weights and staging dirs. Staging sits beside the final dirs (same file
# system) so finishing a run is an atomic rename.
PREFLOOP_DATA_DIR = BASE_DIR / env_str("PREFLOOP_DATA_DIR", str(VAR_DIR / "data"))
# A running run that has not sent a heartbeat for this long is declared dead by the reaper.
PREFLOOP_RUN_HEARTBEAT_TIMEOUT = env_int("PREFLOOP_RUN_HEARTBEAT_TIMEOUT", 120)
# Default starting model offered in the run form (a local path or a hub id).
PREFLOOP_DEFAULT_BASE_MODEL = env_str("PREFLOOP_DEFAULT_BASE_MODEL", "")
# The quality gate keeps degenerate samples (empty, U+FFFD, runaway repetition, cut off at max_new_tokens) out of
# the ranking queue; they are counted on the generation run. Off: every non-empty sample is queued.
PREFLOOP_ROLLOUT_QUALITY_GATE = env_bool("PREFLOOP_ROLLOUT_QUALITY_GATE", True)
# Generation in a process of its own: "auto" for the vLLM engine only (it may not start inside a Celery prefork child
# and frees its GPU memory only when its process exits), "always" for every engine.
PREFLOOP_GENERATION_PROCESS = env_str("PREFLOOP_GENERATION_PROCESS", "auto")
# vLLM engine settings: the share of GPU memory it may take (weights + KV cache), and its weights' dtype.
PREFLOOP_VLLM_GPU_MEMORY_UTILIZATION = env_float("PREFLOOP_VLLM_GPU_MEMORY_UTILIZATION", 0.85)
PREFLOOP_VLLM_DTYPE = env_str("PREFLOOP_VLLM_DTYPE", "auto")
# Where GGUF base models are converted to, one folder per file checksum; "" = PREFLOOP_DATA_DIR/models/base.
PREFLOOP_BASE_MODEL_CACHE = env_str("PREFLOOP_BASE_MODEL_CACHE", "")
# With HF_HUB_OFFLINE on, a hub id is accepted for a run only when the local Hugging Face cache holds it: the worker
# could not download it, and would fail minutes later. Off: hub ids are passed on unchecked.
PREFLOOP_CHECK_HUB_CACHE = env_bool("PREFLOOP_CHECK_HUB_CACHE", True)
# RL audits (training.services.audits): the run page warns when a reward-model judge orders fewer than this share of
# the audited pairs as humans did (0.5 is a coin) - the policy may be gaming it - once it has this many pairs (fewer
# swing too far by chance: at 30 pairs the 95% interval of a true 0.75 is about +-0.15).
PREFLOOP_AUDIT_AGREEMENT_WARNING = env_float("PREFLOOP_AUDIT_AGREEMENT_WARNING", 0.6)
PREFLOOP_AUDIT_MIN_PAIRS = env_int("PREFLOOP_AUDIT_MIN_PAIRS", 30)
# Threads torch uses in a worker; 0 = the cores this worker process may run on (its CPU affinity), so a worker
# pinned to 2 cores of a busy machine does not start one thread per core of the machine and thrash.
PREFLOOP_TORCH_THREADS = env_int("PREFLOOP_TORCH_THREADS", 0)

# --- Celery ---
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
# The web process publishes inside requests (start a run, export): with the broker down or mute, a publish must
# fail within seconds, so the run is marked FAILED and the response says so, instead of the request blocking on
# kombu's defaults (retrying a connection for 4-6 s, twice, and Redis sockets with no timeout at all).
# Each connection attempt gets PREFLOOP_BROKER_TIMEOUT seconds; a publish and a worker ping retry once, at once
# (a pooled connection the broker dropped is replaced by that retry). Workers keep Celery's own patient
# reconnection loop (broker_connection_max_retries): they are not in anyone's request.
PREFLOOP_BROKER_TIMEOUT = env_float("PREFLOOP_BROKER_TIMEOUT", 2.0)
CELERY_BROKER_CONNECTION_TIMEOUT = PREFLOOP_BROKER_TIMEOUT
_BROKER_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TASK_PUBLISH_RETRY_POLICY = dict(_BROKER_RETRY)
# kombu reads these for every new connection (Connection.default_channel): the same single quick retry.
CELERY_BROKER_TRANSPORT_OPTIONS: dict = dict(_BROKER_RETRY)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # redis-py waits forever by default, also for the reply of a broker that accepted the connection and went
    # mute. Redis answers in milliseconds; a worker's BRPOP returns every second (brpop_timeout) and kombu reads
    # it only once the socket is readable, so the read timeout never cuts a healthy poll short.
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "socket_connect_timeout": PREFLOOP_BROKER_TIMEOUT,
        "socket_timeout": PREFLOOP_BROKER_TIMEOUT,
    }
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's file-system broker (the embedded default) needs its folders to exist before use;
    # the control folder lets `inspect` reach workers, which queue routing relies on.
    _broker = VAR_DIR / "broker"
    for _name in ("in", "processed", "control"):
        (_broker / _name).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "data_folder_in": str(_broker / "in"),
        "data_folder_out": str(_broker / "in"),
        "processed_folder": str(_broker / "processed"),
        "control_folder": str(_broker / "control"),
        "store_processed": False,
    }
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "django-db")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Periodic work (beat writes these into its database schedule on start; admins can edit them there).
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {"task": "training.reap_stale_runs", "schedule": 60.0, "options": {"queue": "cpu"}},
    "auto-train": {
        "task": "training.auto_train",
        "schedule": env_int("PREFLOOP_AUTO_TRAIN_SECONDS", 300),
        "options": {"queue": "cpu"},
    },
    # Prompt-set progress (labeling.services.progress): triggers append a row per count-changing statement (a few per
    # ranking); folding keeps each set's rows few, so the admin's and annotators' counts read a handful of rows.
    "fold-progress": {"task": "labeling.fold_progress", "schedule": 30.0, "options": {"queue": "cpu"}},
    # Active learning: re-score the open tasks of uncertainty-ordered sets that are due (N new rankings, or tasks
    # not yet scored); labeling.services.priorities.
    "refresh-priorities": {
        "task": "training.refresh_due_priorities",
        "schedule": env_int("PREFLOOP_PRIORITY_REFRESH_SECONDS", 60),
        "options": {"queue": "cpu"},
    },
}
CELERY_TIMEZONE = TIME_ZONE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
