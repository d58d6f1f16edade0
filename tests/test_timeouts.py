"""A database or broker that is down or mute makes a request fail promptly with the reason, never hang.

The mute database is a real TCP listener that accepts connections and never says a word (what a stuck server or a
black-holed proxy looks like to a client); the unreachable broker is a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import AdminFactory
from tests.training.admin.helpers import make_version
from training.models import TrainingRun
from training.services import dispatch
from webapp.env import DEFAULT_DB_CONNECT_TIMEOUT, database_from_url

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every connection is refused at once
# Well above the connect timeout (3 s) and well below psycopg's own default wait (130 s) that it replaces.
SUBPROCESS_TIMEOUT = 60
# The bound for starting a run with the broker down; the client gives up after it.
CLIENT_TIMEOUT = 5


# --- database --------------------------------------------------------------------------------------------------------


def test_postgres_connections_carry_a_connect_timeout(monkeypatch):
    """By default, from DB_CONNECT_TIMEOUT, and a `?connect_timeout=` in the URL wins over both."""
    monkeypatch.delenv("DB_CONNECT_TIMEOUT", raising=False)
    assert database_from_url("postgres://u@db:5432/app")["OPTIONS"]["connect_timeout"] == DEFAULT_DB_CONNECT_TIMEOUT
    assert DEFAULT_DB_CONNECT_TIMEOUT <= 5
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "4")
    assert database_from_url("postgres://u@db:5432/app")["OPTIONS"]["connect_timeout"] == 4
    options = database_from_url("postgres://u@db:5432/app?connect_timeout=10&sslmode=require")["OPTIONS"]
    assert options == {"connect_timeout": "10", "sslmode": "require"}


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts every connection and never answers; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # held open, never read from or written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    listener.close()


MUTE_DATABASE_SCRIPT = """
import django
django.setup()
from django.db import connection
from django.test import Client

client = Client(raise_request_exception=False)
client.cookies["sessionid"] = "a" * 32  # the session is looked up in the database
print("status", client.get("/label/").status_code)
try:
    connection.ensure_connection()
except Exception as error:
    print("error", type(error).__name__, error)
"""


def test_a_request_against_a_mute_database_fails_instead_of_hanging(mute_server, tmp_path):
    """The request gets its 500 and the connection error says it timed out, long before psycopg's 130 s."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{mute_server}/prefloop",
        "PREFLOOP_VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("DB_CONNECT_TIMEOUT", None)
    result = subprocess.run(
        [sys.executable, "-c", MUTE_DATABASE_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "status 500" in result.stdout
    assert "error OperationalError connection timeout expired" in result.stdout


# --- broker ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def unreachable_broker(monkeypatch):
    """The Celery app (and so the live server in this process) points at a closed port for one test."""
    from webapp.celery import app

    def reset_connections() -> None:
        # The app keeps its connection and producer pools once made; a new broker URL needs new ones.
        app._pool = None
        app.amqp._producer_pool = None

    original = app.conf.broker_url
    monkeypatch.setenv("CELERY_BROKER_URL", CLOSED_PORT_BROKER)  # Celery reads it before its own configuration
    monkeypatch.setattr(dispatch, "_queue_cache", None)
    app.conf.broker_url = CLOSED_PORT_BROKER
    reset_connections()
    yield
    monkeypatch.undo()
    app.conf.broker_url = original
    reset_connections()


@pytest.mark.django_db(transaction=True)
def test_starting_a_run_with_the_broker_down_answers_promptly_with_the_failure(unreachable_broker, live_server):
    """POST /api/runs/ over HTTP: answered within the client's timeout, and the body is the FAILED run with why."""
    researcher = AdminFactory()
    token, _ = Token.objects.get_or_create(user=researcher)
    version = make_version()
    request = urllib.request.Request(
        f"{live_server.url}/api/runs/",
        data=json.dumps({"kind": "reward", "dataset_version": version.pk, "base_model": "org/model"}).encode(),
        headers={"Authorization": f"Token {token.key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
        status, body = response.status, json.loads(response.read())
    assert status == 201
    assert body["status"] == TrainingRun.Status.FAILED
    assert body["error"].startswith("Could not queue the run:") and "Connection refused" in body["error"]
    assert body["finished_at"] is not None
    stored = TrainingRun.objects.get(pk=body["id"])
    assert (stored.status, stored.error) == (body["status"], body["error"])


@pytest.mark.django_db(transaction=True)  # autocommit, as in production: the send happens inside the request
def test_the_admin_run_form_with_the_broker_down_says_the_run_failed_and_why(unreachable_broker, client):
    """No "queued" success message for a run the broker refused: an error message with the reason, on its page."""
    client.force_login(AdminFactory())
    version = make_version()
    form = {
        "kind": "dpo",
        "config_kind": "dpo",
        "dataset_version": version.pk,
        "base_model": "org/tiny-model",
        "parent_model": "",
        "learning_rate": "1e-05",
        "max_steps": "20",
        "num_train_epochs": "1",
        "per_device_batch_size": "4",
        "max_length": "",
        "seed": "1",
        "beta": "0.2",
        "advanced_config": "",
    }
    page = client.post(reverse("admin:training_trainingrun_add"), form, follow=True)
    run = TrainingRun.objects.get()
    assert page.redirect_chain == [(reverse("admin:training_trainingrun_live", args=[run.pk]), 302)]
    assert run.status == TrainingRun.Status.FAILED
    shown = [(message.level_tag, message.message) for message in page.context["messages"]]
    assert shown == [("error", f"{run} could not be queued: {run.error}")]
    assert "Connection refused" in run.error
