"""A lease asked for no prompt set: the order across sets, what it skips, and a plan that never reads every task."""

from __future__ import annotations

import json
import random
import threading

import pytest
from django.db import connection, transaction

from labeling.models import PromptSet, RankingTask
from labeling.services import queue
from labeling.services.gold import AnnotatorPaused, mark_gold
from labeling.services.importing import import_file
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks
from tests.labeling.lease_plans import cte, explain_lease, index_scan

LEASE_PATHS = ["one statement", "step by step"]


def _lease_any_set(path: str, annotator, rng: random.Random):
    if path == "one statement" and connection.vendor == "postgresql":
        return next_task_for(annotator, prompt_set=None, rng=rng)
    return queue._lease_step_by_step(annotator, None, rng)


class _AlwaysLow(random.Random):
    """A draw below any gold rate: the gold offer comes first."""

    def random(self) -> float:
        return 0.0


def _task_ids(prompt_set: PromptSet) -> list[int]:
    return list(RankingTask.objects.filter(prompt_set=prompt_set).order_by("id").values_list("id", flat=True))


def _drain_any_set(path: str, annotator, order: list[int] | None = None) -> list[int]:
    """Task ids in the order they are handed out (into `order`, if given), each ranked at once."""
    rng = random.Random(0)
    order = [] if order is None else order
    while (assignment := _lease_any_set(path, annotator, rng)) is not None:
        order.append(assignment.task_id)
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])
    return order


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_a_started_task_in_a_later_set_comes_before_fresh_tasks_of_earlier_sets(path):
    """The order across sets is one order: most started first, then oldest, whichever set a task is in."""
    first, second, third = (prompt_set_with_tasks(n_prompts=2, overlap=2) for _ in range(3))
    a, b, c = _task_ids(first), _task_ids(second), _task_ids(third)
    # Someone else has started the middle set's first task.
    assert next_task_for(AnnotatorFactory(), prompt_set=second).task_id == b[0]

    assert _drain_any_set(path, AnnotatorFactory()) == [b[0], *a, b[1], *c]


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_a_paused_set_and_a_set_that_paused_the_annotator_are_passed_over(path):
    paused_set = prompt_set_with_tasks(n_prompts=2, overlap=1, is_paused=True)
    gold_set = prompt_set_with_tasks(n_prompts=3, overlap=1, gold_rate=0.5, gold_threshold=0.9, gold_min_answers=1)
    open_set = prompt_set_with_tasks(n_prompts=2, overlap=2)
    gold_task = RankingTask.objects.filter(prompt_set=gold_set).order_by("id").first()
    best, *others = gold_task.task_rollouts.order_by("rollout_id").values_list("rollout_id", flat=True)
    mark_gold(task=gold_task, gold={"best": best})
    # One wrong known answer (best ranked last) pauses this annotator in the gold set.
    careless = AnnotatorFactory()
    assignment = next_task_for(careless, prompt_set=gold_set, rng=_AlwaysLow())
    assert assignment.task_id == gold_task.pk
    submit_ranking(annotator=careless, assignment_id=assignment.pk, tiers=[[r] for r in [*others, best]])

    served: list[int] = []
    with pytest.raises(AnnotatorPaused):  # once the rest is done, the empty queue says why
        _drain_any_set(path, careless, served)
    assert served == _task_ids(open_set)
    assert set(_drain_any_set(path, AnnotatorFactory())) == {*_task_ids(gold_set), *_task_ids(open_set)}
    assert not RankingTask.objects.filter(prompt_set=paused_set, active_count__gt=0).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("path", LEASE_PATHS)
def test_nothing_left_in_any_set_is_an_empty_queue(path):
    prompt_set_with_tasks(n_prompts=1, overlap=1)
    prompt_set_with_tasks(n_prompts=1, overlap=1)
    annotator = AnnotatorFactory()
    assert len(_drain_any_set(path, annotator)) == 2
    assert _lease_any_set(path, annotator, random.Random(1)) is None
    assert _lease_any_set(path, AnnotatorFactory(), random.Random(1)) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are Postgres's (SQLite has one writer)")
def test_when_other_leases_lock_every_free_task_of_the_first_set_the_lease_comes_from_another():
    """The pick looks for the first set without locks; if other requests hold all its free tasks this instant, the
    lease still comes from a set that has one, rather than an empty answer."""
    first = prompt_set_with_tasks(n_prompts=1, overlap=1)
    second = prompt_set_with_tasks(n_prompts=2, overlap=1)
    (only,) = _task_ids(first)
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def rival() -> None:
        try:
            with transaction.atomic():
                RankingTask.objects.select_for_update().get(pk=only)
                holding.set()
                release.wait(timeout=30)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=rival, daemon=True)
    thread.start()
    assert holding.wait(timeout=30)
    try:
        assignment = next_task_for(AnnotatorFactory(), prompt_set=None)
    finally:
        release.set()
        thread.join(timeout=30)

    assert errors == []
    assert assignment is not None and assignment.task_id == _task_ids(second)[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan checked is Postgres's")
def test_the_pick_across_sets_walks_each_sets_index_instead_of_sorting_every_task():
    """On 3 sets of 2,000 tasks: each set's task_queue_idx is probed once and left at its first free task, the
    chosen set's is walked to one row, and no task table is read whole. EXPLAIN ANALYZE runs the statement."""
    sets = []
    for n in range(3):
        prompt_set = PromptSet.objects.create(name=f"big {n}", rollouts_per_task=2, overlap=1)
        lines = [json.dumps({"prompt": f"Q{n}.{i}?", "responses": [f"a{i}", f"b{i}"]}) for i in range(2_000)]
        import_file(prompt_set=prompt_set, data="\n".join(lines))
        sets.append(prompt_set)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_rankingtask")
    plan = explain_lease(queue._LEASE_SQL_ANY_SET, annotator_id=AnnotatorFactory().pk, prompt_set_id=None)

    # The sort over every set's tasks is there as the fallback, and never runs.
    task_reads = [line for line in plan.splitlines() if "Seq Scan on labeling_rankingtask" in line]
    assert all("never executed" in line for line in task_reads)
    assert "actual rows=1 loops=3" in index_scan(cte(plan, "first_set"), "task_queue_idx")
    assert "actual rows=1 loops=1" in index_scan(cte(plan, "in_first_set"), "task_queue_idx")
    assert "never executed" in cte(plan, "in_any_set").splitlines()[1]
    assert RankingTask.objects.get(active_count=1).pk == _task_ids(sets[0])[0]
