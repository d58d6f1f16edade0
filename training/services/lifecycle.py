"""What every kind of run shares, below the services that start and execute them.

Training runs (`runs`), generation runs (`generation`) and export jobs refuse bad requests with
`RunRejected` and beat from a `Heartbeat` thread so the reaper can tell a live worker from a dead one.
These live here, not in `runs`, so that `generation` need not import `runs` (which calls `refresh`, which
starts generations): the imports run one way.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, models

from webapp import clock

log = logging.getLogger(__name__)


class RunRejected(ValueError):
    """A run request refused before it is queued (bad config, missing model, empty dataset)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Heartbeat(threading.Thread):
    """Beats from a thread, so a long step (or a slow load) never looks like a dead worker."""

    def __init__(self, model: type[models.Model], row_id: int, every: float | None = None) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{model.__name__}-{row_id}")
        self.model, self.row_id = model, row_id
        self.every = every or max(1.0, settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT / 4)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.model._default_manager.filter(pk=self.row_id, status="running").update(heartbeat_at=clock.now())
            except Exception:
                log.exception("heartbeat for %s %s failed", self.model.__name__, self.row_id)
            finally:
                close_old_connections()

    def stop(self) -> None:
        self.stopped.set()
