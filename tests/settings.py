"""Test settings: the real Postgres and Redis that run on this machine, unless the env says otherwise."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Most tests pass made-up hub ids ("org/model") to test other things; the offline cache check has its own tests,
# which turn it on (tests/training/test_base_models.py).
os.environ.setdefault("PREFLOOP_CHECK_HUB_CACHE", "0")
# DEBUG is off in tests, as in production, and production refuses to start without a key.
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-insecure-key-" + "x" * 40)

from webapp.settings import *  # noqa: F403

# Hashing cost is not under test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
