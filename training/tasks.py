"""Celery tasks: thin shells that load ids and call the services.

Imports run one way: tasks import services; services send work here by task name through
`training.services.dispatch` and never import this module. The names below are that contract.
"""

from __future__ import annotations

from celery import shared_task

from training.services import autotrain, dispatch, generation, runs


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_RUN)
def execute_training_run(self, run_id: int) -> str:
    run = runs.execute_run(run_id, device_label=self.request.hostname or "")
    return run.status


@shared_task(name="training.reap_stale_runs")
def reap_stale_runs() -> int:
    return runs.reap_stale_runs()


@shared_task(name="training.auto_train")
def auto_train() -> list[int]:
    return [run.pk for run in autotrain.auto_train_tick()]


@shared_task(acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_GENERATION)
def execute_generation_run(run_id: int) -> str:
    return generation.execute_generation(run_id).status
