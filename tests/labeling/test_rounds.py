"""A new round of generated rollouts: rollouts and tasks land together, duplicates collapse, rounds count up."""

from __future__ import annotations

import pytest

from labeling.models import RankingTask, Rollout
from labeling.services import rounds
from labeling.services.rounds import add_generated_round, next_round_number
from labeling.services.task_builder import build_tasks
from tests.factories import PromptFactory, PromptSetFactory, RolloutFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def prompt_set_with_old_rollouts():
    """Two prompts with two 'old' rollouts each, already in round-0 tasks."""
    prompt_set = PromptSetFactory(rollouts_per_task=4, overlap=1)
    prompts = PromptFactory.create_batch(2, prompt_set=prompt_set)
    for prompt in prompts:
        RolloutFactory.create_batch(2, prompt=prompt, policy="old")
    build_tasks(prompt_set)
    return prompt_set, [prompt.pk for prompt in prompts]


def test_a_round_adds_rollouts_and_tasks_mixing_them_with_the_old_policy(prompt_set_with_old_rollouts):
    """Each task of the new round holds new rollouts beside the old policy's, and says which round it is."""
    prompt_set, prompt_ids = prompt_set_with_old_rollouts
    added = add_generated_round(
        prompt_set=prompt_set,
        policy="new",
        samples=[(prompt_ids[0], ["a", "b"]), (prompt_ids[1], ["c", "d"])],
        generation={"temperature": 1.0},
        compare_with="old",
    )
    assert (added.round_number, added.rollouts_created, added.duplicates_collapsed) == (1, 4, 0)
    tasks = RankingTask.objects.filter(prompt_set=prompt_set, round=1)
    assert tasks.count() == added.tasks_created == 2
    for task in tasks:
        assert set(task.rollouts.values_list("policy", flat=True)) == {"new", "old"}
    assert Rollout.objects.get(text="a").generation == {"temperature": 1.0, "round": 1}


def test_identical_samples_collapse_within_the_round_and_against_stored_rollouts(prompt_set_with_old_rollouts):
    """A text sampled twice, or already stored for the policy, becomes no second rollout; empty texts are dropped."""
    prompt_set, prompt_ids = prompt_set_with_old_rollouts
    add_generated_round(prompt_set=prompt_set, policy="new", samples=[(prompt_ids[0], ["same"])], generation={})
    added = add_generated_round(
        prompt_set=prompt_set, policy="new", samples=[(prompt_ids[0], ["same", "same", "", "other"])], generation={}
    )
    assert (added.round_number, added.rollouts_created, added.duplicates_collapsed) == (2, 1, 2)
    assert Rollout.objects.filter(policy="new").count() == 2


def test_a_round_that_fails_while_forming_tasks_leaves_no_rollouts(prompt_set_with_old_rollouts, monkeypatch):
    """Rollouts and tasks are written in one transaction: a failure in between writes neither."""
    prompt_set, prompt_ids = prompt_set_with_old_rollouts
    before = (Rollout.objects.count(), RankingTask.objects.count())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while building tasks")

    monkeypatch.setattr(rounds, "build_tasks", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        add_generated_round(prompt_set=prompt_set, policy="new", samples=[(prompt_ids[0], ["a", "b"])], generation={})
    assert (Rollout.objects.count(), RankingTask.objects.count()) == before
    assert next_round_number(prompt_set) == 1


def test_rollouts_for_another_sets_prompt_are_refused(prompt_set_with_old_rollouts):
    """A round adds rollouts to the set's own prompts only, and writes nothing when asked otherwise."""
    prompt_set, prompt_ids = prompt_set_with_old_rollouts
    stranger = PromptFactory()
    with pytest.raises(ValueError, match="not in"):
        add_generated_round(
            prompt_set=prompt_set,
            policy="new",
            samples=[(prompt_ids[0], ["a"]), (stranger.pk, ["b"])],
            generation={},
        )
    assert not Rollout.objects.filter(policy="new").exists()
