"""The queue hands out tasks within their overlap, once per annotator, and recovers abandoned leases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.models import Assignment, RankingTask
from labeling.services import queue
from labeling.services.queue import next_task_for, release_expired_leases, skip_assignment
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, prompt_set_with_tasks
from webapp import clock

pytestmark = pytest.mark.django_db


def rank_it(assignment: Assignment) -> None:
    submit_ranking(
        annotator=assignment.annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order]
    )


def test_an_annotator_keeps_the_task_they_hold_until_they_submit():
    """Asking again returns the live lease instead of a second task."""
    prompt_set = prompt_set_with_tasks(n_prompts=3)
    annotator = AnnotatorFactory()
    first = next_task_for(annotator, prompt_set=prompt_set)
    assert next_task_for(annotator, prompt_set=prompt_set).pk == first.pk
    rank_it(first)
    second = next_task_for(annotator, prompt_set=prompt_set)
    assert second.task_id != first.task_id


def test_a_task_is_never_leased_beyond_its_overlap():
    """With overlap 2, a third annotator gets a different task, and none once all slots are taken."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=2)
    a, b, c = AnnotatorFactory.create_batch(3)
    assert next_task_for(a, prompt_set=prompt_set) is not None
    assert next_task_for(b, prompt_set=prompt_set) is not None
    assert next_task_for(c, prompt_set=prompt_set) is None
    task = RankingTask.objects.get()
    assert task.active_count == 2


def test_an_annotator_never_gets_a_task_they_already_ranked():
    """After ranking every task, an annotator's queue is empty even though slots remain for others."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, overlap=3)
    annotator = AnnotatorFactory()
    seen = set()
    while (assignment := next_task_for(annotator, prompt_set=prompt_set)) is not None:
        assert assignment.task_id not in seen
        seen.add(assignment.task_id)
        rank_it(assignment)
    assert len(seen) == 2


def test_started_tasks_are_finished_before_fresh_ones():
    """The second annotator is handed the task the first one started."""
    prompt_set = prompt_set_with_tasks(n_prompts=4, overlap=2)
    a, b = AnnotatorFactory.create_batch(2)
    first = next_task_for(a, prompt_set=prompt_set)
    assert next_task_for(b, prompt_set=prompt_set).task_id == first.task_id


def test_expired_leases_return_to_the_pool(monkeypatch):
    """An abandoned lease frees its slot once it expires, and the late submit is refused."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=1)
    a, b = AnnotatorFactory.create_batch(2)
    abandoned = next_task_for(a, prompt_set=prompt_set)
    assert next_task_for(b, prompt_set=prompt_set) is None

    later = timezone.now() + queue.lease_duration() + timedelta(seconds=1)
    monkeypatch.setattr(clock, "now", lambda: later)
    taken_over = next_task_for(b, prompt_set=prompt_set)
    assert taken_over is not None and taken_over.task_id == abandoned.task_id
    abandoned.refresh_from_db()
    assert abandoned.status == Assignment.Status.EXPIRED
    assert RankingTask.objects.get().active_count == 1


def test_release_expired_leases_does_nothing_when_none_expired():
    """Live leases are left alone."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    next_task_for(AnnotatorFactory(), prompt_set=prompt_set)
    assert release_expired_leases() == 0
    assert Assignment.objects.get().status == Assignment.Status.LEASED


def test_a_skipped_task_goes_to_someone_else_but_not_back_to_the_skipper():
    """Skipping frees the slot for others; the skipper is not offered the task again."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=1)
    a, b = AnnotatorFactory.create_batch(2)
    skipped = next_task_for(a, prompt_set=prompt_set)
    skip_assignment(annotator=a, assignment_id=skipped.pk)
    assert next_task_for(a, prompt_set=prompt_set) is None
    assert next_task_for(b, prompt_set=prompt_set).task_id == skipped.task_id


def test_paused_sets_hand_out_nothing():
    """Pausing a set stops new leases."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, is_paused=True)
    assert next_task_for(AnnotatorFactory(), prompt_set=prompt_set) is None


def test_rollouts_are_shown_in_a_per_assignment_random_order():
    """Display orders are permutations of the task's rollouts, recorded per assignment, and vary."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=6, overlap=12)
    orders = set()
    for annotator in AnnotatorFactory.create_batch(12):
        assignment = next_task_for(annotator, prompt_set=prompt_set)
        assert sorted(assignment.display_order) == sorted(
            assignment.task.task_rollouts.values_list("rollout_id", flat=True)
        )
        orders.add(tuple(assignment.display_order))
    assert len(orders) > 1


def test_the_schema_refuses_a_slot_beyond_overlap():
    """The CHECK constraint stands behind the conditional update."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=1)
    task = RankingTask.objects.get(prompt_set=prompt_set)
    with pytest.raises(IntegrityError), transaction.atomic():
        RankingTask.objects.filter(pk=task.pk).update(active_count=2)


def test_the_schema_refuses_a_second_assignment_of_one_task_to_one_annotator():
    """UNIQUE(task, annotator) stands behind the queue's exclusion."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=3)
    annotator = AnnotatorFactory()
    first = next_task_for(annotator, prompt_set=prompt_set)
    rank_it(first)
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(
            task=first.task,
            annotator=annotator,
            display_order=[],
            leased_at=timezone.now(),
            leased_until=timezone.now(),
        )


def test_an_annotator_whose_lease_lapsed_can_take_the_task_again(monkeypatch):
    """A lapsed lease is not a skip: with overlap 2 and two annotators the task still completes."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=2)
    a, b = AnnotatorFactory.create_batch(2)
    lapsed = next_task_for(a, prompt_set=prompt_set)
    rank_it(next_task_for(b, prompt_set=prompt_set))
    later = timezone.now() + queue.lease_duration() + timedelta(seconds=1)
    monkeypatch.setattr(clock, "now", lambda: later)
    again = next_task_for(a, prompt_set=prompt_set)
    assert again.pk == lapsed.pk and again.status == Assignment.Status.LEASED and again.leased_until > later
    rank_it(again)
    task = RankingTask.objects.get()
    assert (task.status, task.completed_count, task.active_count) == (RankingTask.Status.DONE, 2, 2)


def test_opening_another_set_does_not_burn_the_task_held_in_the_first():
    """The held task goes back to the pool, and to this annotator too."""
    first_set, second_set = prompt_set_with_tasks(n_prompts=1, overlap=1), prompt_set_with_tasks(n_prompts=1, overlap=1)
    annotator = AnnotatorFactory()
    held = next_task_for(annotator, prompt_set=first_set)
    next_task_for(annotator, prompt_set=second_set)
    assert RankingTask.objects.get(prompt_set=first_set).active_count == 0
    skip_assignment(annotator=annotator, assignment_id=Assignment.objects.get(task__prompt_set=second_set).pk)
    assert next_task_for(annotator, prompt_set=first_set).task_id == held.task_id


def test_an_own_lapsed_lease_outside_the_reap_batch_does_not_hide_the_queue(monkeypatch):
    """Even if the global reaper has not reached it, the annotator's own lapsed lease is released first."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, overlap=1)
    annotator = AnnotatorFactory()
    next_task_for(annotator, prompt_set=prompt_set)
    monkeypatch.setattr(queue, "_REAP_BATCH", 0)
    later = timezone.now() + queue.lease_duration() + timedelta(seconds=1)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert next_task_for(annotator, prompt_set=prompt_set) is not None
