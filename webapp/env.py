"""The one place that reads the environment (12-factor): every setting has a safe local default, but for the
secret key, which a production process (DEBUG off) must be given."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# Seconds a new PostgreSQL connection may take before the request fails: without it psycopg waits 130 s on a
# server that accepts the connection and never answers, and every gunicorn thread piles up behind it. libpq
# counts whole seconds, 2 at least; a healthy server answers in milliseconds, even across a region.
DEFAULT_DB_CONNECT_TIMEOUT = 3
# Only for DJANGO_DEBUG=1: a key everyone can read in this file signs nothing that matters.
DEV_SECRET_KEY = "dev-only-insecure-key-never-used-with-debug-off"


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else int(raw)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else float(raw)


def secret_key(*, debug: bool) -> str:
    """DJANGO_SECRET_KEY; a fixed development key only while DEBUG is on; otherwise refuse to start.

    A published fallback key would let anyone forge sessions, password-reset links and signed values, so a
    production process (DEBUG off) without its own key stops here with a message instead of running.
    """
    key = os.environ.get("DJANGO_SECRET_KEY", "")
    if key:
        return key
    if debug:
        return DEV_SECRET_KEY
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off, so PrefLoop refuses to start with a "
        "known key. Set DJANGO_SECRET_KEY to a long random value, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'` (keep it secret and the same across "
        "restarts and processes), or set DJANGO_DEBUG=1 for local development only."
    )


def proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """Django's SECURE_PROXY_SSL_HEADER from `Header-Name: value` (e.g. `X-Forwarded-Proto: https`), or None.

    Only set it behind a proxy that always sets (or strips) that header itself: a client could otherwise
    send it and claim HTTPS.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, sep, value = raw.partition(":")
    header, value = header.strip(), value.strip()
    if not sep or not header or not value or " " in header:
        raise ImproperlyConfigured(
            f"{name} must look like 'X-Forwarded-Proto: https' (header, colon, value); got {raw!r}"
        )
    meta_key = header.upper().replace("-", "_")
    return (meta_key if meta_key.startswith("HTTP_") else f"HTTP_{meta_key}", value)


def database_from_url(url: str) -> dict:
    """Turn `postgres://user@host:port/name` or `sqlite:///path` into a Django DATABASES entry.

    PostgreSQL connections give up after DB_CONNECT_TIMEOUT seconds (see DEFAULT_DB_CONNECT_TIMEOUT).

    SQLite gets IMMEDIATE transactions and WAL: writers then take the lock at BEGIN, so two
    annotators can never both read "one slot left" and both take it.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path)
        if path.startswith("//"):  # sqlite:////abs/path
            path = path[1:]
        elif path.startswith("/"):  # sqlite:///relative/path
            path = str(BASE_DIR / path.lstrip("/"))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": path + ".test"},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        # A `?connect_timeout=` in the URL wins over DB_CONNECT_TIMEOUT.
        options = {
            "connect_timeout": env_int("DB_CONNECT_TIMEOUT", DEFAULT_DB_CONNECT_TIMEOUT),
            **{key: values[-1] for key, values in parse_qs(parsed.query).items()},
        }
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    raise ValueError(f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite:///)")
