"""The Celery app. Broker and backend come from Django settings (CELERY_* names)."""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("prefloop")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _filesystem_transport_options() -> dict:
    """kombu's filesystem broker needs its folders to exist before the first message."""
    from django.conf import settings

    root = settings.CELERY_BROKER_FOLDER
    folders = {name: root / name for name in ("in", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folders["in"]),
        "data_folder_out": str(folders["in"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }


@app.on_configure.connect
def _configure_broker(sender: Celery, **_: object) -> None:
    if str(sender.conf.broker_url).startswith("filesystem://"):
        sender.conf.broker_transport_options = _filesystem_transport_options()


app.autodiscover_tasks()
