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

Gold (known-answer) tasks are mixed in at each set's `gold_rate` by a random draw per lease, and an annotator whose
gold accuracy is below the set's threshold is refused there (`AnnotatorPaused`): labeling.services.gold says how,
and why a gold task's overlap never runs out.

In a set ordered by uncertainty (active learning, labeling.services.priorities), an annotator working in that set is
offered its scored tasks most uncertain first, after the started-first rule, before its unscored ones; a lease over
all sets keeps the order across sets that insertion order gives.

On Postgres a lease is one statement (`_LEASE_SQL`): it finds the annotator's held lease, picks, takes the
slot by the same conditional UPDATE, writes the assignment and returns it with its prompt and rollouts, so a
request makes one round trip instead of a dozen; a single statement is atomic without BEGIN/COMMIT, and the
constraints above stand behind it exactly as behind the step-by-step path, which SQLite (no data-modifying
CTEs) keeps.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F

from labeling.models import (
    MAX_ROLLOUTS_PER_TASK,
    Assignment,
    Prompt,
    PromptSet,
    Ranking,
    RankingTask,
    Rollout,
    TaskRollout,
)
from labeling.references import LEASE_REFERENCES_SQL, annotator_references_json
from labeling.services.errors import RankingRejected
from labeling.services.gold import GOLD_SCORE_SQL, paused_error, paused_set_ids
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


def _candidate_tasks(annotator: User, prompt_set_id: int | None, paused: list[int] | None = None):
    # NOT IN over the annotator's own task ids (a hashed subplan), not a correlated NOT EXISTS: on
    # fresh statistics Postgres picked a nested anti-join that re-scanned their history per task.
    # An expired lease does not count: the annotator may be handed that task again (re-leasing the row).
    theirs = Assignment.objects.filter(annotator=annotator).exclude(status=Assignment.Status.EXPIRED).values("task_id")
    tasks = RankingTask.objects.filter(
        status=RankingTask.Status.OPEN,
        active_count__lt=F("overlap"),
        prompt_set__is_paused=False,
    ).exclude(pk__in=theirs)
    if prompt_set_id is not None:
        tasks = tasks.filter(prompt_set_id=prompt_set_id)
    if paused:
        tasks = tasks.exclude(prompt_set_id__in=paused)
    # Most-started first, so datasets fill task by task rather than one ranking everywhere;
    # task_queue_idx has this order, so the scan stops at the first free task.
    return tasks.order_by("-active_count", "id")


def next_task_for(
    annotator: User, *, prompt_set: PromptSet | int | None = None, rng: random.Random | None = None
) -> Assignment | None:
    """Lease the next task to `annotator` (or return the live lease they already hold).

    `prompt_set` (a set or its id) limits the queue to that set. Returns None when nothing is left for
    them. The rollouts' display order is shuffled per assignment and stored, so the ranking can be read
    against what was actually shown. On Postgres the assignment comes with its task's prompt loaded and
    its rollouts in display order as `assignment.shown` (id and text), so a caller reads nothing more.
    """
    prompt_set_id = prompt_set.pk if isinstance(prompt_set, PromptSet) else prompt_set
    rng = rng or _RNG
    if connection.vendor == "postgresql":
        return _lease_in_one_statement(annotator, prompt_set_id, rng)
    return _lease_step_by_step(annotator, prompt_set_id, rng)


def _lease_step_by_step(annotator: User, prompt_set_id: int | None, rng: random.Random) -> Assignment | None:
    now = clock.now()
    held = _live_lease(annotator, now)
    if held is not None:
        if prompt_set_id is None or held.task.prompt_set_id == prompt_set_id:
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
                assignment, drained = _take_one_in_transaction(annotator, prompt_set_id, now, rng)
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


def _lease_in_one_statement(annotator: User, prompt_set_id: int | None, rng: random.Random) -> Assignment | None:
    """The Postgres path: one statement per attempt; extra round trips only on the rare paths.

    Those are: a held lease that is lapsed or in another set (handed back, then the statement runs again),
    expired leases of others (reaped after the statement, and before a retry when nothing was free), a race
    the constraints caught, a deadlock Postgres broke.
    """
    reaped = False
    for _ in range(_TAKE_ATTEMPTS):
        now = clock.now()
        try:
            lease = _take_one(annotator, prompt_set_id, now, rng)
        except IntegrityError:
            # The same annotator asking twice at once: the one-live-lease index refused the second
            # insert, and the whole statement (slot included) was undone. What they hold is the answer.
            held = _live_lease(annotator, clock.now())
            if held is not None:
                return held
            continue
        except OperationalError as error:
            if "deadlock" not in str(error).lower():
                raise
            continue  # Postgres broke a lock cycle by aborting us; nothing was written, try again
        if lease.expired_elsewhere and not reaped:
            # Others' abandoned leases go back to the pool here, in their own transaction (never while
            # holding a task row: see _lease_step_by_step); a queue that looked drained is asked again.
            release_expired_leases(now=now)
            reaped = True
            if lease.assignment is None and lease.held_id is None:
                continue
        if lease.assignment is not None:
            return lease.assignment
        if lease.held_id is not None:
            # Their lease is lapsed, or in another set: hand it back (as expired, so it can come back to them).
            release_assignment(annotator=annotator, assignment_id=lease.held_id, status=Assignment.Status.EXPIRED)
            continue
        if not lease.picked:
            if lease.paused:
                raise paused_error(annotator.pk, prompt_set_id)
            return None  # nothing free for them (or only tasks other requests are taking this instant)
    return None


def _expire_own_lapsed_lease(annotator: User, now: datetime) -> None:
    lapsed = (
        Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED, leased_until__lte=now)
        .values_list("id", flat=True)
        .first()
    )
    if lapsed is not None:
        release_assignment(annotator=annotator, assignment_id=lapsed, status=Assignment.Status.EXPIRED)


def _take_one_in_transaction(
    annotator: User, prompt_set_id: int | None, now: datetime, rng: random.Random
) -> tuple[Assignment | None, bool]:
    """One attempt inside a transaction: (assignment, queue_drained)."""
    paused = paused_set_ids(annotator.pk)
    tasks = _candidate_tasks(annotator, prompt_set_id, paused)
    draw = rng.random()
    # The same offers as the one statement's pick: gold below the rate, scored tasks of an uncertainty-ordered set
    # (most uncertain first; only when one set is asked for), ordinary, gold as the fallback.
    by_priority = tasks.filter(
        gold__isnull=True, uncertainty__isnull=False, prompt_set__ordering=PromptSet.Ordering.UNCERTAINTY
    ).order_by("-active_count", "-uncertainty", "id")
    offers = (
        tasks.filter(gold__isnull=False, prompt_set__gold_rate__gt=draw),
        *([by_priority] if prompt_set_id is not None else []),
        tasks.filter(gold__isnull=True),
        tasks.filter(gold__isnull=False, prompt_set__gold_rate__lte=draw, prompt_set__gold_rate__gt=0),
    )
    candidate = None
    for offer in offers:
        candidate = offer.select_for_update(skip_locked=True, of=("self",)).values_list("id", flat=True).first()
        if candidate is not None:
            break
    if candidate is None:
        if paused and (prompt_set_id is None or prompt_set_id in paused):
            raise paused_error(annotator.pk, prompt_set_id)
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


@dataclass(frozen=True)
class _Lease:
    """What one run of the lease statement found."""

    assignment: Assignment | None  # the new lease, or the live one they hold in this set
    held_id: int | None  # a lease they hold that is lapsed or in another set (assignment is then None)
    picked: bool  # a free task was found (False: nothing free for them)
    expired_elsewhere: bool  # some lease has lapsed and waits for the reaper
    paused: bool = False  # their gold accuracy pauses them in the set asked for (or in some set)


# One statement, in the order the step-by-step path runs (its comments give the reasons): the held lease;
# the pick (FOR UPDATE SKIP LOCKED, only when nothing is held); the slot, by the conditional UPDATE; the
# display order, shuffled by the caller's random keys; the assignment, re-leasing their expired row for that
# task (UNIQUE(task, annotator)) or inserting one; and the answer with the prompt and the rollouts in display
# order. An insert the constraints refuse (the same annotator asking twice at once) fails the whole statement,
# so no slot is taken without its assignment. The RETURNING chain (taken → relet/fresh) fixes the order of the
# writes; every sub-statement sees the snapshot from before the statement.
_LEASE_SQL = """
WITH held AS (
    SELECT a.id, a.task_id, a.display_order, a.leased_at, a.leased_until, t.prompt_set_id,
           a.leased_until > %(now)s AS live
    FROM {assignment} a JOIN {task} t ON t.id = a.task_id
    WHERE a.annotator_id = %(annotator)s AND a.status = 'leased'
),
paused AS (
    SELECT t.prompt_set_id
    FROM {prompt_set} s JOIN {task} t ON t.prompt_set_id = s.id JOIN {ranking} r ON r.task_id = t.id
    WHERE s.gold_threshold IS NOT NULL AND t.gold IS NOT NULL {in_set}
      AND r.annotator_id = %(annotator)s AND r.source = 'human'
    GROUP BY t.prompt_set_id, s.gold_threshold, s.gold_min_answers
    HAVING count(*) >= s.gold_min_answers AND avg({gold_score}) < s.gold_threshold
),
gold_first AS MATERIALIZED (
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE {eligible} AND t.gold IS NOT NULL AND %(draw)s < s.gold_rate
    ORDER BY t.active_count DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),
by_priority AS MATERIALIZED (
    -- Sets ordered by uncertainty (labeling.services.priorities): their scored tasks, most uncertain first after
    -- the started-first rule, by task_priority_queue_idx. Asked for one set, its ordering is read once up front
    -- (a one-time filter), so a set in insertion order never walks this index; `ordinary` below runs as it always has.
    -- Asked for any set, this offer is off: a set's priorities order its own queue, not the order across sets.
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE {eligible} AND t.gold IS NULL AND t.uncertainty IS NOT NULL AND s.ordering = 'uncertainty' {set_uncertain}
    ORDER BY t.active_count DESC, t.uncertainty DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),
{ordinary}
gold_last AS MATERIALIZED (
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE {eligible} AND t.gold IS NOT NULL AND %(draw)s >= s.gold_rate AND s.gold_rate > 0
    ORDER BY t.active_count DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),
picked AS MATERIALIZED (
    -- A CTE is run only as far as it is read: under LIMIT 1 the next offer runs (and locks) only when the one
    -- before it found nothing, so a lease locks one task row as before.
    SELECT id FROM gold_first UNION ALL SELECT id FROM by_priority UNION ALL SELECT id FROM ordinary
    UNION ALL SELECT id FROM gold_last
    LIMIT 1
),
taken AS (
    UPDATE {task} t SET active_count = t.active_count + 1
    FROM picked
    WHERE t.id = picked.id AND t.status = 'open' AND t.active_count < t.overlap
    RETURNING t.id
),
shown AS (
    SELECT coalesce(jsonb_agg(ranked.rollout_id ORDER BY (%(keys)s::float8[])[ranked.n], ranked.n), '[]') AS ids
    FROM (
        SELECT tr.rollout_id, row_number() OVER (ORDER BY tr.rollout_id) AS n
        FROM {task_rollout} tr JOIN taken ON tr.task_id = taken.id
    ) ranked
),
relet AS (
    UPDATE {assignment} a
    SET status = 'leased', display_order = shown.ids, leased_at = %(now)s, leased_until = %(until)s,
        finished_at = NULL
    FROM taken, shown
    WHERE a.task_id = taken.id AND a.annotator_id = %(annotator)s AND a.status = 'expired'
    RETURNING a.id, a.task_id, a.display_order, a.leased_at, a.leased_until
),
fresh AS (
    INSERT INTO {assignment} (task_id, annotator_id, status, display_order, leased_at, leased_until, finished_at)
    SELECT taken.id, %(annotator)s, 'leased', shown.ids, %(now)s, %(until)s, NULL
    FROM taken, shown
    WHERE NOT EXISTS (SELECT 1 FROM {assignment} a WHERE a.task_id = taken.id AND a.annotator_id = %(annotator)s)
    RETURNING id, task_id, display_order, leased_at, leased_until
),
lease AS (
    SELECT * FROM relet
    UNION ALL SELECT * FROM fresh
    UNION ALL SELECT id, task_id, display_order, leased_at, leased_until FROM held WHERE live {held_in_set}
)
SELECT lease.id, lease.task_id, lease.display_order::text, lease.leased_at, lease.leased_until,
       t.prompt_set_id, t.prompt_id, p.text, p.messages::text,
       (SELECT json_agg(json_build_object('id', r.id, 'text', r.text))
        FROM {task_rollout} tr JOIN {rollout} r ON r.id = tr.rollout_id
        WHERE tr.task_id = lease.task_id)::text AS rollouts,
       (SELECT id FROM held WHERE lease.id IS NULL) AS held_id,
       EXISTS (SELECT 1 FROM picked) AS picked,
       EXISTS (SELECT 1 FROM {assignment} WHERE status = 'leased' AND leased_until <= %(now)s) AS expired_elsewhere,
       EXISTS (SELECT 1 FROM paused) AS paused,
       {references} AS refs
FROM (SELECT 1) AS one
LEFT JOIN lease ON true
LEFT JOIN {task} t ON t.id = lease.task_id
LEFT JOIN {prompt} p ON p.id = t.prompt_id
"""


# The ordinary offer asked for one set: its task_queue_idx walked to the first free task.
_ORDINARY_IN_SET = """ordinary AS MATERIALIZED (
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE {eligible} AND t.gold IS NULL
    ORDER BY t.active_count DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),"""

# The ordinary offer asked for any set. No index serves the order across sets (every task index leads with the set),
# so one sort over all sets reads every open task (385 ms at a million, quiet). Instead each set's first free task
# is found by walking that set's task_queue_idx (one short probe per set, no locks), and the set whose first task
# comes first in the order across sets is picked from as a lease in that set would be: the same task a sort over
# every set would give. A second offer, the sort over all sets, runs only if other leases hold every free task of
# that set this instant, so a busy set never makes the queue look empty.
_ORDINARY_ANY_SET = """first_set AS MATERIALIZED (
    SELECT s.id FROM {prompt_set} s CROSS JOIN LATERAL (
        SELECT t.active_count, t.id FROM {task} t
        WHERE t.prompt_set_id = s.id AND {eligible} AND t.gold IS NULL
        ORDER BY t.active_count DESC, t.id
        LIMIT 1
    ) first_free
    ORDER BY first_free.active_count DESC, first_free.id
    LIMIT 1
),
in_first_set AS MATERIALIZED (
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE t.prompt_set_id = (SELECT id FROM first_set) AND {eligible} AND t.gold IS NULL
    ORDER BY t.active_count DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),
in_any_set AS MATERIALIZED (
    SELECT t.id FROM {task} t JOIN {prompt_set} s ON s.id = t.prompt_set_id
    WHERE EXISTS (SELECT 1 FROM first_set) AND {eligible} AND t.gold IS NULL
    ORDER BY t.active_count DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
),
ordinary AS MATERIALIZED (
    SELECT id FROM in_first_set UNION ALL SELECT id FROM in_any_set
    LIMIT 1
),"""


# What makes a task free for the annotator, in each branch of the pick.
_ELIGIBLE = """NOT EXISTS (SELECT 1 FROM held)
           AND t.status = 'open' AND t.active_count < t.overlap AND NOT s.is_paused {in_set}
           AND t.prompt_set_id NOT IN (SELECT prompt_set_id FROM paused)
           AND t.id NOT IN (
               SELECT task_id FROM {assignment} WHERE annotator_id = %(annotator)s AND status <> 'expired'
           )"""


def _lease_sql(*, in_set: bool) -> str:
    # Two texts rather than `(%(set)s IS NULL OR ...)`, so the planner sees a plain equality on the index.
    ordinary = _ORDINARY_IN_SET if in_set else _ORDINARY_ANY_SET
    return (
        _LEASE_SQL.replace("{ordinary}", ordinary)
        .replace("{eligible}", _ELIGIBLE)
        .format(
            ranking=Ranking._meta.db_table,
            gold_score=GOLD_SCORE_SQL.format(tiers="r.tiers", gold="t.gold"),
            assignment=Assignment._meta.db_table,
            task=RankingTask._meta.db_table,
            prompt_set=PromptSet._meta.db_table,
            task_rollout=TaskRollout._meta.db_table,
            rollout=Rollout._meta.db_table,
            prompt=Prompt._meta.db_table,
            references=LEASE_REFERENCES_SQL.format(prompt_set=PromptSet._meta.db_table),
            in_set="AND t.prompt_set_id = %(prompt_set)s" if in_set else "",
            held_in_set="AND prompt_set_id = %(prompt_set)s" if in_set else "",
            set_uncertain=(
                f"AND (SELECT ordering FROM {PromptSet._meta.db_table} WHERE id = %(prompt_set)s) = 'uncertainty'"
                if in_set
                else "AND false"
            ),
        )
    )


_LEASE_SQL_ANY_SET, _LEASE_SQL_IN_SET = _lease_sql(in_set=False), _lease_sql(in_set=True)


def _take_one(annotator: User, prompt_set_id: int | None, now: datetime, rng: random.Random) -> _Lease:
    """One run of the lease statement (Postgres)."""
    params = {
        "annotator": annotator.pk,
        "prompt_set": prompt_set_id,
        "now": now,
        "until": now + lease_duration(),
        # One random sort key per rollout position: the task's rollouts, by id, are shown in key order.
        "keys": [rng.random() for _ in range(MAX_ROLLOUTS_PER_TASK)],
        # Below the set's gold_rate the pick offers a gold task first (labeling.services.gold).
        "draw": rng.random(),
    }
    sql = _LEASE_SQL_ANY_SET if prompt_set_id is None else _LEASE_SQL_IN_SET
    # A savepoint only inside a caller's transaction (the statement's failure must not abort theirs);
    # alone, the statement is its own transaction and needs no BEGIN/COMMIT round trips.
    with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    (
        pk,
        task_id,
        order,
        leased_at,
        until,
        set_id,
        prompt_id,
        text,
        messages,
        rollouts,
        held_id,
        picked,
        expired,
        paused,
        references,
    ) = row
    if pk is None:
        return _Lease(None, held_id, picked, expired, paused)
    # JSON comes back as text (cast in the statement), whatever loaders the connection has registered.
    assignment = Assignment.from_db(
        connection.alias,
        ["id", "task_id", "annotator_id", "status", "display_order", "leased_at", "leased_until", "finished_at"],
        [pk, task_id, annotator.pk, Assignment.Status.LEASED, json.loads(order), leased_at, until, None],
    )
    # Partial instances: the columns read here are set, any other is loaded on access (deferred), never guessed.
    task = RankingTask.from_db(connection.alias, ["id", "prompt_set_id", "prompt_id"], [task_id, set_id, prompt_id])
    task.prompt = Prompt.from_db(
        connection.alias,
        ["id", "text", "messages"],
        [prompt_id, text, None if messages is None else json.loads(messages)],
    )
    assignment.task = task
    assignment.annotator = annotator
    # Read by the API's answer (labeling.api.serializers), as `shown` below; not a model field.
    assignment.references = annotator_references_json(references)  # type: ignore[attr-defined]
    # Read by the API's answer (labeling.api.serializers); not a model field.
    # The task's rollouts come by the task's index (the planner misjudged a join on the display order's ids as
    # ~100 rows and scanned the whole rollout table); they are put in display order here.
    text_of = {r["id"]: r["text"] for r in json.loads(rollouts or "[]")}
    assignment.shown = [  # type: ignore[attr-defined]
        Rollout.from_db(connection.alias, ["id", "text"], [rid, text_of[rid]]) for rid in assignment.display_order
    ]
    return _Lease(assignment, None, picked, expired, paused)


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
