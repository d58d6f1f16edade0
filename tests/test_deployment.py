"""docker-compose.yml is valid, wires every service through env vars, and reserves a GPU for the gpu worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from webapp.env import database_from_url

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "a-deployment-key-for-the-compose-file-check-only-0123456789"


def _compose_command() -> list[str]:
    # An empty env file instead of a developer's .env: the test decides every variable (compose wants a real file).
    empty_env = Path(tempfile.gettempdir()) / "prefloop-compose-test.env"
    empty_env.write_text("")
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose", "--env-file", str(empty_env), "config", "--format", "json"]
    if shutil.which("docker-compose"):
        return ["docker-compose", "--env-file", str(empty_env), "config"]
    pytest.fail("no compose CLI: scripts/system-deps installs one")


def _run_compose_config(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """`compose config` with exactly these DJANGO_* variables (a local .env file is ignored)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DJANGO_")} | environment
    return subprocess.run(_compose_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def compose_config() -> dict:
    result = _run_compose_config({"DJANGO_SECRET_KEY": SECRET_KEY})
    assert result.returncode == 0, result.stderr
    if result.args[-1] == "json":
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
    # Every GPU of the machine (one run trains on all of them), and the image that carries vLLM.
    assert devices[0]["count"] in ("all", -1)
    assert gpu["build"]["args"]["REQUIREMENTS"] == "requirements-gpu.txt"
    assert "vllm==" in (ROOT / "requirements-gpu.txt").read_text()
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


def test_compose_refuses_to_start_without_a_secret_key():
    """No `change-me` default any more: an unset DJANGO_SECRET_KEY stops compose with a message naming it."""
    result = _run_compose_config({})
    assert result.returncode != 0
    assert "set DJANGO_SECRET_KEY to a long random value" in result.stderr


def test_app_services_run_with_debug_off_and_the_given_key():
    """Every app container is production-shaped: DEBUG off, so the settings insist on the key passed in."""
    services = compose_config()["services"]
    for name in ("web", "worker-cpu", "worker-gpu", "beat"):
        env = services[name]["environment"]
        assert (env["DJANGO_DEBUG"], env["DJANGO_SECRET_KEY"]) == ("0", SECRET_KEY)
