"""Celery tasks: thin shells that load ids and call the services."""

from __future__ import annotations

from celery import shared_task

from training.services import runs


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="training.execute_run")
def execute_training_run(self, run_id: int) -> str:
    run = runs.execute_run(run_id, device_label=self.request.hostname or "")
    return run.status


@shared_task(name="training.reap_stale_runs")
def reap_stale_runs() -> int:
    return runs.reap_stale_runs()


@shared_task(name="training.auto_train")
def auto_train() -> list[int]:
    from training.services.autotrain import auto_train_tick

    return [run.pk for run in auto_train_tick()]


@shared_task(acks_late=True, reject_on_worker_lost=True, name="training.execute_generation")
def execute_generation_run(run_id: int) -> str:
    from training.services.generation import execute_generation

    return execute_generation(run_id).status
