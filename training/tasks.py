"""Celery tasks: thin shells that load ids and call the services.

Imports run one way: tasks import services; services send work here by task name through
`training.services.dispatch` and never import this module. The names below are that contract.
"""

from __future__ import annotations

from celery import shared_task

from labeling.services.priorities import REFRESH_PRIORITIES_TASK
from training.services import autotrain, base_models, dispatch, export_worker, generation, runs


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_RUN)
def execute_training_run(self, run_id: int) -> str:
    run = runs.execute_run(run_id, device_label=self.request.hostname or "")
    return run.status


@shared_task(name="training.reap_stale_runs")
def reap_stale_runs() -> int:
    return runs.reap_stale_runs() + export_worker.reap_stale_exports() + base_models.reap_stale_imports()


@shared_task(acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_EXPORT)
def execute_export(export_id: int) -> str:
    return export_worker.execute_export(export_id).status


@shared_task(name="training.auto_train")
def auto_train() -> list[int]:
    return [export.pk for export in autotrain.auto_train_tick()]  # queued exports; each queues its run


@shared_task(acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_GENERATION)
def execute_generation_run(run_id: int) -> str:
    return generation.execute_generation(run_id).status


@shared_task(acks_late=True, reject_on_worker_lost=True, name="training.execute_auto_rank")
def execute_auto_rank(job_id: int) -> str:
    from training.services import judging  # imported here: scoring code loads only in workers that run a job

    return judging.execute_auto_rank(job_id).status


@shared_task(acks_late=True, reject_on_worker_lost=True, name="training.execute_audit")
def execute_audit(audit_id: int) -> str:
    from training.services import audits  # imported here: its judges' scoring loads only in workers that run one

    return audits.execute_audit(audit_id).status


@shared_task(acks_late=True, reject_on_worker_lost=True, name=REFRESH_PRIORITIES_TASK)
def refresh_priorities(prompt_set_id: int) -> int:
    from training.services import active_learning  # imported here: scoring code loads only in workers that score

    return active_learning.refresh_priorities(prompt_set_id).written


@shared_task(name="training.refresh_due_priorities")
def refresh_due_priorities() -> list[int]:
    from training.services import active_learning

    return active_learning.refresh_due_priorities()  # queues one refresh_priorities per set that is due


@shared_task(acks_late=True, reject_on_worker_lost=True, name=dispatch.EXECUTE_BASE_MODEL_IMPORT)
def execute_base_model_import(import_id: int) -> str:
    return base_models.execute_gguf_import(import_id).status
