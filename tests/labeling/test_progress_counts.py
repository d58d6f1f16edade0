"""Prompt-set progress at scale: the trigger-kept counts (labeling.services.progress) equal a recount after every
kind of write, whichever code path made it, and folding them changes no sum."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.db.models import Count, F, Q

from labeling.models import Assignment, PromptSet, PromptSetProgress, Ranking, RankingTask
from labeling.selectors import (
    Progress,
    progress_of,
    prompt_sets_progress_of,
    prompt_sets_with_progress,
    remaining_for,
)
from labeling.services.progress import fold_progress
from labeling.services.queue import next_task_for, release_expired_leases, skip_assignment
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the counts are kept by PostgreSQL triggers"),
]


def recount(prompt_set: PromptSet) -> Progress:
    """The figures counted from the tables themselves: what the kept counts must equal."""
    counts = RankingTask.objects.filter(prompt_set=prompt_set).aggregate(
        tasks=Count("id"),
        done=Count("id", filter=Q(status=RankingTask.Status.DONE)),
        in_progress=Count("id", filter=Q(status=RankingTask.Status.OPEN, active_count__gt=0)),
    )
    rankings = Ranking.objects.filter(task__prompt_set=prompt_set, source=Ranking.Source.HUMAN).count()
    return Progress(
        tasks=counts["tasks"],
        done=counts["done"],
        in_progress=counts["in_progress"],
        open=counts["tasks"] - counts["done"] - counts["in_progress"],
        rankings=rankings,
    )


def listed(prompt_set: PromptSet) -> tuple[int, int, int]:
    row = prompt_sets_with_progress().get(pk=prompt_set.pk)
    return row.n_tasks, row.n_done, row.n_in_progress


def left_for(annotator, prompt_set: PromptSet) -> tuple[int, int]:
    """(tasks the queue could still hand them, open tasks they never held), counted from the tables."""
    theirs = Assignment.objects.filter(annotator=annotator).exclude(status="expired").values("task_id")
    open_tasks = RankingTask.objects.filter(prompt_set=prompt_set, status="open")
    free = open_tasks.filter(active_count__lt=F("overlap")).exclude(pk__in=theirs).count()
    return free, open_tasks.exclude(assignments__annotator=annotator).count()


def assert_counts_match(prompt_set: PromptSet, annotators=()) -> None:
    expected = recount(prompt_set)
    assert progress_of(prompt_set) == expected
    assert listed(prompt_set) == (expected.tasks, expected.done, expected.in_progress)
    for annotator in annotators:
        free, never_held = left_for(annotator, prompt_set)
        assert prompt_sets_progress_of(annotator).get(pk=prompt_set.pk).n_left == free
        assert remaining_for(annotator, prompt_set) == never_held


def rank(annotator, prompt_set: PromptSet) -> None:
    assignment = next_task_for(annotator, prompt_set=prompt_set, rng=random.Random(1))
    assert assignment is not None
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])


def test_counts_follow_leases_submits_skips_and_expiry():
    """Leasing, submitting (up to done), skipping and lease expiry each move the kept counts as a recount does."""
    prompt_set = prompt_set_with_tasks(n_prompts=4, overlap=2)
    other = prompt_set_with_tasks(n_prompts=2, overlap=1)
    annotators = AnnotatorFactory.create_batch(3)
    assert_counts_match(prompt_set, annotators)
    assert recount(prompt_set).tasks == 4

    leased = next_task_for(annotators[0], prompt_set=prompt_set)
    assert_counts_match(prompt_set, annotators)
    assert recount(prompt_set).in_progress == 1
    skip_assignment(annotator=annotators[0], assignment_id=leased.pk)
    assert_counts_match(prompt_set, annotators)

    for annotator in annotators[:2]:
        rank(annotator, prompt_set)
    assert_counts_match(prompt_set, annotators)
    assert recount(prompt_set).done == 1 and recount(prompt_set).rankings == 2

    next_task_for(annotators[2], prompt_set=prompt_set)
    rows = PromptSetProgress.objects.count()
    RankingTask.objects.filter(prompt_set=prompt_set).update(round=F("round") + 1)
    assert PromptSetProgress.objects.count() == rows  # an update that moves no count appends nothing
    release_expired_leases(now=prompt_set.created_at.replace(year=2100))
    assert_counts_match(prompt_set, annotators)
    next_task_for(annotators[1], prompt_set=other)  # overlap 1: the task is now open with no free slot
    assert left_for(annotators[0], other)[0] == 1
    assert_counts_match(other, annotators)


def test_counts_follow_deletes_and_folding_keeps_the_sums():
    """Deleting a ranking, a task and a whole set is counted; folding leaves one row per set and every sum as it was."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, overlap=1)
    doomed = prompt_set_with_tasks(n_prompts=2, overlap=1)
    annotator = AnnotatorFactory()
    rank(annotator, prompt_set)
    rank(annotator, doomed)
    Ranking.objects.filter(task__prompt_set=prompt_set).delete()
    RankingTask.objects.filter(prompt_set=prompt_set).order_by("-id").first().delete()
    assert_counts_match(prompt_set, [annotator])
    doomed_id = doomed.pk
    doomed.delete()

    fold_progress()
    assert_counts_match(prompt_set, [annotator])
    assert PromptSetProgress.objects.filter(prompt_set_id=prompt_set.pk).count() == 1
    assert not PromptSetProgress.objects.filter(prompt_set_id=doomed_id).exists()


def test_counts_that_no_trigger_kept_are_caught():
    """Negative control: a count written behind the triggers' back makes the comparison fail."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, overlap=1)
    PromptSetProgress.objects.create(prompt_set_id=prompt_set.pk, done=1)
    with pytest.raises(AssertionError):
        assert_counts_match(prompt_set)
