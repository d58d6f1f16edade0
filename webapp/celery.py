"""The Celery app. Broker, backend and transport options come from Django settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _torch_threads_in_pool_process(**_: object) -> None:
    """Each prefork child sets torch's threads for itself (a setting inherited over fork would not hold)."""
    from webapp.worker_threads import apply_torch_threads

    apply_torch_threads()


@worker_init.connect
def _torch_threads_in_solo_worker(sender: object = None, **_: object) -> None:
    """A solo or threads pool runs tasks in the worker process itself, which sends no worker_process_init."""
    pool = getattr(sender, "pool_cls", None)
    if "prefork" in f"{getattr(pool, '__module__', '')}{pool}":
        return  # the children set their own; torch stays out of the parent that forks them
    from webapp.worker_threads import apply_torch_threads

    apply_torch_threads()
