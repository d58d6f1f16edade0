"""The dispatch seam: runs go to Celery by task name once their transaction commits; a refused send fails the run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.factories import PromptSetFactory
from training.models import DatasetVersion, GenerationRun, ModelVersion, TrainingRun
from training.services import dispatch, generation
from training.services.generation import start_generation
from training.services.runs import start_run

pytestmark = pytest.mark.django_db


class FakeBroker:
    """Stands in for `app.send_task`: records each message, or refuses them all like a broker that is down."""

    def __init__(self, *, down: bool = False) -> None:
        self.sent: list[tuple[str, list, str]] = []
        self.down = down

    def send_task(self, name: str, *, args: list, queue: str) -> SimpleNamespace:
        if self.down:
            raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
        self.sent.append((name, args, queue))
        return SimpleNamespace(id=f"task-{len(self.sent)}")


@pytest.fixture
def broker(monkeypatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(dispatch.app, "send_task", fake.send_task)
    return fake


@pytest.fixture
def dataset_version() -> DatasetVersion:
    return DatasetVersion.objects.create(
        name="v1", content_hash="0" * 64, options={}, path="/nowhere", n_rankings=4, n_train=4, n_test=2
    )


def test_a_training_run_is_sent_by_name_after_commit_and_keeps_its_task_id(
    broker, dataset_version, django_capture_on_commit_callbacks
):
    """Nothing leaves before the commit; then one message to the run's queue, and its id on the run."""
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(kind="reward", dataset_version=dataset_version, base_model="org/model", queue="gpu")
        assert broker.sent == []
    assert broker.sent == [("training.execute_run", [run.pk], "gpu")]
    run.refresh_from_db()
    assert (run.status, run.celery_task_id) == (TrainingRun.Status.QUEUED, "task-1")


def test_a_broker_that_refuses_the_message_fails_the_training_run_with_the_reason(
    broker, dataset_version, django_capture_on_commit_callbacks
):
    """A run the broker never took is FAILED at once, saying why, not QUEUED for ever."""
    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(kind="reward", dataset_version=dataset_version, base_model="org/model", queue="cpu")
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.finished_at is not None
    assert "Could not queue the run" in run.error and "Connection refused" in run.error


def test_a_generation_run_goes_the_same_way(broker, monkeypatch, django_capture_on_commit_callbacks):
    """Sent by name to the chosen queue; FAILED with the reason when the broker refuses."""
    monkeypatch.setattr(generation, "choose_queue", lambda: dispatch.QueueChoice("cpu", "no GPU worker answered"))
    policy = ModelVersion.objects.create(name="p1", kind=ModelVersion.Kind.POLICY, path="/nowhere")
    with django_capture_on_commit_callbacks(execute=True):
        sent = start_generation(policy=policy, prompt_set=PromptSetFactory())
    assert broker.sent == [("training.execute_generation", [sent.pk], "cpu")]

    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        refused = start_generation(policy=policy, prompt_set=PromptSetFactory())
    refused.refresh_from_db()
    assert refused.status == GenerationRun.Status.FAILED and "Could not queue the run" in refused.error


def test_the_names_dispatch_sends_are_the_names_the_worker_registers():
    """A renamed task would leave every run QUEUED: the seam's names must be registered tasks."""
    import training.tasks  # noqa: F401 - registers the tasks with the app, as the worker's autodiscovery does

    assert {dispatch.EXECUTE_RUN, dispatch.EXECUTE_GENERATION} <= set(dispatch.app.tasks)
