"""Submitting a ranking: validated against what was shown, idempotent per assignment."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When

from labeling.models import RATIONALE_MAX_CHARS, Assignment, Ranking, RankingTask
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


def _submit(annotator, assignment_id, tiers, all_bad, flags, time_spent_ms, rationale) -> SubmitResult:
    now = clock.now()
    assignment = Assignment.objects.select_for_update().filter(pk=assignment_id).first()
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

    shown = list(assignment.display_order)
    if all_bad and not tiers:
        clean_tiers: list[list[int]] = []
    else:
        clean_tiers = normalize_tiers(tiers, shown)
    clean_flags = _normalize_flags(flags or {}, shown)
    clean_rationale = _clean_rationale(rationale)
    server_ms = int((now - assignment.leased_at).total_seconds() * 1000)
    spent = server_ms if time_spent_ms is None else max(0, min(int(time_spent_ms), _MAX_TIME_SPENT_MS))

    ranking = Ranking.objects.create(
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
    return SubmitResult(ranking, created=True)
