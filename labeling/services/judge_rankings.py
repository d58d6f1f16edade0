"""Rankings written by judges (tool feedback), and the reads that auto-rank and judge-human agreement need.

Invariants, and what keeps each:
- a judge ranking never touches the queue: it has no assignment (CHECK `ranking_assignment_iff_human`: a human
  ranking has one, a judge ranking has none) and this module never updates `RankingTask.active_count` or
  `completed_count`, so annotators' overlap slots, leases and task status are exactly as without judges;
- one ranking per task and judge: the judge writes under its own user, and UNIQUE(task, annotator) holds; a
  re-run updates that row in place (an upsert), so auto-rank is idempotent;
- judge rankings never count as human work: they carry `source="judge"`, and the human statistics (progress,
  win rates, agreement, timings) filter on `source="human"`.
Labeling knows nothing of training: a judge is only a user id here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import transaction

from labeling.models import Prompt, Ranking, RankingTask, Rollout, TaskRollout

# Rows per round trip: bounded memory, few queries (as the export's chunks).
_CHUNK = 2000


@dataclass(frozen=True)
class RolloutToJudge:
    rollout_id: int
    prompt_id: int
    text: str


@dataclass(frozen=True)
class PromptReference:
    prompt: str | list[dict]  # the model input: chat messages, else the text
    answer: str | None
    tests: str | None


def rollouts_of_tasks(*, prompt_set_id: int) -> list[RolloutToJudge]:
    """Every rollout that appears in a task of the set (what auto-rank must score), by id."""
    rows = (
        Rollout.objects.filter(id__in=TaskRollout.objects.filter(task__prompt_set_id=prompt_set_id).values("rollout"))
        .order_by("id")
        .values_list("id", "prompt_id", "text")
    )
    return [RolloutToJudge(*row) for row in rows.iterator(chunk_size=_CHUNK)]


def prompt_references(prompt_ids: Iterable[int]) -> dict[int, PromptReference]:
    """{prompt id: its model input and references}; empty references read as None."""
    ids = list(prompt_ids)
    out = {}
    for start in range(0, len(ids), _CHUNK):
        rows = Prompt.objects.filter(id__in=ids[start : start + _CHUNK]).values_list(
            "id", "text", "messages", "reference_answer", "reference_tests"
        )
        for prompt_id, text, messages, answer, tests in rows:
            out[prompt_id] = PromptReference(messages if messages is not None else text, answer or None, tests or None)
    return out


def tasks_with_rollouts(*, prompt_set_id: int) -> dict[int, list[int]]:
    """{task id: its rollout ids (ascending)} for every task of the set."""
    out: dict[int, list[int]] = defaultdict(list)
    rows = (
        TaskRollout.objects.filter(task__prompt_set_id=prompt_set_id)
        .order_by("task_id", "rollout_id")
        .values_list("task_id", "rollout_id")
    )
    for task_id, rollout_id in rows.iterator(chunk_size=_CHUNK):
        out[task_id].append(rollout_id)
    return dict(out)


def record_judge_rankings(*, judge_user_id: int, tiers_by_task: dict[int, list[list[int]]]) -> int:
    """Write (or rewrite) the judge's ranking of each task; returns how many were written.

    `tiers` are best → worst with ties in one inner list, and must hold exactly the task's rollouts (checked
    here: a judge ranking is read by the same export code as a human one).
    """
    if not tiers_by_task:
        return 0
    task_rollouts = _rollouts_of(tiers_by_task)
    rows = []
    for task_id, tiers in tiers_by_task.items():
        ranked = [rollout_id for tier in tiers for rollout_id in tier]
        if sorted(ranked) != task_rollouts.get(task_id):
            raise ValueError(f"Judge ranking of task {task_id} must rank its rollouts {task_rollouts.get(task_id)}.")
        rows.append(
            Ranking(
                task_id=task_id,
                annotator_id=judge_user_id,
                assignment=None,
                source=Ranking.Source.JUDGE,
                tiers=tiers,
                all_bad=False,
                flags={},
                display_order=task_rollouts[task_id],
                time_spent_ms=0,
            )
        )
    with transaction.atomic():
        for start in range(0, len(rows), _CHUNK):
            Ranking.objects.bulk_create(
                rows[start : start + _CHUNK],
                update_conflicts=True,
                unique_fields=["task", "annotator"],
                update_fields=["tiers", "display_order"],
            )
    return len(rows)


def _rollouts_of(tiers_by_task: dict[int, list[list[int]]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    task_ids = list(tiers_by_task)
    for start in range(0, len(task_ids), _CHUNK):
        rows = (
            TaskRollout.objects.filter(task_id__in=task_ids[start : start + _CHUNK])
            .order_by("task_id", "rollout_id")
            .values_list("task_id", "rollout_id")
        )
        for task_id, rollout_id in rows:
            out[task_id].append(rollout_id)
    return dict(out)


@dataclass(frozen=True)
class RankedByBoth:
    task_id: int
    judge_tiers: list[list[int]]
    human_tiers: list[list[list[int]]]  # one per human ranking of the task ("all bad" rankings left out)


def tasks_ranked_by_judge_and_humans(
    *, judge_user_id: int, prompt_set_ids: Sequence[int] | None = None
) -> list[RankedByBoth]:
    """Tasks that this judge and at least one human ranked, with both rankings (for their agreement)."""
    judged = Ranking.objects.filter(annotator_id=judge_user_id, source=Ranking.Source.JUDGE)
    if prompt_set_ids is not None:
        judged = judged.filter(task__prompt_set_id__in=list(prompt_set_ids))
    judge_tiers = dict(judged.values_list("task_id", "tiers"))
    humans: dict[int, list[list[list[int]]]] = defaultdict(list)
    human_rows = (
        Ranking.objects.filter(task_id__in=judged.values("task_id"), source=Ranking.Source.HUMAN, all_bad=False)
        .order_by("id")
        .values_list("task_id", "tiers")
    )
    for task_id, tiers in human_rows.iterator(chunk_size=_CHUNK):
        humans[task_id].append(tiers)
    return [RankedByBoth(task_id, judge_tiers[task_id], humans[task_id]) for task_id in sorted(humans)]


def task_count(*, prompt_set_id: int) -> int:
    return RankingTask.objects.filter(prompt_set_id=prompt_set_id).count()
