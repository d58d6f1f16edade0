"""Labeling's own Celery tasks (found by `autodiscover_tasks`): thin shells over its services."""

from __future__ import annotations

from celery import shared_task

from labeling.services import progress


@shared_task(name="labeling.fold_progress")
def fold_progress() -> int:
    # The prompt-set progress rows the triggers append, folded to one per set so reading a set's counts stays cheap.
    return progress.fold_progress()
