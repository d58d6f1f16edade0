"""The ranking queue: hand out tasks, expire abandoned leases, skip.

Correctness is enforced by the database, not by Python checks:
- a slot is taken by `UPDATE task SET active_count = active_count + 1 WHERE active_count < overlap`,
  a conditional update that two transactions cannot both win for the last slot (row lock on
  Postgres; a single writer on SQLite, whose transactions BEGIN IMMEDIATE), and a CHECK
  constraint (`active_count <= overlap`) stands behind it;
- UNIQUE(task, annotator) means an annotator is never handed a task twice;
- a partial UNIQUE(annotator) WHERE status='leased' means one live lease per annotator.
On Postgres the candidate row is picked `FOR UPDATE SKIP LOCKED`, so concurrent annotators spread
over different tasks instead of queueing on one row.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F

from labeling.models import Assignment, PromptSet, RankingTask, TaskRollout
from labeling.services.errors import RankingRejected
from webapp import clock

if TYPE_CHECKING:
    # AUTH_USER_MODEL is Django's own User; named here for the type checker only.
    from django.contrib.auth.models import User

# A candidate can be lost to a concurrent annotator between pick and take (SQLite has no SKIP
# LOCKED); a few retries make that invisible without looping forever on a drained queue.
_TAKE_ATTEMPTS = 5
# Expired leases are released in batches so one request never does unbounded work.
_REAP_BATCH = 500
# Display orders are shuffled with this unless a caller passes its own (tests pass a seeded one).
_RNG = random.Random()


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.PREFLOOP_LEASE_SECONDS)


def release_expired_leases(*, now: datetime | None = None) -> int:
    """Return abandoned leases to the pool; returns how many were released.

    The read runs outside a transaction so the common case (nothing expired) takes no write lock,
    which matters on SQLite where every write transaction is exclusive.
    """
    now = now or clock.now()
    if not Assignment.objects.filter(status=Assignment.Status.LEASED, leased_until__lte=now).exists():
        return 0
    with transaction.atomic():
        expired = list(
            Assignment.objects.select_for_update(skip_locked=True)
            .filter(status=Assignment.Status.LEASED, leased_until__lte=now)
            .values_list("id", "task_id")[:_REAP_BATCH]
        )
        if not expired:
            return 0
        Assignment.objects.filter(id__in=[a for a, _ in expired]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        _free_slots(Counter(task_id for _, task_id in expired))
    return len(expired)


def _free_slots(slots_by_task: Counter[int]) -> None:
    # Ascending task ids: two transactions freeing slots lock rows in the same order (no deadlock).
    for task_id in sorted(slots_by_task):
        RankingTask.objects.filter(pk=task_id).update(active_count=F("active_count") - slots_by_task[task_id])


def _live_lease(annotator: User, now: datetime) -> Assignment | None:
    return (
        Assignment.objects.select_related("task")
        .filter(annotator=annotator, status=Assignment.Status.LEASED, leased_until__gt=now)
        .first()
    )


def _candidate_tasks(annotator: User, prompt_set: PromptSet | None):
    # NOT IN over the annotator's own task ids (a hashed subplan), not a correlated NOT EXISTS: on
    # fresh statistics Postgres picked a nested anti-join that re-scanned their history per task.
    # An expired lease does not count: the annotator may be handed that task again (re-leasing the row).
    theirs = Assignment.objects.filter(annotator=annotator).exclude(status=Assignment.Status.EXPIRED).values("task_id")
    tasks = RankingTask.objects.filter(
        status=RankingTask.Status.OPEN,
        active_count__lt=F("overlap"),
        prompt_set__is_paused=False,
    ).exclude(pk__in=theirs)
    if prompt_set is not None:
        tasks = tasks.filter(prompt_set=prompt_set)
    # Most-started first, so datasets fill task by task rather than one ranking everywhere;
    # task_queue_idx has this order, so the scan stops at the first free task.
    return tasks.order_by("-active_count", "id")


def next_task_for(
    annotator: User, *, prompt_set: PromptSet | None = None, rng: random.Random | None = None
) -> Assignment | None:
    """Lease the next task to `annotator` (or return the live lease they already hold).

    Returns None when nothing is left for them. The rollouts' display order is shuffled per
    assignment and stored, so the ranking can be read against what was actually shown.
    """
    now = clock.now()
    held = _live_lease(annotator, now)
    if held is not None:
        if prompt_set is None or held.task.prompt_set_id == prompt_set.pk:
            return held
        # Moving to another set hands the task back; being expired, it can come back to them later.
        release_assignment(annotator=annotator, assignment_id=held.pk, status=Assignment.Status.EXPIRED)
    # Their own lapsed lease first, in its own short transaction: the pick below must never wait on
    # a row another request's reaper holds (that wait, crossed with the reaper's wait on our task
    # row, is a deadlock on Postgres).
    _expire_own_lapsed_lease(annotator, now)
    release_expired_leases(now=now)

    for _ in range(_TAKE_ATTEMPTS):
        try:
            with transaction.atomic():
                assignment, drained = _take_one(annotator, prompt_set, now, rng or _RNG)
        except IntegrityError:
            # Lost a race the constraints caught (e.g. the same annotator asking twice at once):
            # what they hold now is the answer.
            held = _live_lease(annotator, clock.now())
            if held is not None:
                return held
            continue
        except OperationalError as error:
            if "deadlock" not in str(error).lower():
                raise
            continue  # Postgres broke a lock cycle by aborting us; nothing was written, try again
        if assignment is not None or drained:
            return assignment
    return None


def _expire_own_lapsed_lease(annotator: User, now: datetime) -> None:
    lapsed = (
        Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED, leased_until__lte=now)
        .values_list("id", flat=True)
        .first()
    )
    if lapsed is not None:
        release_assignment(annotator=annotator, assignment_id=lapsed, status=Assignment.Status.EXPIRED)


def _take_one(
    annotator: User, prompt_set: PromptSet | None, now: datetime, rng: random.Random
) -> tuple[Assignment | None, bool]:
    """One attempt inside a transaction: (assignment, queue_drained)."""
    candidate = (
        _candidate_tasks(annotator, prompt_set)
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("id", flat=True)
        .first()
    )
    if candidate is None:
        return None, True
    taken = RankingTask.objects.filter(
        pk=candidate, status=RankingTask.Status.OPEN, active_count__lt=F("overlap")
    ).update(active_count=F("active_count") + 1)
    if not taken:
        return None, False
    rollout_ids = list(TaskRollout.objects.filter(task_id=candidate).values_list("rollout_id", flat=True))
    rng.shuffle(rollout_ids)
    lease = {
        "display_order": rollout_ids,
        "leased_at": now,
        "leased_until": now + lease_duration(),
        "finished_at": None,
    }
    # UNIQUE(task, annotator): a task whose earlier lease lapsed is re-leased on the same row.
    if Assignment.objects.filter(task_id=candidate, annotator=annotator, status=Assignment.Status.EXPIRED).update(
        status=Assignment.Status.LEASED, **lease
    ):
        return Assignment.objects.get(task_id=candidate, annotator=annotator), False
    return Assignment.objects.create(task_id=candidate, annotator=annotator, **lease), False


def release_assignment(*, annotator: User, assignment_id: int, status: str = Assignment.Status.SKIPPED) -> Assignment:
    """End a live lease without a ranking (skip, or hand back); the slot returns to the pool.

    Idempotent: releasing an assignment that is no longer leased changes nothing.
    """
    with transaction.atomic():
        assignment = Assignment.objects.select_for_update().filter(pk=assignment_id).first()
        if assignment is None or assignment.annotator_id != annotator.pk:
            raise RankingRejected(f"Assignment {assignment_id} is not leased to you.", code="not_your_assignment")
        if assignment.status != Assignment.Status.LEASED:
            return assignment
        assignment.status = status
        assignment.finished_at = clock.now()
        assignment.save(update_fields=["status", "finished_at"])
        _free_slots(Counter({assignment.task_id: 1}))
    return assignment


def skip_assignment(*, annotator: User, assignment_id: int) -> Assignment:
    """The annotator passes on this task: they will not see it again; someone else may."""
    return release_assignment(annotator=annotator, assignment_id=assignment_id, status=Assignment.Status.SKIPPED)
