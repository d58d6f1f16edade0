"""docker-compose.yml is valid, wires every service through env vars, and reserves a GPU for the gpu worker."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from webapp.env import database_from_url

ROOT = Path(__file__).resolve().parents[1]


def compose_config() -> dict:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose", "config", "--format", "json"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose", "config"]
    else:
        pytest.fail("no compose CLI: scripts/system-deps installs one")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if command[-1] == "json":
        return json.loads(result.stdout)
    import yaml

    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_has_every_service():
    """postgres, redis, web, cpu and gpu workers, and beat."""
    services = compose_config()["services"]
    assert set(services) == {"postgres", "redis", "web", "worker-cpu", "worker-gpu", "beat"}


def test_the_gpu_worker_reserves_a_gpu_and_consumes_the_gpu_queue():
    """Device reservations, and the queue routing expects a worker on 'gpu'."""
    gpu = compose_config()["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "gpu,cpu" in gpu["command"]
    assert "cpu" in compose_config()["services"]["worker-cpu"]["command"]


def test_app_services_are_configured_only_by_environment_and_the_urls_parse():
    """The same settings module reads the compose environment as it reads ours in tests."""
    services = compose_config()["services"]
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith("redis://")
        database = database_from_url(env["DATABASE_URL"])
        assert (database["ENGINE"], database["HOST"], database["NAME"]) == (
            "django.db.backends.postgresql",
            "postgres",
            "prefloop",
        )
