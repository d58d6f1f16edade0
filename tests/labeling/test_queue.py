"""The queue hands out tasks within their overlap, once per annotator, and recovers abandoned leases."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import F
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


# --- lock conflicts on Postgres ------------------------------------------------------------------------------------


class _RivalTransaction(threading.Thread):
    """Another connection that holds an uncommitted live lease for the annotator, the way a second request would.

    Its uncommitted row makes the queue's INSERT wait on the one-live-lease index. Once that wait shows in
    `pg_locks`, it optionally asks for the row lock the queue holds on `contested_task_id`, closing a lock cycle
    that Postgres breaks by aborting one side, then rolls back.
    """

    def __init__(self, *, annotator, leased_task_id: int, waiter_pid: int, contested_task_id: int | None) -> None:
        super().__init__(daemon=True)
        self.annotator, self.leased_task_id = annotator, leased_task_id
        self.waiter_pid, self.contested_task_id = waiter_pid, contested_task_id
        self.holding = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    # Long enough that the queue's side (timeout below) always detects the cycle first.
                    cursor.execute("SET LOCAL deadlock_timeout = '10s'")
                now = timezone.now()
                Assignment.objects.create(
                    task_id=self.leased_task_id,
                    annotator=self.annotator,
                    display_order=[],
                    leased_at=now,
                    leased_until=now + timedelta(minutes=5),
                )
                self.holding.set()
                self._wait_until_the_queue_waits()
                if self.contested_task_id is not None:
                    RankingTask.objects.filter(pk=self.contested_task_id).update(overlap=F("overlap"))
                else:
                    self.release.wait(timeout=30)
                transaction.set_rollback(True)
        except BaseException as error:
            self.error = error
        finally:
            connection.close()

    def _wait_until_the_queue_waits(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", [self.waiter_pid])
                if cursor.fetchone():
                    return
            time.sleep(0.02)
        raise TimeoutError("the queue never waited on the rival's lease")


@pytest.fixture
def backend(transactional_db):
    """This thread's Postgres backend pid, with a short deadlock_timeout so a lock cycle is broken on our side."""
    with connection.cursor() as cursor:
        cursor.execute("SET deadlock_timeout = '200ms'")
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    yield pid
    with connection.cursor() as cursor:
        cursor.execute("RESET deadlock_timeout")
        cursor.execute("RESET lock_timeout")


def test_a_deadlock_inside_the_take_is_retried_and_the_annotator_still_gets_one_task(backend, monkeypatch):
    """Postgres aborts the take as a deadlock victim; the queue retries and leases exactly one free task."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, overlap=1)
    first, second, third = RankingTask.objects.filter(prompt_set=prompt_set).order_by("id")
    annotator = AnnotatorFactory()
    attempts: list[str] = []
    take_one = queue._take_one

    def recording_take_one(*args, **kwargs):
        try:
            outcome = take_one(*args, **kwargs)
        except Exception as error:
            attempts.append(f"{error.__class__.__name__}: {error}".splitlines()[0])
            raise
        attempts.append("taken")
        return outcome

    monkeypatch.setattr(queue, "_take_one", recording_take_one)
    # The rival's lease sits on the last task; the queue takes the first (lowest id) and waits on the lease index
    # while holding that task's row; the rival then wants the same row: a cycle.
    rival = _RivalTransaction(
        annotator=annotator, leased_task_id=third.pk, waiter_pid=backend, contested_task_id=first.pk
    )
    rival.start()
    assert rival.holding.wait(timeout=30)
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    rival.join(timeout=30)

    assert rival.error is None, rival.error
    assert attempts[0] == "OperationalError: deadlock detected" and attempts[-1] == "taken"
    # Which free task the retry takes depends on whether the rival has rolled back yet; exactly one, either way.
    assert assignment is not None and assignment.task_id in (first.pk, second.pk)
    assert list(Assignment.objects.values_list("annotator", "task", "status")) == [
        (annotator.pk, assignment.task_id, Assignment.Status.LEASED)
    ]
    counts = dict(RankingTask.objects.filter(prompt_set=prompt_set).values_list("id", "active_count"))
    assert counts == {task.pk: int(task.pk == assignment.task_id) for task in (first, second, third)}


def test_a_lock_error_that_is_not_a_deadlock_is_raised_not_retried(backend):
    """A lock timeout is a real failure: the caller sees it, and the aborted take left nothing behind."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, overlap=1)
    annotator = AnnotatorFactory()
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
    rival = _RivalTransaction(
        annotator=annotator,
        leased_task_id=RankingTask.objects.order_by("id").last().pk,
        waiter_pid=backend,
        contested_task_id=None,
    )
    rival.start()
    assert rival.holding.wait(timeout=30)
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            next_task_for(annotator, prompt_set=prompt_set)
    finally:
        rival.release.set()
        rival.join(timeout=30)
    assert rival.error is None, rival.error
    assert not Assignment.objects.exists()
    assert set(RankingTask.objects.values_list("active_count", flat=True)) == {0}
