"""Active learning, training's side: score each open task's rollouts with the set's reward models → its priority.

The priority of a task is how little the reward models tell its rollouts apart, in [0, 1] (higher is leased first,
labeling.services.queue):
- one model: 2·σ(−m), m the smallest score margin |s(a) − s(b)| between two of the task's rollouts — 1 when two
  rollouts tie, falling towards 0 as the closest pair moves apart. Under the Bradley–Terry reading of a reward
  model, σ(m) is its confidence in the closest pair's order, so this is 2·(1 − confidence);
- several models (an ensemble): their disagreement, the largest over pairs of 2·std_k σ(s_k(a) − s_k(b)) — the
  spread of the models' preference probabilities for the pair (at most 0.5, hence the 2).

Rollouts are scored by the reward-model judge (`training.judges.reward_model`: rendered and tokenized as the reward
trainer trained, the model kept loaded per process), each once per model: scores are kept in `RolloutScore`, so a
refresh scores only the rollouts that are new since the last one. Labeling's rows are read and written through
`labeling.services.priorities` only.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from labeling.selectors import prompt_inputs_by_id
from labeling.services.priorities import (
    TaskToScore,
    newest_ranking_id,
    open_tasks_to_score,
    priority_refresh_due,
    record_priorities,
    request_priority_refresh,
    uncertainty_model_ids,
    uncertainty_set,
    uncertainty_sets,
)
from training.judges.base import JudgeInput
from training.judges.build import build_judge
from training.models import ModelVersion, RolloutScore

log = logging.getLogger(__name__)


def _sigmoid(x: float) -> float:
    # Written for both signs so that exp never overflows on a large margin.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def task_uncertainty(scores: Sequence[Sequence[float]]) -> float:
    """The task's priority from `scores[k][i]`, model k's score of rollout i (module docstring for the formulas)."""
    if not scores or len(scores[0]) < 2:
        raise ValueError("A task's uncertainty needs at least one model's scores of at least two rollouts.")
    n = len(scores[0])
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(scores) == 1:
        (row,) = scores
        smallest_margin = min(abs(row[i] - row[j]) for i, j in pairs)
        return 2.0 * _sigmoid(-smallest_margin)
    spread = max(statistics.pstdev([_sigmoid(row[i] - row[j]) for row in scores]) for i, j in pairs)
    return min(1.0, 2.0 * spread)


class PriorityRefreshFailed(RuntimeError):
    """A reward model could not score (its weights will not load, say): nothing was written."""


@dataclass(frozen=True)
class PriorityRefresh:
    prompt_set_id: int
    tasks: int  # open tasks scored
    written: int  # priorities written (a task a lease held at that instant is skipped)
    rollouts_scored: int  # rollouts a model scored for the first time


def refresh_priorities(prompt_set_id: int) -> PriorityRefresh:
    """Score the set's open tasks with its reward models and write their priorities (worker side).

    A set not ordered by uncertainty, or without a reward model, is left as it is.
    """
    prompt_set = uncertainty_set(prompt_set_id)
    model_ids = uncertainty_model_ids(prompt_set_id=prompt_set_id) if prompt_set else []
    models = list(ModelVersion.objects.filter(pk__in=model_ids, kind=ModelVersion.Kind.REWARD).order_by("id"))
    if not models:
        return PriorityRefresh(prompt_set_id, 0, 0, 0)
    # Read before scoring: rankings that arrive meanwhile count towards the next refresh.
    mark = newest_ranking_id(prompt_set_id=prompt_set_id)
    tasks = [task for task in open_tasks_to_score(prompt_set_id=prompt_set_id) if len(task.rollouts) >= 2]
    scored = 0
    score_of: list[dict[int, float]] = []
    for model in models:
        scores, new = _scores_by_rollout(model, tasks)
        score_of.append(scores)
        scored += new
    uncertainty_by_task = {
        task.task_id: task_uncertainty([[scores[rid] for rid, _ in task.rollouts] for scores in score_of])
        for task in tasks
    }
    written = record_priorities(prompt_set_id=prompt_set_id, uncertainty_by_task=uncertainty_by_task, ranking_mark=mark)
    log.info(
        "Priorities of set %s: %s open tasks, %s written, %s rollouts newly scored",
        prompt_set_id,
        len(tasks),
        written,
        scored,
    )
    return PriorityRefresh(prompt_set_id, len(tasks), written, scored)


def _scores_by_rollout(model: ModelVersion, tasks: list[TaskToScore]) -> tuple[dict[int, float], int]:
    """{rollout id: the model's score} for every rollout of the tasks, scoring (and keeping) the missing ones."""
    wanted = {rid: (task.prompt_id, text) for task in tasks for rid, text in task.rollouts}
    known: dict[int, float] = {}
    ids = sorted(wanted)
    for start in range(0, len(ids), 5_000):  # an IN list of bounded length
        known.update(
            RolloutScore.objects.filter(reward_model=model, rollout_id__in=ids[start : start + 5_000]).values_list(
                "rollout_id", "score"
            )
        )
    todo = [rid for rid in ids if rid not in known]
    if todo:
        prompts = prompt_inputs_by_id({wanted[rid][0] for rid in todo})
        judge = build_judge("reward_model", {}, model_path=model.path)
        results = judge.score_batch([JudgeInput(prompts[wanted[rid][0]], wanted[rid][1]) for rid in todo])
        failed = next((result for result in results if result.score is None), None)
        if failed is not None:
            # The judge never raises; a refresh must not write priorities from a model that did not score.
            raise PriorityRefreshFailed(f"Reward model {model.name!r} could not score: {failed.details.get('error')}")
        scores = [float(result.score) for result in results if result.score is not None]
        RolloutScore.objects.bulk_create(
            [RolloutScore(rollout_id=rid, reward_model=model, score=s) for rid, s in zip(todo, scores, strict=True)],
            ignore_conflicts=True,
        )
        known.update(zip(todo, scores, strict=True))
    return known, len(todo)


def refresh_due_priorities() -> list[int]:
    """The beat's check: queue a refresh of every uncertainty-ordered set that is due; returns the ids queued."""
    due = [prompt_set.pk for prompt_set in uncertainty_sets() if priority_refresh_due(prompt_set)]
    return request_priority_refresh(due) if due else []
