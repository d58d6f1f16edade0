"""Active learning, labeling's side: which open tasks of a set need scoring, and writing the scores as priorities.

A set whose `ordering` is "uncertainty" hands out its scored open tasks most uncertain first (the queue's
uncertainty offer, labeling.services.queue), after the queue's started-first rule; its unscored tasks come after
them, in insertion order. The scores come from the set's reward models, which run in a worker
(training.services.active_learning): training reads the tasks and writes the priorities through this module only.

Invariants, and what keeps them:
- a priority lies in [0, 1] or is NULL (CHECK `task_uncertainty_0_to_1`);
- writing priorities never waits on a lease: tasks are written in small batches, each locking its rows in id order
  `FOR UPDATE SKIP LOCKED` (a task a request holds this instant keeps its old priority until the next refresh), so
  the queue's own row locks (ascending ids, conditional UPDATEs) are never waited on and never crossed; a lease in
  turn skips the at most `_WRITE_BATCH` rows a batch holds for its few milliseconds;
- a set's priorities order only its own queue (the lease over all sets ignores them);
- a refresh is due once `priority_refresh_rankings` rankings newer than the set's mark arrived, or an open task has
  no priority yet; the mark moves only with a written refresh, so a refresh that dies is simply due again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Case, FloatField, Max, Value, When

from labeling.models import PromptSet, Ranking, RankingTask, TaskRollout
from labeling.selectors import rankings_after
from webapp import clock

log = logging.getLogger(__name__)

# The Celery task (training.tasks) that re-scores one set; sent by name, so labeling imports nothing of training.
REFRESH_PRIORITIES_TASK = "training.refresh_priorities"
# Tasks per write: each batch is one short transaction, so a lease skips at most this many rows at once.
_WRITE_BATCH = 200


@dataclass(frozen=True)
class TaskToScore:
    task_id: int
    prompt_id: int
    rollouts: tuple[tuple[int, str], ...]  # (rollout id, text), by id


def uncertainty_sets() -> list[PromptSet]:
    """Sets ordered by uncertainty that name at least one reward model: the ones a refresh applies to."""
    return list(
        PromptSet.objects.filter(ordering=PromptSet.Ordering.UNCERTAINTY, uncertainty_models__isnull=False)
        .distinct()
        .order_by("id")
    )


def uncertainty_set(prompt_set_id: int) -> PromptSet | None:
    """The set, when it exists and is ordered by uncertainty (else None: there is nothing to refresh)."""
    return PromptSet.objects.filter(pk=prompt_set_id, ordering=PromptSet.Ordering.UNCERTAINTY).first()


def uncertainty_model_ids(*, prompt_set_id: int) -> list[int]:
    """The ids of the set's reward models (training's ModelVersion), ascending."""
    through = PromptSet.uncertainty_models.through
    return sorted(through.objects.filter(promptset_id=prompt_set_id).values_list("modelversion_id", flat=True))


def priority_refresh_due(prompt_set: PromptSet) -> bool:
    """Whether the set's open tasks should be re-scored now (see the module's docstring)."""
    if prompt_set.ordering != PromptSet.Ordering.UNCERTAINTY:
        return False
    fresh, _ = rankings_after(prompt_set_id=prompt_set.pk, after_id=prompt_set.priorities_ranking_mark)
    if fresh >= prompt_set.priority_refresh_rankings:
        return True
    return RankingTask.objects.filter(
        prompt_set=prompt_set, status=RankingTask.Status.OPEN, uncertainty__isnull=True
    ).exists()


def newest_ranking_id(*, prompt_set_id: int) -> int:
    """The set's newest ranking id (0 when none): read before scoring, it becomes the refresh's mark."""
    return Ranking.objects.filter(task__prompt_set_id=prompt_set_id).aggregate(top=Max("id"))["top"] or 0


def open_tasks_to_score(*, prompt_set_id: int) -> list[TaskToScore]:
    """Every open task of the set (gold tasks aside: their answer is known) with its rollouts' texts."""
    rows = (
        TaskRollout.objects.filter(
            task__prompt_set_id=prompt_set_id, task__status=RankingTask.Status.OPEN, task__gold__isnull=True
        )
        .order_by("task_id", "rollout_id")
        .values_list("task_id", "task__prompt_id", "rollout_id", "rollout__text")
    )
    tasks: dict[int, tuple[int, list[tuple[int, str]]]] = {}
    for task_id, prompt_id, rollout_id, text in rows.iterator(chunk_size=2_000):
        tasks.setdefault(task_id, (prompt_id, []))[1].append((rollout_id, text))
    return [TaskToScore(task_id, prompt_id, tuple(rollouts)) for task_id, (prompt_id, rollouts) in tasks.items()]


def record_priorities(*, prompt_set_id: int, uncertainty_by_task: dict[int, float], ranking_mark: int) -> int:
    """Write the tasks' priorities (each in [0, 1]) and move the set's mark; returns how many tasks were written.

    Only open tasks of the set are written, and only while it is ordered by uncertainty (a set switched to insertion
    order during a refresh gets none); a task a request has locked this instant is skipped (module docstring).
    """
    for task_id, value in uncertainty_by_task.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Task {task_id}: an uncertainty must lie in [0, 1], not {value!r}.")
    if uncertainty_set(prompt_set_id) is None:
        return 0
    written = 0
    task_ids = sorted(uncertainty_by_task)
    for start in range(0, len(task_ids), _WRITE_BATCH):
        batch = task_ids[start : start + _WRITE_BATCH]
        with transaction.atomic():
            free = list(
                RankingTask.objects.select_for_update(skip_locked=True)
                .filter(pk__in=batch, prompt_set_id=prompt_set_id, status=RankingTask.Status.OPEN)
                .order_by("id")
                .values_list("id", flat=True)
            )
            if free:
                written += RankingTask.objects.filter(pk__in=free).update(
                    uncertainty=Case(
                        *[When(pk=task_id, then=Value(uncertainty_by_task[task_id])) for task_id in free],
                        output_field=FloatField(),
                    )
                )
    PromptSet.objects.filter(pk=prompt_set_id).update(
        priorities_ranking_mark=ranking_mark, priorities_refreshed_at=clock.now()
    )
    return written


def clear_priorities(*, prompt_set_id: int) -> int:
    """Forget the set's priorities (it left uncertainty ordering); returns how many tasks were cleared.

    Not needed for the order (the queue reads a set's priorities only while it is ordered by uncertainty), but a
    lease over all sets would otherwise still walk these tasks in the priority index. Rows are locked in id order,
    as the queue locks them, so this waits on a lease at most briefly and never deadlocks with one.
    """
    scored = list(
        RankingTask.objects.filter(prompt_set_id=prompt_set_id, uncertainty__isnull=False)
        .order_by("id")
        .values_list("id", flat=True)
    )
    cleared = 0
    for start in range(0, len(scored), _WRITE_BATCH):
        with transaction.atomic():
            batch = list(
                RankingTask.objects.select_for_update()
                .filter(pk__in=scored[start : start + _WRITE_BATCH])
                .order_by("id")
                .values_list("id", flat=True)
            )
            cleared += RankingTask.objects.filter(pk__in=batch).update(uncertainty=None)
    return cleared


def request_priority_refresh(prompt_set_ids: list[int]) -> list[int]:
    """Queue a re-scoring of each set on the cpu workers; returns the ids whose message the broker took.

    A duplicate request costs little: scores are kept per rollout and model, so a second refresh of unchanged
    tasks runs no model.
    """
    from webapp.celery import app  # the broker client only where a refresh is asked for

    sent = []
    for prompt_set_id in prompt_set_ids:
        try:
            app.send_task(REFRESH_PRIORITIES_TASK, args=[prompt_set_id], queue="cpu")
        except Exception as error:  # the broker's errors vary by transport; the caller reports the ids not sent
            log.warning("Could not queue a priority refresh of set %s: %s", prompt_set_id, error)
        else:
            sent.append(prompt_set_id)
    return sent
