"""Disagreement handling: one more annotator for a task whose rankings disagree, then an admin's adjudication.

A prompt set with a `disagreement_threshold` has each task checked in the submit that completes it (the one that
brings `completed_count` to `overlap`): the pairwise agreement of its human rankings
(`labeling.services.agreement`, the same scoring as the agreement report) below the threshold opens the task to
one more annotator, up to the set's `max_overlap`; still below it at that cap, the task is flagged for
adjudication, where an admin records the final order.

Invariants, and what keeps each:
- a task's overlap never exceeds its set's cap: it is raised only by
  `UPDATE … SET overlap = overlap + 1, status = 'open' WHERE overlap < cap`, run in the submit's transaction,
  which already holds the task's row lock from the counting UPDATE, so concurrent submits raise it one at a time
  and each sees the one before;
- raising the overlap only adds a free slot: the queue's conditional UPDATE (`active_count < overlap`), the
  CHECK `active_count <= overlap`, the SKIP LOCKED pick and UNIQUE(task, annotator) hand it out as any other,
  so the extra ranking comes from someone who has not ranked the task;
- an adjudicated task (labeling.services.adjudication) is never reopened or flagged again.
Gold tasks (known answers) and judge rankings take no part: gold checks annotators, a judge takes no slot.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from django.db.models import F

from labeling.models import Ranking, RankingTask
from labeling.services.agreement import RankingRecord, agreement


class Outcome(enum.Enum):
    """What the check did with a task."""

    NOT_CHECKED = "not checked"  # not complete yet, a gold task, already adjudicated, or the set has no threshold
    AGREED = "agreed"  # agreement at or above the threshold (or fewer than two ordered rankings to compare)
    REOPENED = "reopened"  # one more annotator asked for
    ADJUDICATION = "adjudication"  # disagreeing at the cap: flagged for an admin


def task_agreement(records: Sequence[RankingRecord]) -> float | None:
    """Pairwise agreement of one task's rankings (0–1); None when fewer than two of them give an order."""
    return agreement(records, samples=0, annotator_ids=()).pairwise.value


def settle_disagreement(*, task_id: int, threshold: float | None) -> Outcome:
    """Check a task just counted by a submit, inside that submit's transaction (it holds the task's row lock).

    `threshold` is the task's set's (None: the set checks nothing, and nothing is read). One query reads the task's
    human rankings and its set's cap if the task is now complete (and not gold, not adjudicated); one UPDATE
    records the outcome.
    """
    if threshold is None:
        return Outcome.NOT_CHECKED
    rows = list(
        Ranking.objects.filter(
            task_id=task_id,
            source=Ranking.Source.HUMAN,
            task__status=RankingTask.Status.DONE,
            task__gold__isnull=True,
            task__adjudication__isnull=True,
        ).values_list(
            "task__prompt_id", "task__overlap", "task__prompt_set__max_overlap", "annotator_id", "tiers", "all_bad"
        )
    )
    if not rows:
        return Outcome.NOT_CHECKED
    value = task_agreement(
        [RankingRecord(task_id, prompt, annotator, tiers, all_bad) for prompt, _, _, annotator, tiers, all_bad in rows]
    )
    task = RankingTask.objects.filter(pk=task_id)
    if value is None or value >= threshold:
        task.update(agreement=value)
        return Outcome.AGREED
    _, overlap, cap = rows[0][:3]  # the overlap read under the row lock: current
    # The cap is the set's max overlap; without one, no extra annotator. The conditional UPDATE is what keeps the
    # cap (the read above only spares a second UPDATE in the common case).
    if (
        cap is not None
        and overlap < cap
        and task.filter(status=RankingTask.Status.DONE, overlap__lt=cap).update(
            overlap=F("overlap") + 1, status=RankingTask.Status.OPEN, agreement=value
        )
    ):
        return Outcome.REOPENED
    task.update(needs_adjudication=True, agreement=value)
    return Outcome.ADJUDICATION
