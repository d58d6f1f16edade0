"""The one seam between training's services and Celery: pick a queue, send a run to it, revoke a message.

Messages go out by task *name* (`send_task`), so no service imports `training.tasks`: the tasks import the
services, never the other way round, and the worker that consumes a message is the one with the task code
loaded. A run is sent only once the transaction that created it commits (a worker must find its row), and a
send the broker refuses fails the run at once instead of leaving it QUEUED for ever. After the send the caller's
object is re-read, so what a view answers is the run's real state (FAILED with the reason), not the QUEUED row it
built before the send. How long a send may take with the broker down is bounded in settings (CELERY_* timeouts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import transaction

from training.models import BaseModelImport, DatasetExport, GenerationRun, TrainingRun
from webapp import clock
from webapp.celery import app

# Task names, as registered by the `name=` of the tasks in `training.tasks`.
EXECUTE_RUN = "training.execute_run"
EXECUTE_GENERATION = "training.execute_generation"
EXECUTE_EXPORT = "training.execute_export"
EXECUTE_BASE_MODEL_IMPORT = "training.execute_base_model_import"
# Exports need no GPU: they stream rows from the database to files on the cpu queue whatever the machine.
EXPORT_QUEUE = "cpu"


@dataclass(frozen=True)
class QueueChoice:
    queue: str
    reason: str


_queue_cache: tuple[float, QueueChoice] | None = None


def choose_queue(*, timeout: float = 1.0, cache_seconds: float = 30.0) -> QueueChoice:
    """`gpu` when a worker consuming the gpu queue answers a ping, else `cpu`."""
    global _queue_cache
    if _queue_cache and time.monotonic() - _queue_cache[0] < cache_seconds:
        return _queue_cache[1]
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as error:
        choice = QueueChoice("cpu", f"could not ask workers ({error.__class__.__name__})")
    else:
        gpu_workers = [name for name, queues in replies.items() if any(q.get("name") == "gpu" for q in queues)]
        choice = (
            QueueChoice("gpu", f"GPU worker {gpu_workers[0]} is alive")
            if gpu_workers
            else QueueChoice("cpu", "no GPU worker answered")
        )
    _queue_cache = (time.monotonic(), choice)
    return choice


def send_training_run_on_commit(run: TrainingRun) -> None:
    """Send the run to its queue when the current transaction commits; record the Celery task id.

    `run` is refreshed from the database after the send (at once outside a transaction, else on commit).
    """
    transaction.on_commit(lambda: _send_training_run(run))


def send_generation_run_on_commit(run: GenerationRun) -> None:
    """Send the generation run to its queue when the current transaction commits; then refresh `run`."""
    transaction.on_commit(lambda: _send_generation_run(run))


def send_export_on_commit(export: DatasetExport) -> None:
    """Send a dataset export to the cpu queue when the current transaction commits; then refresh `export`."""
    transaction.on_commit(lambda: _send_export(export))


def send_base_model_import_on_commit(model_import: BaseModelImport) -> None:
    """Send a GGUF conversion to the cpu queue (it needs no GPU) when the current transaction commits."""
    transaction.on_commit(lambda: _send(EXECUTE_BASE_MODEL_IMPORT, BaseModelImport, model_import.pk, EXPORT_QUEUE))


def _send_export(export: DatasetExport) -> None:
    task_id = _send(EXECUTE_EXPORT, DatasetExport, export.pk, EXPORT_QUEUE)
    if task_id is not None:
        DatasetExport.objects.filter(pk=export.pk).update(celery_task_id=task_id)
    export.refresh_from_db()


def _send_generation_run(run: GenerationRun) -> None:
    _send(EXECUTE_GENERATION, GenerationRun, run.pk, run.queue)
    run.refresh_from_db()


def revoke(task_id: str) -> None:
    """Tell workers to drop a message not yet started (a cancelled queued run)."""
    app.control.revoke(task_id)


def _send_training_run(run: TrainingRun) -> None:
    task_id = _send(EXECUTE_RUN, TrainingRun, run.pk, run.queue)
    if task_id is not None:
        TrainingRun.objects.filter(pk=run.pk).update(celery_task_id=task_id)
    run.refresh_from_db()


def _send(
    task_name: str,
    model: type[TrainingRun] | type[GenerationRun] | type[DatasetExport] | type[BaseModelImport],
    run_id: int,
    queue: str,
) -> str | None:
    """The message's id, or None when the broker refused it (the run is then FAILED with the reason)."""
    try:
        result = app.send_task(task_name, args=[run_id], queue=queue)
    except Exception as error:
        model.objects.filter(pk=run_id, status=model.Status.QUEUED).update(
            status=model.Status.FAILED, finished_at=clock.now(), error=f"Could not queue the run: {error}"
        )
        return None
    return result.id
