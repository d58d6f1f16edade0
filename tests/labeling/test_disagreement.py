"""Dynamic overlap: a completed task whose rankings disagree gets one more annotator, never beyond the set's cap,
then goes to adjudication (labeling.services.disagreement)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from labeling.models import PromptSet, RankingTask
from labeling.services.agreement import RankingRecord
from labeling.services.disagreement import task_agreement
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, PromptSetFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db


def one_task_set(**settings) -> tuple:
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3, overlap=2, **settings)
    return prompt_set, RankingTask.objects.get(prompt_set=prompt_set)


def rank(prompt_set, order: str = "up", *, all_bad: bool = False) -> bool:
    """A new annotator takes the set's next task and ranks its rollouts by id ("up"), reversed ("down"), or the
    first two tied ("tie"); False when the queue gives them nothing."""
    annotator = AnnotatorFactory()
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    if assignment is None:
        return False
    ids = sorted(assignment.display_order)
    tiers = {
        "up": [[rid] for rid in ids],
        "down": [[rid] for rid in reversed(ids)],
        "tie": [ids[:2], ids[2:]],
        "none": [],
    }[order]
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=tiers, all_bad=all_bad)
    return True


def test_agreeing_rankings_do_not_raise_the_overlap():
    """Two identical orders: the task is done at its overlap, with agreement 1, and not flagged."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "up")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.agreement, task.needs_adjudication) == ("done", 2, 1.0, False)
    assert not rank(prompt_set, "down")  # nothing more to hand out


def test_disagreeing_rankings_raise_the_overlap_by_one():
    """Opposite orders: the task reopens with one more slot, and a third annotator is given it."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.agreement, task.needs_adjudication) == ("open", 3, 0.0, False)
    assert (task.active_count, task.completed_count) == (2, 2)
    assert rank(prompt_set, "up")
    task.refresh_from_db()
    assert task.completed_count == 3


def test_the_overlap_never_goes_beyond_the_cap_and_the_task_goes_to_adjudication():
    """Still disagreeing at max_overlap, the task is done and flagged; nobody else is handed it."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=3)
    assert rank(prompt_set, "up") and rank(prompt_set, "down") and rank(prompt_set, "up")
    task.refresh_from_db()
    # Pairs of rankings: up/down 0, down/up 0, up/up 1 → a third.
    assert (task.status, task.overlap, task.needs_adjudication) == ("done", 3, True)
    assert task.agreement == pytest.approx(1 / 3)
    assert not rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.overlap, task.active_count, task.completed_count) == (3, 3, 3)


def test_a_third_ranking_that_settles_it_closes_the_task():
    """At a lower threshold the third ranking brings agreement over it: done, not flagged, overlap 3."""
    prompt_set, task = one_task_set(disagreement_threshold=0.3, max_overlap=5)
    assert rank(prompt_set, "up") and rank(prompt_set, "down") and rank(prompt_set, "up")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.needs_adjudication) == ("done", 3, False)


def test_without_a_max_overlap_a_disagreeing_task_goes_straight_to_adjudication():
    """No cap above the overlap: no extra annotator, the task is flagged at once."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.needs_adjudication) == ("done", 2, True)


def test_a_set_without_a_threshold_is_left_alone():
    """Negative control: the same opposite orders in a set without a threshold change nothing."""
    prompt_set, task = one_task_set(max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.agreement, task.needs_adjudication) == ("done", 2, None, False)


def test_the_first_ranking_of_a_task_is_not_checked():
    """The check waits for the task to complete: one ranking of two leaves it open at its overlap."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.agreement) == ("open", 2, None)


def test_a_tie_against_an_order_scores_half():
    """The agreement module's scoring: one tied pair against an ordered one is ½, the other two pairs agree."""
    prompt_set, task = one_task_set(disagreement_threshold=0.9, max_overlap=2)
    assert rank(prompt_set, "up") and rank(prompt_set, "tie")
    task.refresh_from_db()
    assert task.agreement == pytest.approx((0.5 + 1 + 1) / 3)
    assert task.needs_adjudication


def test_an_all_bad_ranking_without_an_order_is_not_a_disagreement():
    """A ranking with no order says nothing about order: one ordered ranking alone cannot disagree."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "none", all_bad=True)
    task.refresh_from_db()
    assert (task.status, task.overlap, task.agreement, task.needs_adjudication) == ("done", 2, None, False)


def test_gold_tasks_are_not_reopened():
    """A known-answer task checks annotators; its rankings disagreeing is not a reason to ask more people."""
    # A gold task is offered only where the set mixes some in (labeling.services.gold).
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4, gold_rate=0.5)
    ids = sorted(task.rollouts.values_list("id", flat=True))
    RankingTask.objects.filter(pk=task.pk).update(gold={"best": ids[0]})
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.status, task.overlap, task.needs_adjudication) == ("done", 2, False)


def test_task_agreement_is_the_agreement_modules_pairwise_rate():
    """The trigger's number is the report's pairwise agreement over the task's rankings (reused, not redone)."""
    up, down = [[1], [2], [3]], [[3], [2], [1]]
    records = [RankingRecord(7, 1, annotator, tiers) for annotator, tiers in ((1, up), (2, down), (3, up))]
    assert task_agreement(records) == pytest.approx(1 / 3)
    assert task_agreement(records[:1]) is None


def test_a_max_overlap_below_the_overlap_and_a_threshold_beyond_one_are_refused():
    """The form's validation names the problem; the database's CHECKs stand behind it."""
    with pytest.raises(ValidationError, match="The max overlap must be at least the overlap"):
        PromptSet(name="capped", overlap=3, max_overlap=2).full_clean()
    with pytest.raises(ValidationError, match="disagreement_threshold"):
        PromptSet(name="strict", disagreement_threshold=1.5).full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        PromptSetFactory(overlap=3, max_overlap=2)
