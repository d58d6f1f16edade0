"""Many annotators at once, on real databases: no task beyond its overlap, none handed out twice.

The hammer runs on whatever database the settings name (Postgres in the suite). The SQLite case
re-runs this same file in a child pytest whose DATABASE_URL points at a SQLite file, because a
Django process talks to one default database.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count, F

from labeling.models import Assignment, Ranking, RankingTask
from labeling.services.errors import RankingRejected
from labeling.services.queue import next_task_for, skip_assignment
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

ANNOTATORS = 16
ROOT = Path(__file__).resolve().parents[2]


def hammer(prompt_set, annotators, *, seed: int, lease_seconds: float) -> list[BaseException]:
    """Each annotator loops next → (submit | retried submit | skip | abandon) until the queue is drained.

    Abandoning means going quiet past the lease, so the reaper (or the annotator's own next call)
    has to hand the slot back while everyone else keeps hammering.
    """
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(annotators))

    def work(annotator, rng: random.Random) -> None:
        try:
            barrier.wait()
            for _ in range(500):
                assignment = next_task_for(annotator, prompt_set=prompt_set, rng=rng)
                if assignment is None:
                    if not Assignment.objects.filter(status=Assignment.Status.LEASED).exists():
                        return
                    time.sleep(lease_seconds / 4)  # someone holds a lease that may yet lapse
                    continue
                roll = rng.random()
                if roll < 0.1:
                    skip_assignment(annotator=annotator, assignment_id=assignment.pk)
                    continue
                if roll < 0.15:
                    time.sleep(lease_seconds * 1.2)  # abandon it
                    continue
                order = [[rid] for rid in assignment.display_order]
                try:
                    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=order)
                except RankingRejected as rejected:
                    # On a loaded box a thread can take longer than the 1 s lease between next and submit: the
                    # server rightly refuses, and the slot went back to the pool (the invariants below check it).
                    if rejected.code != "lease_expired":
                        raise
                    continue
                if roll < 0.25:  # a client retry
                    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=order)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(a, random.Random(seed + i))) for i, a in enumerate(annotators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_annotators_never_exceed_overlap_or_repeat_a_task(settings):
    """16 threads as distinct annotators drain the queue (some abandoning leases); every invariant holds."""
    lease_seconds = 1
    settings.PREFLOOP_LEASE_SECONDS = lease_seconds
    prompt_set = prompt_set_with_tasks(n_prompts=30, rollouts_per_task=3, overlap=3)
    annotators = AnnotatorFactory.create_batch(ANNOTATORS)

    errors = hammer(prompt_set, annotators, seed=7, lease_seconds=lease_seconds)

    assert errors == []
    assert_every_slot_accounted_for()
    # The queue drained completely: 30 tasks × overlap 3 slots, 16 annotators to fill them.
    assert Ranking.objects.count() == 30 * 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the lease across sets has its own statement there")
def test_the_invariants_hold_when_annotators_lease_across_sets(settings):
    """The same hammer with no prompt set asked for: the pick over three sets (first set found without locks, then
    locked) keeps every guarantee, and drains every set."""
    lease_seconds = 1
    settings.PREFLOOP_LEASE_SECONDS = lease_seconds
    for overlap in (1, 2, 3):
        prompt_set_with_tasks(n_prompts=10, rollouts_per_task=3, overlap=overlap)
    annotators = AnnotatorFactory.create_batch(ANNOTATORS)

    errors = hammer(None, annotators, seed=11, lease_seconds=lease_seconds)

    assert errors == []
    assert_every_slot_accounted_for()
    assert Ranking.objects.count() == 10 * (1 + 2 + 3)


def assert_every_slot_accounted_for() -> None:
    over = RankingTask.objects.annotate(n=Count("rankings")).filter(n__gt=F("overlap"))
    assert list(over.values_list("id", "n")) == []
    pairs = Counter(Ranking.objects.values_list("task_id", "annotator_id"))
    assert [pair for pair, n in pairs.items() if n > 1] == []
    handed = Counter(Assignment.objects.values_list("task_id", "annotator_id"))
    assert [pair for pair, n in handed.items() if n > 1] == []
    # Every lease is accounted for: it ended as a ranking, a skip or a lapse, and the counters agree.
    statuses = Counter(Assignment.objects.values_list("status", flat=True))
    assert set(statuses) <= {Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED, Assignment.Status.EXPIRED}
    assert statuses[Assignment.Status.SUBMITTED] == Ranking.objects.count()
    for task in RankingTask.objects.annotate(n=Count("rankings")):
        assert (task.active_count, task.completed_count) == (task.n, task.n)
        assert task.status == (RankingTask.Status.DONE if task.n == task.overlap else RankingTask.Status.OPEN)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="this is the launcher of the SQLite run")
def test_the_same_invariants_hold_on_sqlite(tmp_path):
    """Re-run the hammer (and the import tests, whose Postgres path uses COPY) against a SQLite file."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'queue.sqlite3'}"}
    import_tests = [str(Path(__file__).with_name(name)) for name in ("test_import.py", "test_parsing.py")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_concurrent_annotators_never_exceed_overlap_or_repeat_a_task",
            *import_tests,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " failed" not in result.stdout and " passed" in result.stdout
