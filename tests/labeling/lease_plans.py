"""Reading the lease statement's EXPLAIN ANALYZE: run it for an annotator, find one CTE's subplan and an index scan."""

from __future__ import annotations

from django.db import connection

from labeling.models import MAX_ROLLOUTS_PER_TASK
from labeling.services import queue


def explain_lease(sql: str, *, annotator_id: int, prompt_set_id: int | None) -> str:
    """The plan of one run of `sql` (a lease statement of labeling.services.queue); ANALYZE runs it: a lease is
    taken. Fixed keys and a draw above any gold rate, so the plan does not depend on chance."""
    now = queue.clock.now()
    params = {
        "annotator": annotator_id,
        "prompt_set": prompt_set_id,
        "now": now,
        "until": now,
        "keys": [0.5] * MAX_ROLLOUTS_PER_TASK,
        "draw": 0.9,
    }
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def cte(plan: str, name: str) -> str:
    """The lines of one CTE's subplan (up to the next CTE)."""
    lines = plan.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"CTE {name}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("CTE ")), len(lines))
    return "\n".join(lines[start:end])


def index_scan(plan: str, index: str) -> str:
    """The first line of `plan` that scans `index`."""
    return next(line for line in plan.splitlines() if f"Index Scan using {index} " in line)
