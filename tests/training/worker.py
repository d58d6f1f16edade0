"""A real Celery worker in a child process, on the real Redis broker and the test's Postgres database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def _flush_broker() -> None:
    """Our Redis db index holds only test traffic; stale messages from an earlier run must not be delivered."""
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def celery_worker(*, data_dir: Path, queues: str = "cpu", heartbeat_timeout: int = 120, log_path: Path | None = None):
    """Start `celery worker` (solo pool, so SIGKILL hits the process running the task) and wait until it answers."""
    _flush_broker()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PREFLOOP_DATA_DIR": str(data_dir),
        "PREFLOOP_RUN_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DB_CONN_MAX_AGE": "0",
    }
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    log = open(log_path or data_dir / "worker.log", "w")  # noqa: SIM115 - the worker writes to it until it stops
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webapp",
            "worker",
            "-Q",
            queues,
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_until_ready(process)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _wait_until_ready(process: subprocess.Popen, timeout: float = 60) -> None:
    from webapp.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}")
        if app.control.inspect(timeout=0.5).ping():
            return
    raise TimeoutError("celery worker did not answer a ping")


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
