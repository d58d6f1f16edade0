"""Active learning in the queue: an uncertainty-ordered set leases its most uncertain task first; others unchanged."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count, F

from labeling.models import Assignment, PromptSet, Ranking, RankingTask
from labeling.services import queue
from labeling.services.importing import import_file
from labeling.services.priorities import (
    clear_priorities,
    open_tasks_to_score,
    priority_refresh_due,
    record_priorities,
)
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks
from tests.labeling.lease_plans import cte, explain_lease, index_scan
from tests.labeling.test_concurrency import hammer

# Both lease paths: the one statement (Postgres) and the step-by-step ORM path (SQLite's, which runs on Postgres too).
LEASE_PATHS = {
    "one statement": lambda annotator, prompt_set, rng: next_task_for(annotator, prompt_set=prompt_set, rng=rng),
    "step by step": lambda annotator, prompt_set, rng: queue._lease_step_by_step(annotator, prompt_set.pk, rng),
}


def _scored_set(ordering: str, priorities: list[float | None], *, overlap: int = 1) -> tuple[PromptSet, list[int]]:
    """A set of len(priorities) tasks (ids ascending) with those priorities: written through the service for an
    uncertainty set, directly for an insertion-order one (as a set switched back from uncertainty may hold)."""
    prompt_set = prompt_set_with_tasks(n_prompts=len(priorities), rollouts_per_task=2, overlap=overlap)
    prompt_set.ordering = ordering
    prompt_set.save(update_fields=["ordering"])
    task_ids = list(RankingTask.objects.filter(prompt_set=prompt_set).order_by("id").values_list("id", flat=True))
    scored = {tid: p for tid, p in zip(task_ids, priorities, strict=True) if p is not None}
    if ordering == PromptSet.Ordering.UNCERTAINTY:
        written = record_priorities(prompt_set_id=prompt_set.pk, uncertainty_by_task=scored, ranking_mark=0)
        assert written == len(scored)
    else:
        for task_id, priority in scored.items():
            RankingTask.objects.filter(pk=task_id).update(uncertainty=priority)
    return prompt_set, task_ids


def _drain(prompt_set: PromptSet, lease, *, annotators: int = 1) -> list[int]:
    """Task ids in the order the queue hands them out, each leased task ranked at once."""
    rng = random.Random(0)
    order = []
    for annotator in AnnotatorFactory.create_batch(annotators):
        while (assignment := lease(annotator, prompt_set, rng)) is not None:
            order.append(assignment.task_id)
            submit_ranking(
                annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order]
            )
    return order


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_an_uncertainty_set_hands_out_its_most_uncertain_task_first(path):
    """Scored tasks come most uncertain first; the unscored come after them, in insertion order."""
    prompt_set, t = _scored_set(PromptSet.Ordering.UNCERTAINTY, [0.1, 0.9, None, 0.5, 0.3, None])
    assert _drain(prompt_set, LEASE_PATHS[path]) == [t[1], t[3], t[4], t[0], t[2], t[5]]


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_an_insertion_set_ignores_priorities(path):
    """The same priorities on an insertion-order set change nothing: tasks come by id (the control of the above)."""
    prompt_set, t = _scored_set(PromptSet.Ordering.INSERTION, [0.1, 0.9, None, 0.5, 0.3, None])
    assert _drain(prompt_set, LEASE_PATHS[path]) == t


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_a_started_task_still_comes_before_a_more_uncertain_one(path):
    """The started-first rule stays first: a task someone holds is offered before a more uncertain fresh one."""
    prompt_set, t = _scored_set(PromptSet.Ordering.UNCERTAINTY, [0.2, 0.8, 0.5], overlap=2)
    rng = random.Random(0)
    first, second = AnnotatorFactory.create_batch(2)
    assert LEASE_PATHS[path](first, prompt_set, rng).task_id == t[1]  # most uncertain
    assert LEASE_PATHS[path](second, prompt_set, rng).task_id == t[1]  # started, so before t[2]
    third = AnnotatorFactory()
    assert LEASE_PATHS[path](third, prompt_set, rng).task_id == t[2]  # t[1] is full: the next most uncertain


@pytest.mark.django_db
def test_priorities_are_written_only_for_open_tasks_and_must_lie_in_0_1():
    """A done task keeps no new priority, and an out-of-range value is refused before anything is written."""
    prompt_set, t = _scored_set(PromptSet.Ordering.UNCERTAINTY, [None, None])
    RankingTask.objects.filter(pk=t[0]).update(status=RankingTask.Status.DONE)
    assert record_priorities(prompt_set_id=prompt_set.pk, uncertainty_by_task={t[0]: 0.4, t[1]: 0.6}, ranking_mark=7)
    assert dict(RankingTask.objects.filter(prompt_set=prompt_set).values_list("id", "uncertainty")) == {
        t[0]: None,
        t[1]: 0.6,
    }
    prompt_set.refresh_from_db()
    assert prompt_set.priorities_ranking_mark == 7 and prompt_set.priorities_refreshed_at is not None
    with pytest.raises(ValueError, match="must lie in"):
        record_priorities(prompt_set_id=prompt_set.pk, uncertainty_by_task={t[1]: 1.5}, ranking_mark=8)
    assert RankingTask.objects.get(pk=t[1]).uncertainty == 0.6
    # A set that left uncertainty ordering gets nothing written, and clearing forgets what it had.
    PromptSet.objects.filter(pk=prompt_set.pk).update(ordering=PromptSet.Ordering.INSERTION)
    assert record_priorities(prompt_set_id=prompt_set.pk, uncertainty_by_task={t[1]: 0.9}, ranking_mark=9) == 0
    assert RankingTask.objects.get(pk=t[1]).uncertainty == 0.6
    assert clear_priorities(prompt_set_id=prompt_set.pk) == 1
    assert not RankingTask.objects.filter(prompt_set=prompt_set, uncertainty__isnull=False).exists()


@pytest.mark.django_db
def test_a_refresh_is_due_after_n_new_rankings_or_with_unscored_tasks():
    """Due when an open task has no priority, or once `priority_refresh_rankings` rankings are newer than the mark."""
    prompt_set, t = _scored_set(PromptSet.Ordering.UNCERTAINTY, [None, None, None, None], overlap=1)
    assert priority_refresh_due(prompt_set)  # nothing scored yet
    record_priorities(prompt_set_id=prompt_set.pk, uncertainty_by_task={tid: 0.5 for tid in t}, ranking_mark=0)
    prompt_set.refresh_from_db()
    prompt_set.priority_refresh_rankings = 2
    assert not priority_refresh_due(prompt_set)
    _drain_some(prompt_set, 1)
    assert not priority_refresh_due(prompt_set)  # one new ranking of two
    _drain_some(prompt_set, 1)
    assert priority_refresh_due(prompt_set)
    prompt_set.ordering = PromptSet.Ordering.INSERTION
    assert not priority_refresh_due(prompt_set)  # insertion-order sets are never scored
    assert [task.task_id for task in open_tasks_to_score(prompt_set_id=prompt_set.pk)] == t[2:]


def _drain_some(prompt_set: PromptSet, n: int) -> None:
    annotator = AnnotatorFactory()
    for _ in range(n):
        assignment = next_task_for(annotator, prompt_set=prompt_set)
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_on_an_uncertainty_set_keep_every_queue_invariant(settings):
    """The hammer of test_concurrency on a scored uncertainty set: no task beyond its overlap, none twice."""
    settings.PREFLOOP_LEASE_SECONDS = 1
    rng = random.Random(3)
    prompt_set, _ = _scored_set(PromptSet.Ordering.UNCERTAINTY, [rng.random() for _ in range(12)], overlap=2)
    errors = hammer(prompt_set, AnnotatorFactory.create_batch(8), seed=11, lease_seconds=1)
    assert errors == []
    assert list(RankingTask.objects.annotate(n=Count("rankings")).filter(n__gt=F("overlap")).values("id")) == []
    assert [p for p, n in Counter(Assignment.objects.values_list("task_id", "annotator_id")).items() if n > 1] == []
    for task in RankingTask.objects.annotate(n=Count("rankings")):
        assert (task.active_count, task.completed_count) == (task.n, task.n)
    assert Ranking.objects.count() == 12 * 2  # drained


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan checked is Postgres's")
def test_the_pick_walks_an_index_and_stops_at_the_first_free_task():
    """On 3,000 tasks: an insertion set's pick is today's walk of task_queue_idx (one row read), and an uncertainty
    set's walks task_priority_queue_idx, one row, no sort. EXPLAIN ANALYZE runs the statement (a lease is taken)."""
    lines = [json.dumps({"prompt": f"Question {i}?", "responses": [f"a{i}", f"b{i}"]}) for i in range(3_000)]
    plans = {}
    for ordering in PromptSet.Ordering.values:
        prompt_set = PromptSet.objects.create(name=f"big {ordering}", rollouts_per_task=2, overlap=1, ordering=ordering)
        import_file(prompt_set=prompt_set, data="\n".join(lines))
        # Both sets hold priorities: the insertion-order one as a set switched back from uncertainty might.
        ids = RankingTask.objects.filter(prompt_set=prompt_set).values_list("id", flat=True)
        PromptSet.objects.filter(pk=prompt_set.pk).update(ordering=PromptSet.Ordering.UNCERTAINTY)
        record_priorities(
            prompt_set_id=prompt_set.pk, uncertainty_by_task={i: (i % 997) / 997 for i in ids}, ranking_mark=0
        )
        PromptSet.objects.filter(pk=prompt_set.pk).update(ordering=ordering)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE labeling_rankingtask")
        plans[ordering] = explain_lease(
            queue._LEASE_SQL_IN_SET, annotator_id=AnnotatorFactory().pk, prompt_set_id=prompt_set.pk
        )
    insertion, uncertainty = plans["insertion"], plans["uncertainty"]
    # Insertion order: today's pick, task_queue_idx walked and left at the first row; the uncertainty offer before
    # it reads the set's ordering once and never touches its index, though 3,000 of the set's tasks are in it.
    assert "actual rows=1 loops=1" in index_scan(cte(insertion, "ordinary"), "task_queue_idx")
    assert "Sort" not in cte(insertion, "ordinary")
    assert "never executed" in index_scan(cte(insertion, "by_priority"), "task_priority_queue_idx")
    # Uncertainty order: the priority index walked and left at the first row, no sort; the ordinary offer not run.
    assert "actual rows=1 loops=1" in index_scan(cte(uncertainty, "by_priority"), "task_priority_queue_idx")
    assert "Sort" not in cte(uncertainty, "by_priority")
    assert "never executed" in index_scan(cte(uncertainty, "ordinary"), "task_queue_idx")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are Postgres's (SQLite has one writer)")
def test_writing_priorities_never_waits_on_a_task_a_lease_holds():
    """A task row locked by another transaction (as a lease's pick locks it) is skipped, not waited on: the write
    returns at once with the other tasks written, and the locked one keeps its old priority."""
    import threading

    from django.db import transaction

    prompt_set, t = _scored_set(PromptSet.Ordering.UNCERTAINTY, [0.1, 0.2, 0.3])
    locked, release = threading.Event(), threading.Event()

    def hold_first_task() -> None:
        try:
            with transaction.atomic():
                RankingTask.objects.select_for_update().get(pk=t[0])
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_first_task)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # were it to wait, it would fail here instead of hanging
        written = record_priorities(
            prompt_set_id=prompt_set.pk, uncertainty_by_task={t[0]: 0.9, t[1]: 0.8, t[2]: 0.7}, ranking_mark=0
        )
    finally:
        release.set()
        holder.join()
    assert written == 2
    assert dict(RankingTask.objects.filter(prompt_set=prompt_set).values_list("id", "uncertainty")) == {
        t[0]: 0.1,
        t[1]: 0.8,
        t[2]: 0.7,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["one statement", "step by step"])
def test_a_lease_over_all_sets_keeps_the_order_across_sets(path):
    """Asked for any set, priorities are not used: tasks come by id across sets, as before (a set's priorities order
    its own queue only)."""
    first, a = _scored_set(PromptSet.Ordering.INSERTION, [None, None])
    _, b = _scored_set(PromptSet.Ordering.UNCERTAINTY, [0.1, 0.9])

    def any_set(annotator, _prompt_set, rng):
        if path == "one statement":
            return next_task_for(annotator, prompt_set=None, rng=rng)
        return queue._lease_step_by_step(annotator, None, rng)

    assert _drain(first, any_set) == [*a, *b]
