"""Prompt-set progress counts at any size: the trigger-kept rows of labeling.models.PromptSetProgress.

Invariant: for every set, the sums of its PromptSetProgress rows equal its tasks, done tasks, open tasks with a slot
taken, open tasks with every slot taken and human rankings. Triggers (migration 0010_scale_indexes) append a row in
the same transaction as every statement that changes one of them, so the sums hold whichever code path wrote —
PostgreSQL only; SQLite databases are small and count (labeling.selectors). `fold_progress` keeps the rows few: it
replaces them by one row per set, in one statement, which leaves the sums unchanged (rows appended meanwhile are
not in its snapshot and stay as they are).
"""

from __future__ import annotations

from django.db import connection

from labeling.models import PromptSetProgress

_FOLD_SQL = """
WITH folded AS (DELETE FROM {table} RETURNING prompt_set_id, tasks, done, in_progress, "full", rankings)
INSERT INTO {table} (prompt_set_id, tasks, done, in_progress, "full", rankings)
SELECT prompt_set_id, sum(tasks), sum(done), sum(in_progress), sum("full"), sum(rankings)
FROM folded GROUP BY prompt_set_id
-- A deleted set's rows sum to zero: it leaves no row (a set without tasks or rankings reads as zeros anyway).
HAVING sum(tasks) <> 0 OR sum(done) <> 0 OR sum(in_progress) <> 0 OR sum("full") <> 0 OR sum(rankings) <> 0
"""


def progress_counts_are_kept() -> bool:
    """Whether this database keeps the counts (PostgreSQL, by triggers); otherwise they are counted."""
    return connection.vendor == "postgresql"


def fold_progress() -> int:
    """Fold the progress rows into one per set; returns the rows left (one per set). Run periodically (beat)."""
    if not progress_counts_are_kept():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_FOLD_SQL.format(table=PromptSetProgress._meta.db_table))
        return cursor.rowcount
