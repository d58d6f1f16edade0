"""The one clock the services read, so a test that moves time patches one place.

Callers write `from webapp import clock` and call `clock.now()` (an attribute lookup at call time), so
`monkeypatch.setattr(clock, "now", ...)` reaches every one of them; `from webapp.clock import now` would
bind the real function and escape the patch.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return timezone.now()
