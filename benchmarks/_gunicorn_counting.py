"""gunicorn config for the load benchmark: the shipped gunicorn.conf.py, plus hooks that count, in every worker,
the requests served and the database round trips they made.

Counted per worker process and written to $PREFLOOP_BENCH_COUNT_DIR/<pid>.json when the worker exits:
- statements: every `cursor.execute`/`executemany` of Django's (savepoints included);
- transactions: BEGIN, COMMIT and ROLLBACK (each a round trip with psycopg; Django does not log them outside
  DEBUG, so they are counted where Django marks them, `debug_transaction`);
- health checks: the `SELECT 1` Django sends through `is_usable()`.
The patches wrap Django's own methods in the worker only; the app's code is what ships.
"""

from __future__ import annotations

import json
import os
import runpy
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

globals().update(
    {
        k: v
        for k, v in runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")).items()
        if not k.startswith("__")
    }
)

_counts: Counter = Counter()
_lock = threading.Lock()


def _count(kind: str) -> None:
    with _lock:
        _counts[kind] += 1


def post_worker_init(worker) -> None:  # the app is loaded: wrap Django's database entry points
    from django.db.backends import utils
    from django.db.backends.base import base

    for name in ("execute", "executemany"):
        original = getattr(utils.CursorWrapper, name)

        def counted(self, *args, __original=original, **kwargs):
            _count("statements")
            return __original(self, *args, **kwargs)

        setattr(utils.CursorWrapper, name, counted)

    marker = base.debug_transaction

    @contextmanager
    def counted_transaction(connection, sql):
        _count("transactions")
        with marker(connection, sql):
            yield

    base.debug_transaction = counted_transaction
    from django.db import connections

    wrapper_class = type(connections["default"])
    original_is_usable = wrapper_class.is_usable

    def counted_is_usable(self):
        _count("health_checks")
        return original_is_usable(self)

    wrapper_class.is_usable = counted_is_usable


def post_request(worker, req, environ, resp) -> None:
    _count("requests")


def worker_exit(server, worker) -> None:
    folder = os.environ.get("PREFLOOP_BENCH_COUNT_DIR")
    if folder:
        with _lock:
            Path(folder, f"{os.getpid()}.json").write_text(json.dumps(dict(_counts)))
