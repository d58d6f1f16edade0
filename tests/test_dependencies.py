"""The dependency files say what the code imports, and vendored files are the versions they claim to be."""

from __future__ import annotations

import ast
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"webapp", "labeling", "training", "demo", "tests", "benchmarks", "manage"}
# Import name → distribution name, where they differ.
DISTRIBUTION_OF = {
    "rest_framework": "djangorestframework",
    "drf_spectacular": "drf-spectacular",
    "django_htmx": "django-htmx",
    "django_celery_results": "django-celery-results",
    "django_celery_beat": "django-celery-beat",
    "yaml": "PyYAML",
    "factory": "factory_boy",
    "psycopg": "psycopg",
    "csp": "django-csp",
    "markdown_it": "markdown-it-py",
    "huggingface_hub": "huggingface-hub",
}
# Imported only behind an availability check, on GPU machines that install them on top of the pinned stack.
OPTIONAL = {"vllm"}


def _requirements(path: Path) -> dict[str, str]:
    """Pinned distributions (name → version) of a requirements file and the files it includes."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins.update(_requirements(path.parent / line[3:].strip()))
        elif line:
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def _imported_top_level_modules(folders: list[str]) -> set[str]:
    modules: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules.add(node.module.split(".")[0])
    return modules - FIRST_PARTY - OPTIONAL - set(sys.stdlib_module_names) - {"__future__"}


def test_every_imported_package_is_pinned_in_the_requirements():
    """Runtime code imports only pinned runtime requirements; tests and benchmarks only pinned dev requirements."""
    runtime = _requirements(ROOT / "requirements.txt")
    dev = _requirements(ROOT / "requirements-dev.txt")
    for folders, pins in ((["webapp", "labeling", "training", "demo"], runtime), (["tests", "benchmarks"], dev)):
        missing = {
            module
            for module in _imported_top_level_modules(folders)
            if DISTRIBUTION_OF.get(module, module).lower().replace("_", "-") not in {p.replace("_", "-") for p in pins}
        }
        assert missing == set(), f"imported in {folders} but not pinned: {sorted(missing)}"


def test_every_requirement_is_pinned_to_one_version():
    for name, version in _requirements(ROOT / "requirements-dev.txt").items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version), f"{name} is not pinned (=={version!r})"


def test_vendored_htmx_matches_its_recorded_version_and_checksum():
    recorded = (ROOT / "static/vendor/README.md").read_text()
    digest = hashlib.sha256((ROOT / "static/vendor/htmx.min.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in recorded
    version = re.search(r"\| `htmx.min.js` \|[^|]*\| ([0-9.]+) \|", recorded).group(1)
    assert f'version:"{version}"' in (ROOT / "static/vendor/htmx.min.js").read_text()


# Pinned but never imported by name: each is loaded by another package or named in settings as a string.
LOADED_INDIRECTLY = {
    "gunicorn": "the WSGI server scripts/run and the Dockerfile start",
    "whitenoise": "static files middleware, named in settings.MIDDLEWARE",
    "django-htmx": "middleware, named in settings.MIDDLEWARE",
    "django-celery-results": "the result backend app, named in settings.INSTALLED_APPS",
    "django-celery-beat": "the scheduler app, named in settings.INSTALLED_APPS",
    "kombu": "Celery's transport layer (the embedded file-system broker is kombu's), pinned with celery",
    "redis": "the client Celery's redis:// transport uses",
    "psycopg": "Django's PostgreSQL backend driver",
    "accelerate": "required by transformers' Trainer at run time",
    "antlr4-python3-runtime": "math-verify's LaTeX parser runtime (math-verify leaves its version open)",
    "tokenizers": "the fast tokenizers transformers loads",
    "django-csp": "the Content-Security-Policy middleware, named in settings.MIDDLEWARE",
    "drf-spectacular-sidecar": "Swagger UI's static files, named in settings.INSTALLED_APPS and SPECTACULAR_SETTINGS",
    "gguf": "transformers' GGUF loader, which converts the SmolLM2 base model",
    "tensorboard": "the event writer behind torch.utils.tensorboard (report_to='tensorboard')",
}


def test_no_runtime_requirement_is_pinned_without_a_use():
    imported = {
        DISTRIBUTION_OF.get(m, m).lower().replace("_", "-")
        for m in _imported_top_level_modules(["webapp", "labeling", "training"])
    }
    unused = set(_requirements(ROOT / "requirements.txt")) - imported - set(LOADED_INDIRECTLY)
    assert unused == set(), f"pinned in requirements.txt but never used: {sorted(unused)}"
