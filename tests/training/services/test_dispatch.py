"""Queue routing and sending, against the real Redis broker and a real Celery worker (or an unreachable broker).

Messages sent while no worker runs are read back from the broker's queue lists.
"""

from __future__ import annotations

import base64
import json

import pytest
from django.conf import settings

from tests.factories import PromptSetFactory
from tests.training.factories import ranked_prompt_set
from tests.training.worker import celery_worker
from training.models import DatasetExport, DatasetVersion, ModelVersion, TrainingRun
from training.services import dispatch
from training.services.dispatch import choose_queue
from training.services.export import ExportOptions, request_export
from training.services.generation import start_generation
from training.services.runs import start_run
from webapp.celery import app

CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every connection is refused at once

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_queue_cache(monkeypatch):
    """Each test starts with no remembered answer."""
    monkeypatch.setattr(dispatch, "_queue_cache", None)


def _reset_broker_connections() -> None:
    # The app keeps its connection and producer pools once made; a new broker URL needs new ones. kombu keeps the
    # old ones open in its registry (keyed by URL), ready for when the URL is restored.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def unreachable_broker(monkeypatch):
    """Point the Celery app at a closed port for one test, then back at the suite's Redis."""
    original = app.conf.broker_url
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", CLOSED_PORT_BROKER)
    app.conf.broker_url = CLOSED_PORT_BROKER
    _reset_broker_connections()
    yield CLOSED_PORT_BROKER
    monkeypatch.undo()
    app.conf.broker_url = original
    _reset_broker_connections()


@pytest.fixture
def dataset_version(db) -> DatasetVersion:
    return DatasetVersion.objects.create(
        name="v1", content_hash="0" * 64, options={}, path="/nowhere", n_rankings=4, n_train=4, n_test=2
    )


# --- choose_queue ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_on_the_gpu_queue_routes_runs_to_it_once_the_cached_answer_expires(tmp_path):
    """A real worker answers; the first answer is reused within the cache window, and a later ask sees the change."""
    with celery_worker(data_dir=tmp_path, queues="cpu"):
        first = choose_queue(timeout=2.0, cache_seconds=60)
        assert first == dispatch.QueueChoice("cpu", "no GPU worker answered")

        # The same worker now also consumes the gpu queue (Celery's remote control, as an operator would do it).
        replies = app.control.add_consumer("gpu", reply=True, timeout=5.0)
        assert replies and all("ok" in reply for answer in replies for reply in answer.values()), replies

        assert choose_queue(timeout=2.0, cache_seconds=60) is first  # within the window: not asked again
        after_expiry = choose_queue(timeout=2.0, cache_seconds=0)
    assert after_expiry.queue == "gpu"
    assert after_expiry.reason.startswith("GPU worker test-") and after_expiry.reason.endswith(" is alive")


def test_with_no_worker_answering_runs_go_to_the_cpu_queue():
    """The broker is up but nobody answers the ping: cpu, saying so."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()  # no stale replies from an earlier test's worker
    assert choose_queue(timeout=0.5) == dispatch.QueueChoice("cpu", "no GPU worker answered")


def test_an_unreachable_broker_routes_to_cpu_and_names_the_error(unreachable_broker):
    """Asking the workers fails outright: cpu, with the error's class as the reason, and that answer is cached."""
    choice = choose_queue(timeout=0.5)
    assert choice == dispatch.QueueChoice("cpu", "could not ask workers (OperationalError)")
    assert choose_queue(timeout=0.5) is choice


# --- sending ---------------------------------------------------------------------------------------------------------


def test_a_run_the_broker_cannot_take_is_failed_with_the_reason(
    unreachable_broker, dataset_version, django_capture_on_commit_callbacks
):
    """No broker behind the URL: the run ends FAILED at once, its error says why, and its log says where it went."""
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(kind="reward", dataset_version=dataset_version, base_model="org/model")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.finished_at is not None
    assert run.error.startswith("Could not queue the run:") and "Connection refused" in run.error
    assert run.celery_task_id == ""
    assert run.log_tail.startswith("queued on 'cpu' (could not ask workers (OperationalError))")


@pytest.fixture
def broker():
    """The test broker's Redis database, emptied before and after (it holds only test traffic)."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()


def queued(client, queue: str) -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting in a queue, oldest first."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu pushes on the left
        envelope = json.loads(raw)
        args = json.loads(base64.b64decode(envelope["body"]))[0]
        messages.append((envelope["headers"]["task"], args))
    return messages


def test_a_training_run_is_sent_by_name_after_commit_and_keeps_its_task_id(
    broker, dataset_version, django_capture_on_commit_callbacks
):
    """Nothing leaves before the commit; then one message on the run's queue, and its id on the run."""
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(kind="reward", dataset_version=dataset_version, base_model="org/model", queue="gpu")
        assert queued(broker, "gpu") == []
    assert queued(broker, "gpu") == [("training.execute_run", [run.pk])]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED and run.celery_task_id


def test_a_generation_run_goes_the_same_way(broker, django_capture_on_commit_callbacks):
    """Sent by name to the queue chosen for it."""
    policy = ModelVersion.objects.create(name="p1", kind=ModelVersion.Kind.POLICY, path="/nowhere")
    with django_capture_on_commit_callbacks(execute=True):
        sent = start_generation(policy=policy, prompt_set=PromptSetFactory())
    assert queued(broker, sent.queue) == [("training.execute_generation", [sent.pk])]


def test_an_export_goes_to_the_cpu_queue(broker, django_capture_on_commit_callbacks):
    """Exports need no GPU: they always go to cpu."""
    prompt_set = ranked_prompt_set(n_prompts=2)
    with django_capture_on_commit_callbacks(execute=True):
        export = request_export(options=ExportOptions(prompt_set_ids=(prompt_set.pk,))).export
    assert queued(broker, "cpu") == [("training.execute_export", [export.pk])]
    assert DatasetExport.objects.get(pk=export.pk).celery_task_id


def test_the_names_dispatch_sends_are_the_names_the_worker_registers():
    """A renamed task would leave every run QUEUED: the seam's names must be registered tasks."""
    import training.tasks  # noqa: F401 - registers the tasks with the app, as the worker's autodiscovery does

    assert {dispatch.EXECUTE_RUN, dispatch.EXECUTE_GENERATION, dispatch.EXECUTE_EXPORT} <= set(dispatch.app.tasks)
