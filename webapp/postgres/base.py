"""Django's PostgreSQL backend, with the connection health check skipped while the connection is in steady use.

With CONN_HEALTH_CHECKS, Django sends `SELECT 1` before the first query of every request on a persistent
connection: one extra round trip per request, a third of a ranking cycle's queries once the rest were cut. The
check exists for a connection that went stale while idle (the server restarted, a proxy dropped it): after that
the request would fail instead of reconnecting. A connection that carried a query less than
DB_HEALTH_CHECK_IDLE_SECONDS ago is not stale in that sense, so it is not checked; one idle for longer is, as
before. A server that dies in between fails that request, exactly as a server that dies during a request always
did, and Django drops the broken connection when the request ends.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    _last_used: float = float("-inf")

    def create_cursor(self, name: Any = None) -> Any:
        # Every query of Django's starts here; stamping the time costs a clock read.
        self._last_used = time.monotonic()
        return super().create_cursor(name)

    def close_if_health_check_failed(self) -> None:
        idle = time.monotonic() - self._last_used
        if self.connection is not None and idle < settings.DB_HEALTH_CHECK_IDLE_SECONDS:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
