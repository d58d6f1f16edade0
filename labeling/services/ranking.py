"""Submitting a ranking: validated against what was shown, idempotent per assignment."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When

from labeling.models import RATIONALE_MAX_CHARS, Assignment, PromptSet, Ranking, RankingTask
from labeling.services.disagreement import settle_disagreement
from labeling.services.errors import RankingRejected
from webapp import clock

if TYPE_CHECKING:
    # AUTH_USER_MODEL is Django's own User; named here for the type checker only.
    from django.contrib.auth.models import User

FLAG_REASONS = frozenset(Ranking.FlagReason.values)
# Longer than any real task; a client reporting more is clamped, not rejected.
_MAX_TIME_SPENT_MS = 24 * 3600 * 1000
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class SubmitResult:
    ranking: Ranking
    created: bool  # False when this was a retry of an earlier submit


def normalize_tiers(tiers: Sequence[Sequence[int] | int], shown: Sequence[int]) -> list[list[int]]:
    """Check `tiers` (best → worst; each a list of tied ids, or one bare id) ranks every shown rollout exactly once.

    Linear in the size of the ranking, and a ranking longer than what was shown is refused from its
    length alone, before any id is looked at: this runs in the request, under the assignment's row
    lock, and a client may post tens of thousands of ids (a quadratic check took 28 s for 30,000).
    """
    if len(tiers) > len(shown):
        raise _longer_than_shown(f"{len(tiers):,} places", shown)
    n_ids = sum(len(tier) if isinstance(tier, (list, tuple)) else 1 for tier in tiers)
    if n_ids > len(shown):
        raise _longer_than_shown(f"{n_ids:,} rollout ids", shown)
    shown_set = set(shown)
    flat: list[object] = []
    for tier in tiers:
        if not isinstance(tier, (list, tuple)):
            flat.append(tier)
        elif tier:
            flat.extend(tier)
        else:
            raise RankingRejected("Each tier must be a non-empty list of rollout ids.", code="malformed_ranking")
    if not all(isinstance(rid, int) and not isinstance(rid, bool) for rid in flat):
        raise RankingRejected("Rollout ids must be integers.", code="malformed_ranking")
    problems = []
    counts = Counter(cast("list[int]", flat))  # every item was checked just above
    unexpected = sorted(counts.keys() - shown_set)
    missing = sorted(shown_set - counts.keys())
    repeated = sorted(rid for rid, n in counts.items() if n > 1)
    if unexpected:
        problems.append(f"not shown in this task: {unexpected}")
    if missing:
        problems.append(f"missing: {missing}")
    if repeated:
        problems.append(f"ranked more than once: {repeated}")
    if problems:
        raise RankingRejected(
            f"The ranking must be a permutation of the shown rollouts {sorted(shown_set)}; "
            + "; ".join(problems)
            + ".",
            code="not_a_permutation",
        )
    return [[tier] if isinstance(tier, int) else list(tier) for tier in tiers]


def _longer_than_shown(size: str, shown: Sequence[int]) -> RankingRejected:
    return RankingRejected(
        f"The ranking has {size} but this task shows {len(shown)} rollouts: rank each shown rollout exactly once.",
        code="not_a_permutation",
    )


def _normalize_flags(flags: Mapping, shown: Sequence[int]) -> dict[str, str]:
    if len(flags) > len(shown):  # like the ranking: refused from its size before any key is read
        raise RankingRejected(
            f"{len(flags):,} flags but this task shows {len(shown)} rollouts; flag each at most once.", code="bad_flag"
        )
    clean: dict[str, str] = {}
    for raw_id, reason in (flags or {}).items():
        try:
            rollout_id = int(raw_id)
        except (TypeError, ValueError):
            raise RankingRejected(f"Flag key {raw_id!r} is not a rollout id.", code="bad_flag") from None
        if rollout_id not in shown:
            raise RankingRejected(f"Cannot flag rollout {rollout_id}: it was not shown in this task.", code="bad_flag")
        if not isinstance(reason, str) or reason not in FLAG_REASONS:
            raise RankingRejected(
                f"Flag reason {reason!r} for rollout {rollout_id} is not one of {sorted(FLAG_REASONS)}.",
                code="bad_flag",
            )
        clean[str(rollout_id)] = reason
    return clean


def submit_ranking(
    *,
    annotator: User,
    assignment_id: int,
    tiers: Sequence[Sequence[int]],
    all_bad: bool = False,
    flags: Mapping | None = None,
    time_spent_ms: int | None = None,
    rationale: str = "",
) -> SubmitResult:
    """Store the annotator's ranking for their leased assignment.

    A retry of a submit that already succeeded returns the first ranking unchanged (created=False),
    whatever the retry carries: the assignment is the idempotency key, guarded by a UNIQUE constraint.
    `tiers` may be empty only when `all_bad` is set (the annotator found nothing worth ordering).
    `rationale` is the annotator's optional reason, stored as typed (trimmed), at most RATIONALE_MAX_CHARS.
    """
    try:
        if connection.vendor == "postgresql":
            stored = _submit_in_one_statement(annotator, assignment_id, tiers, all_bad, flags, time_spent_ms, rationale)
            if stored is not None:
                return stored
        # SQLite; or on Postgres a lease that is not live any more, or changed between the read and the write
        # (a concurrent retry won, it lapsed): decided under the assignment's row lock.
        with transaction.atomic():
            return _submit(annotator, assignment_id, tiers, all_bad, flags, time_spent_ms, rationale)
    except IntegrityError:
        # A concurrent retry won the insert between our check and our write.
        existing = Ranking.objects.filter(assignment_id=assignment_id, annotator=annotator).first()
        if existing is None:
            raise
        return SubmitResult(existing, created=False)


def _clean_rationale(rationale: object) -> str:
    if not isinstance(rationale, str):
        raise RankingRejected("The rationale must be text.", code="bad_rationale")
    rationale = rationale.strip()
    if len(rationale) > RATIONALE_MAX_CHARS:
        raise RankingRejected(
            f"The rationale is {len(rationale):,} characters; keep it to {RATIONALE_MAX_CHARS:,}.",
            code="rationale_too_long",
        )
    if _UNSTORABLE.search(rationale):  # a form may post %00; neither it nor a lone surrogate can be stored
        raise RankingRejected("The rationale contains a NUL character or a lone surrogate.", code="bad_rationale")
    return rationale


# The write half of a submit on Postgres, as one statement (atomic without BEGIN/COMMIT): the assignment moves
# from leased to submitted only if it is still the very lease that was read and checked (same annotator, still
# leased and live, same leased_at: a lapsed lease re-leased to them has a new display order); only then is the
# ranking inserted and the task counted. A concurrent retry waits on the assignment's row lock, then finds it
# submitted and writes nothing; UNIQUE(assignment) and UNIQUE(task, annotator) stand behind it.
_SUBMIT_SQL = """
WITH done AS (
    UPDATE {assignment} SET status = 'submitted', finished_at = %s
    WHERE id = %s AND annotator_id = %s AND status = 'leased' AND leased_until > %s AND leased_at = %s
    RETURNING task_id
),
counted AS (
    UPDATE {task} t
    SET completed_count = t.completed_count + 1,
        status = CASE WHEN t.completed_count >= t.overlap - 1 THEN 'done' ELSE t.status END
    FROM done WHERE t.id = done.task_id
)
INSERT INTO {ranking} ({columns}) SELECT {values} FROM done RETURNING id
"""


def _submit_in_one_statement(
    annotator, assignment_id, tiers, all_bad, flags, time_spent_ms, rationale
) -> SubmitResult | None:
    """Postgres: read the assignment, check the ranking against it, write in one statement (two round trips).

    None when the lease is not plainly live (submitted, skipped, lapsed) or changed before the write: the
    locked path then gives the answer (the first ranking, or the refusal) exactly as before.
    """
    now = clock.now()
    read = _read_assignment(assignment_id)
    if read is None:
        raise RankingRejected(f"Unknown task assignment {assignment_id}.", code="unknown_assignment")
    assignment, threshold = read
    if assignment.annotator_id != annotator.pk:
        raise RankingRejected(f"Assignment {assignment_id} is not leased to you.", code="not_your_assignment")
    if assignment.status != Assignment.Status.LEASED or assignment.leased_until <= now:
        return None
    ranking = _checked_ranking(assignment, annotator, now, tiers, all_bad, flags, time_spent_ms, rationale)
    # Every column from the model's own fields and their preparation (defaults and auto_now_add included), so a
    # field added to Ranking is written here as the ORM would write it.
    fields = [field for field in Ranking._meta.concrete_fields if not field.primary_key]
    values = [field.get_db_prep_save(field.pre_save(ranking, add=True), connection) for field in fields]
    sql = _SUBMIT_SQL.format(
        assignment=Assignment._meta.db_table,
        task=RankingTask._meta.db_table,
        ranking=Ranking._meta.db_table,
        columns=", ".join(connection.ops.quote_name(field.column) for field in fields),
        values=", ".join(["%s"] * len(fields)),
    )
    params = [now, assignment.pk, annotator.pk, now, assignment.leased_at, *values]
    # A savepoint only inside a caller's transaction; alone, the statement is its own transaction. A set that checks
    # disagreement needs one: the check reads the task's rankings under the task's row lock the statement took
    # (labeling.services.disagreement); sets without a threshold keep the two round trips.
    with transaction.atomic() if connection.in_atomic_block or threshold is not None else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is not None:
            settle_disagreement(task_id=assignment.task_id, threshold=threshold)
    if row is None:
        return None
    ranking.pk = row[0]
    ranking._state.adding, ranking._state.db = False, connection.alias
    return SubmitResult(ranking, created=True)


_READ_SQL = (
    "SELECT a.task_id, a.annotator_id, a.status, a.display_order::text, a.leased_at, a.leased_until,"
    # The set's disagreement threshold (labeling.services.disagreement), by two primary-key lookups: nested scalar
    # subqueries, which plan in 0.06 ms (the assignment alone 0.03; medians, loaded box), where a join took 0.26.
    " (SELECT s.disagreement_threshold FROM {prompt_set} s"
    " WHERE s.id = (SELECT t.prompt_set_id FROM {task} t WHERE t.id = a.task_id))"
    " FROM {assignment} a WHERE a.id = %s"
)
_BIGINT_MAX = 2**63 - 1


def _read_assignment(assignment_id: int) -> tuple[Assignment, float | None] | None:
    """The assignment (finished_at left deferred) and its set's disagreement threshold, read with a fixed statement:
    compiling the ORM's equivalent cost a third of the submit's CPU. Postgres only (display_order comes back as
    JSON text)."""
    if not 0 < assignment_id <= _BIGINT_MAX:  # the ORM answers "none" for ids its column cannot hold; so do we
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            _READ_SQL.format(
                assignment=Assignment._meta.db_table,
                task=RankingTask._meta.db_table,
                prompt_set=PromptSet._meta.db_table,
            ),
            [assignment_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    task_id, annotator_id, status, order, leased_at, leased_until, threshold = row
    assignment = Assignment.from_db(
        connection.alias,
        ["id", "task_id", "annotator_id", "status", "display_order", "leased_at", "leased_until"],
        [assignment_id, task_id, annotator_id, status, json.loads(order), leased_at, leased_until],
    )
    return assignment, threshold


def _checked_ranking(assignment, annotator, now, tiers, all_bad, flags, time_spent_ms, rationale) -> Ranking:
    """The ranking to store for this live lease (unsaved), or RankingRejected saying what is wrong with it."""
    shown = list(assignment.display_order)
    if all_bad and not tiers:
        clean_tiers: list[list[int]] = []
    else:
        clean_tiers = normalize_tiers(tiers, shown)
    clean_flags = _normalize_flags(flags or {}, shown)
    clean_rationale = _clean_rationale(rationale)
    server_ms = int((now - assignment.leased_at).total_seconds() * 1000)
    spent = server_ms if time_spent_ms is None else max(0, min(int(time_spent_ms), _MAX_TIME_SPENT_MS))
    return Ranking(
        assignment=assignment,
        task_id=assignment.task_id,
        annotator=annotator,
        tiers=clean_tiers,
        all_bad=bool(all_bad),
        flags=clean_flags,
        display_order=shown,
        time_spent_ms=spent,
        rationale=clean_rationale,
    )


def _submit(annotator, assignment_id, tiers, all_bad, flags, time_spent_ms, rationale) -> SubmitResult:
    now = clock.now()
    # The set comes along (its disagreement settings; no query more), locked is the assignment's row only.
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("task__prompt_set")
        .filter(pk=assignment_id)
        .first()
    )
    if assignment is None:
        raise RankingRejected(f"Unknown task assignment {assignment_id}.", code="unknown_assignment")
    if assignment.annotator_id != annotator.pk:
        raise RankingRejected(f"Assignment {assignment_id} is not leased to you.", code="not_your_assignment")
    if assignment.status == Assignment.Status.SUBMITTED:
        return SubmitResult(Ranking.objects.get(assignment=assignment), created=False)
    if assignment.status == Assignment.Status.SKIPPED:
        raise RankingRejected(f"Assignment {assignment_id} was skipped; request the next task.", code="skipped")
    if assignment.status == Assignment.Status.EXPIRED or assignment.leased_until <= now:
        raise RankingRejected(
            f"The lease on assignment {assignment_id} expired at {assignment.leased_until.isoformat()}; "
            "request the next task.",
            code="lease_expired",
        )

    ranking = _checked_ranking(assignment, annotator, now, tiers, all_bad, flags, time_spent_ms, rationale)
    ranking.save(force_insert=True)
    assignment.status = Assignment.Status.SUBMITTED
    assignment.finished_at = now
    assignment.save(update_fields=["status", "finished_at"])
    RankingTask.objects.filter(pk=assignment.task_id).update(
        completed_count=F("completed_count") + 1,
        status=Case(
            When(completed_count__gte=F("overlap") - 1, then=Value(RankingTask.Status.DONE)),
            default=F("status"),
        ),
    )
    # Under the task's row lock, just taken by the UPDATE: a disagreeing task gets one more annotator (up to the
    # set's cap) or goes to adjudication. Sets without a threshold return at once, with no query.
    settle_disagreement(task_id=assignment.task_id, threshold=assignment.task.prompt_set.disagreement_threshold)
    return SubmitResult(ranking, created=True)
