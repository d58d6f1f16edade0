"""Form ranking tasks (k rollouts of one prompt) from rollouts that are not in a task yet."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.db import connection, models, transaction
from django.utils import timezone

from labeling.models import PromptSet, RankingTask, Rollout, TaskRollout

# bulk_create batches: large enough to amortise round trips, small enough to keep a statement's
# parameters under SQLite's limit (32766).
BATCH_SIZE = 2000


def rollout_key(rollout_ids: Iterable[int]) -> str:
    return hashlib.sha256(",".join(str(i) for i in sorted(rollout_ids)).encode()).hexdigest()


def group_rollouts(pending: Sequence[int], tasked: Sequence[int], k: int) -> list[list[int]]:
    """Split a prompt's untasked rollouts into groups of k.

    A short last group is topped up with rollouts already ranked elsewhere, so every rollout is
    compared with k-1 others; a prompt with fewer than k rollouts in all gets one smaller task
    (at least 2, or nothing).
    """
    groups = [list(pending[i : i + k]) for i in range(0, len(pending), k)]
    if groups and len(groups[-1]) < k:
        short = groups[-1]
        fillers = [r for r in tasked if r not in short][: k - len(short)]
        short.extend(fillers)
        if len(short) < 2:
            if len(groups) > 1:
                # A lone leftover joins the previous group's rollouts instead of standing alone.
                short.extend(r for r in groups[-2] if r not in short)
                short[:] = short[:k]
            else:
                groups.pop()
    return groups


def build_tasks(prompt_set: PromptSet, *, prompt_ids: Iterable[int] | None = None, round_number: int = 0) -> int:
    """Create tasks for every rollout of the set that is not in a task yet; returns how many.

    Runs under a lock on the prompt set so two builders (an import and a refresh) cannot both
    form tasks from the same rollouts.
    """
    with transaction.atomic():
        already = _lock_and_list_tasked(prompt_set)
        rollouts = Rollout.objects.filter(prompt__prompt_set=prompt_set)
        if prompt_ids is not None:
            rollouts = rollouts.filter(prompt_id__in=list(prompt_ids))
        pending: dict[int, list[int]] = defaultdict(list)
        tasked: dict[int, list[int]] = defaultdict(list)
        for rollout_id, prompt_id in rollouts.order_by("id").values_list("id", "prompt_id"):
            (tasked if rollout_id in already else pending)[prompt_id].append(rollout_id)

        groups: list[tuple[int, list[int]]] = []
        for prompt_id, ids in pending.items():
            for group in group_rollouts(ids, tasked.get(prompt_id, []), prompt_set.rollouts_per_task):
                groups.append((prompt_id, group))
        return _create_tasks(prompt_set, groups, round_number=round_number)


def _lock_and_list_tasked(prompt_set: PromptSet) -> set[int]:
    """Lock the set against other builders, then return the ids of its rollouts already in a task."""
    PromptSet.objects.select_for_update().filter(pk=prompt_set.pk).first()
    return set(TaskRollout.objects.filter(task__prompt_set=prompt_set).values_list("rollout_id", flat=True).distinct())


def _create_tasks(prompt_set: PromptSet, groups: list[tuple[int, list[int]]], *, round_number: int) -> int:
    if not groups:
        return 0
    if connection.vendor == "postgresql":
        task_ids = _copy_tasks(prompt_set, groups, round_number=round_number)
        links = ((task_id, rid) for task_id, (_, group) in zip(task_ids, groups, strict=True) for rid in group)
        copy_sql = f"COPY {TaskRollout._meta.db_table} (task_id, rollout_id) FROM STDIN"
        with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
            for row in links:
                copy.write_row(row)
        return len(task_ids)
    tasks = RankingTask.objects.bulk_create(
        [
            RankingTask(
                prompt_set=prompt_set,
                prompt_id=prompt_id,
                rollout_key=rollout_key(group),
                overlap=prompt_set.overlap,
                round=round_number,
            )
            for prompt_id, group in groups
        ],
        batch_size=BATCH_SIZE,
    )
    links = ((task.pk, rid) for task, (_, group) in zip(tasks, groups, strict=True) for rid in group)
    TaskRollout.objects.bulk_create([TaskRollout(task_id=t, rollout_id=r) for t, r in links], batch_size=BATCH_SIZE)
    return len(tasks)


def _copy_tasks(prompt_set: PromptSet, groups: list[tuple[int, list[int]]], *, round_number: int) -> list[int]:
    """Postgres: the tasks by COPY, with ids drawn from the table's sequence first; returns the ids in group order.

    bulk_create built a model instance and compiled a parameter list per task: 40% of a 100k-rollout import's time
    (benchmarks/import_speed.py --profile). The columns not set here get their model defaults, so a field added
    later needs no change here.
    """
    table = RankingTask._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(groups)]
        )
        task_ids = [row[0] for row in cursor.fetchall()]
        given = ["id", "prompt_set_id", "prompt_id", "rollout_key", "overlap", "round"]
        defaults = column_defaults(RankingTask, given)
        columns = ", ".join(connection.ops.quote_name(column) for column in [*given, *defaults])
        fixed = (prompt_set.overlap, round_number, *defaults.values())
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for task_id, (prompt_id, group) in zip(task_ids, groups, strict=True):
                copy.write_row((task_id, prompt_set.pk, prompt_id, rollout_key(group), *fixed))
    return task_ids


def column_defaults(model: type[models.Model], given: list[str]) -> dict[str, object]:
    """{column: database value} of the model's default for every column not in `given` (auto_now_add: now)."""
    now = timezone.now()
    defaults = {}
    for field in model._meta.concrete_fields:
        if field.column in given:
            continue
        value = now if getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False) else None
        if value is None and field.has_default():
            value = field.get_default()
        defaults[field.column] = field.get_db_prep_save(value, connection)
    return defaults


def mixed_groups(new: Sequence[int], old: Sequence[int], k: int) -> list[list[int]]:
    """Tasks of k that put a new policy's rollouts next to an old policy's, half and half.

    Every new rollout is used once; old ones are cycled so each task has its share. Without old
    rollouts this is plain grouping.
    """
    if not old:
        return group_rollouts(new, [], k)
    n_new = max(1, k // 2)
    n_old = min(k - n_new, len(old))
    groups = []
    cursor = 0
    for start in range(0, len(new), n_new):
        fresh = list(new[start : start + n_new])
        partners = [old[(cursor + i) % len(old)] for i in range(n_old)]
        cursor += n_old
        groups.append(fresh + [p for p in dict.fromkeys(partners) if p not in fresh])
    return [g for g in groups if len(g) >= 2]


def build_mixed_tasks(prompt_set: PromptSet, *, new_policy: str, old_policy: str, round_number: int) -> int:
    """Form tasks from `new_policy`'s untasked rollouts, each mixed with `old_policy`'s for the same prompt.

    This is what makes the next round of rankings a comparison of the new policy with the old one.
    """
    with transaction.atomic():
        already = _lock_and_list_tasked(prompt_set)
        new: dict[int, list[int]] = defaultdict(list)
        old: dict[int, list[int]] = defaultdict(list)
        rows = Rollout.objects.filter(prompt__prompt_set=prompt_set, policy__in=[new_policy, old_policy]).order_by("id")
        for rollout_id, prompt_id, policy in rows.values_list("id", "prompt_id", "policy"):
            if policy == new_policy and rollout_id not in already:
                new[prompt_id].append(rollout_id)
            elif policy == old_policy:
                old[prompt_id].append(rollout_id)
        groups = [
            (prompt_id, group)
            for prompt_id, ids in new.items()
            for group in mixed_groups(ids, old.get(prompt_id, []), prompt_set.rollouts_per_task)
        ]
        return _create_tasks(prompt_set, groups, round_number=round_number)
