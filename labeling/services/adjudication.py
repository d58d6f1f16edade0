"""Adjudication: an admin looks at every ranking of a disagreeing task side by side and records the final order.

Tasks come here from labeling.services.disagreement (flagged at their set's overlap cap, or reopened and still
waiting for one more annotator). One adjudication per task (UNIQUE task; recording again replaces it); the task
is then resolved: never reopened or flagged again, and asking for no further rankings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Case, Count, F, Q, QuerySet, Value, When

from labeling.models import Adjudication, PromptSet, Ranking, RankingTask, Rollout, TaskRollout
from labeling.services.agreement import mid_ranks
from labeling.services.errors import LabelingError
from labeling.services.ranking import normalize_tiers
from webapp import clock

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class AdjudicationRejected(LabelingError):
    """An adjudication refused: an unknown task, or a note that cannot be stored (a bad order is RankingRejected)."""

    code = "invalid_adjudication"


# As an annotator's rationale (labeling.models.RATIONALE_MAX_CHARS): a few sentences on why, not an essay.
NOTE_MAX_CHARS = 2_000


def tasks_to_adjudicate(*, prompt_set_id: int) -> QuerySet[RankingTask]:
    """The set's tasks an admin should look at: flagged at the cap, or reopened and still waiting for a ranking
    (an admin may settle those early), oldest first; adjudicated ones drop out."""
    waiting = Q(status=RankingTask.Status.OPEN, agreement__isnull=False)
    return (
        RankingTask.objects.filter(prompt_set_id=prompt_set_id, adjudication__isnull=True)
        .filter(Q(needs_adjudication=True) | waiting)
        .select_related("prompt")
        .order_by("id")
    )


@dataclass(frozen=True)
class SetAdjudicationCounts:
    prompt_set: PromptSet
    flagged: int  # disagreeing at the cap
    waiting: int  # reopened for one more annotator
    adjudicated: int


def adjudication_counts() -> list[SetAdjudicationCounts]:
    """Per prompt set with a threshold or any adjudication: how many tasks wait for an admin, and how many are done."""
    open_disagreeing = Q(tasks__status=RankingTask.Status.OPEN, tasks__agreement__isnull=False)
    no_adjudication = Q(tasks__adjudication__isnull=True)
    sets = (
        PromptSet.objects.annotate(
            flagged=Count("tasks", filter=Q(tasks__needs_adjudication=True) & no_adjudication),
            waiting=Count("tasks", filter=open_disagreeing & ~Q(tasks__needs_adjudication=True) & no_adjudication),
            adjudicated=Count("tasks__adjudication"),
        )
        .filter(Q(disagreement_threshold__isnull=False) | Q(adjudicated__gt=0))
        .order_by("name")
    )
    return [SetAdjudicationCounts(s, s.flagged, s.waiting, s.adjudicated) for s in sets]


def task_rollout_ids(task_id: int) -> list[int]:
    return sorted(TaskRollout.objects.filter(task_id=task_id).values_list("rollout_id", flat=True))


def dense_ranks(tiers: Sequence[Sequence[int]]) -> dict[int, int]:
    """{rollout id: 1-based tier number}: tied rollouts share a number, as the rank boxes take them."""
    return {rollout_id: place for place, tier in enumerate(tiers, start=1) for rollout_id in tier}


@dataclass(frozen=True)
class ReviewRow:
    """One rollout of the task, with the rank each ranking gave it."""

    letter: str  # A, B, … by rollout id: how the page names it
    rollout: Rollout
    # Per ranking of the review, in its order: (rank, flag) — rank None where that ranking left it out, flag
    # "harmful", "broken" or "".
    given: list[tuple[int | None, str]]
    suggested: int  # the rank box's starting value: the recorded adjudication's, else the rankings' mean order


@dataclass(frozen=True)
class TaskReview:
    task: RankingTask
    rankings: list[Ranking]  # human first, then judges; each in the order it was given
    rows: list[ReviewRow]
    adjudication: Adjudication | None


def review_of(task: RankingTask) -> TaskReview:
    """Everything the adjudication page shows about one task: its rollouts, and each ranking's rank of each."""
    rollouts = list(Rollout.objects.filter(tasks=task).order_by("id"))
    rankings = sorted(
        Ranking.objects.filter(task=task).select_related("annotator"),
        key=lambda r: (r.source != Ranking.Source.HUMAN, r.pk),
    )
    adjudication = Adjudication.objects.filter(task=task).select_related("by").first()
    rollout_ids = [rollout.pk for rollout in rollouts]
    start = adjudication.tiers if adjudication else consensus_tiers([r.tiers for r in rankings], rollout_ids)
    suggested = dense_ranks(start)
    per_ranking = [dense_ranks(ranking.tiers) for ranking in rankings]
    rows = [
        ReviewRow(
            letter=_letter(index),
            rollout=rollout,
            given=[
                (ranks.get(rollout.pk), ranking.flags.get(str(rollout.pk), ""))
                for ranks, ranking in zip(per_ranking, rankings, strict=True)
            ],
            suggested=suggested.get(rollout.pk, len(rollouts)),
        )
        for index, rollout in enumerate(rollouts)
    ]
    return TaskReview(task, rankings, rows, adjudication)


def _letter(index: int) -> str:
    return chr(ord("A") + index)  # at most MAX_ROLLOUTS_PER_TASK (9) rollouts: A to I


def consensus_tiers(rankings: Sequence[Sequence[Sequence[int]]], rollout_ids: Sequence[int]) -> list[list[int]]:
    """A starting order for the admin: rollouts by their mean mid-rank over the rankings that order them (equal
    means tie); a rollout no ranking placed goes last. Only a suggestion: the admin's order is what is stored."""
    totals: dict[int, list[float]] = defaultdict(list)
    for ranking_tiers in rankings:
        for rollout_id, rank in mid_ranks(ranking_tiers).items():
            totals[rollout_id].append(rank)
    unplaced = len(rollout_ids) + 1
    mean = {rid: sum(totals[rid]) / len(totals[rid]) if totals[rid] else unplaced for rid in rollout_ids}
    order: list[list[int]] = []
    for rollout_id in sorted(rollout_ids, key=lambda rid: (mean[rid], rid)):
        if order and mean[order[-1][0]] == mean[rollout_id]:
            order[-1].append(rollout_id)
        else:
            order.append([rollout_id])
    return order


def record_adjudication(*, task_id: int, tiers: Sequence[Sequence[int]], by: User, note: str = "") -> Adjudication:
    """Store the admin's final order for the task (replacing an earlier one) and mark the task resolved.

    `tiers` must rank each of the task's rollouts exactly once (RankingRejected from `normalize_tiers` says
    what is wrong). The task
    asks for no further rankings: its overlap comes down to the slots already taken (a live lease may still
    submit), so a task reopened for one more annotator is closed.
    """
    with transaction.atomic():
        task = RankingTask.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            raise AdjudicationRejected(f"Unknown task {task_id}.", code="unknown_task")
        clean = normalize_tiers(tiers, task_rollout_ids(task_id))
        adjudication, _ = Adjudication.objects.update_or_create(
            task=task, defaults={"tiers": clean, "by": by, "at": clock.now(), "note": _clean_note(note)}
        )
        closed: dict[str, object] = {"needs_adjudication": False}
        if task.active_count:
            closed |= {
                "overlap": F("active_count"),
                "status": Case(
                    When(completed_count__gte=F("active_count"), then=Value(RankingTask.Status.DONE)),
                    default=F("status"),
                ),
            }
        RankingTask.objects.filter(pk=task_id).update(**closed)
    return adjudication


def _clean_note(note: str) -> str:
    note = note.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise AdjudicationRejected(
            f"The note is {len(note):,} characters; keep it to {NOTE_MAX_CHARS:,}.", code="note_too_long"
        )
    if "\x00" in note:  # Postgres stores no NUL in text; a form may post %00
        raise AdjudicationRejected("The note contains a NUL character.", code="bad_note")
    return note
