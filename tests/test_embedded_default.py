"""The embedded default of `make run`: SQLite and kombu's file-system broker, with a real worker, no servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_a_task_round_trips_through_the_file_system_broker_to_a_real_worker(tmp_path):
    """migrate → start a worker → send a task from another process → its result comes back via the DB."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_RESULT_BACKEND": "django-db",
        "PREFLOOP_VAR_DIR": str(tmp_path / "var"),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webapp",
            "worker",
            "-Q",
            "cpu",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        script = (
            "import django; django.setup()\n"
            "from webapp.celery import app\n"
            "from training.tasks import reap_stale_runs\n"
            "print('result', reap_stale_runs.apply_async(queue='cpu').get(timeout=60))\n"
            # Remote control (queue routing pings workers) once the worker is surely listening.
            "print('ping', bool(app.control.inspect(timeout=5).ping()))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ping True" in result.stdout and "result 0" in result.stdout
    assert (tmp_path / "var" / "broker" / "control").is_dir()
