"""Dynamic overlap under concurrency, on PostgreSQL: threads submitting disagreeing rankings at once never push a
task's overlap beyond its set's cap, nor its active count beyond its overlap."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connection
from django.db.models import Count, F

from labeling.models import Assignment, Ranking, RankingTask
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

ANNOTATORS = 8
CAP = 4

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the row locks raced here are Postgres's")


def together(jobs: list) -> list:
    """Run each job in its own thread, released at once by a barrier; their results, in order."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job) -> None:
        try:
            barrier.wait()
            results[index] = job()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def wave(prompt_set, annotators, rng: random.Random) -> int:
    """Every annotator takes a task at once, then those who got one submit a random order at once (completing and
    reopening submits race on the same task rows); how many got a task. No lease outlives a wave, so a wave where
    nobody gets one means the queue is drained."""
    leases = together([lambda a=a: next_task_for(a, prompt_set=prompt_set) for a in annotators])
    submits = []
    for annotator, assignment in zip(annotators, leases, strict=True):
        if assignment is None:
            continue
        order = list(assignment.display_order)
        rng.shuffle(order)
        submits.append(
            lambda a=annotator, pk=assignment.pk, tiers=[[rid] for rid in order]: submit_ranking(
                annotator=a, assignment_id=pk, tiers=tiers
            )
        )
    if submits:
        together(submits)
    return len(submits)


@pytest.mark.django_db(transaction=True)
def test_concurrent_disagreeing_submits_never_push_overlap_beyond_the_cap():
    """8 annotators rank 6 tasks in random orders, all at once, until nothing is left; every invariant holds."""
    prompt_set = prompt_set_with_tasks(
        n_prompts=6, rollouts_per_task=3, overlap=2, disagreement_threshold=0.95, max_overlap=CAP
    )
    annotators = AnnotatorFactory.create_batch(ANNOTATORS)
    rng = random.Random(11)
    waves = 0
    while wave(prompt_set, annotators, rng):
        waves += 1
        assert waves < 20, "the queue never drained"

    tasks = list(RankingTask.objects.filter(prompt_set=prompt_set).annotate(n=Count("rankings")))
    assert all(2 <= task.overlap <= CAP for task in tasks), [(t.pk, t.overlap) for t in tasks]
    assert all(task.active_count <= task.overlap for task in tasks)
    for task in tasks:
        # Drained: every slot was used, and each task ended agreeing or flagged at the cap.
        assert (task.active_count, task.completed_count, task.n, task.status) == (
            task.overlap,
            task.overlap,
            task.overlap,
            "done",
        )
        if task.agreement is not None and task.agreement < 0.95:
            assert task.needs_adjudication and task.overlap == CAP
        else:
            assert not task.needs_adjudication
    assert not RankingTask.objects.filter(active_count__gt=F("overlap")).exists()
    assert Ranking.objects.values("task", "annotator").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert not Assignment.objects.filter(status=Assignment.Status.LEASED).exists()
    # The race did happen: tasks were reopened (more rankings than the set's overlap) and some reached the cap.
    assert sum(task.overlap for task in tasks) > 2 * len(tasks)
    assert any(task.overlap == CAP for task in tasks)
