"""Win rates of policy versions: assembled from human rankings and reward-model scores into one report."""

from __future__ import annotations

import random

import pytest

from labeling.models import Rollout
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from labeling.services.task_builder import build_tasks
from tests.factories import AdminFactory, AnnotatorFactory, PromptFactory, PromptSetFactory, RolloutFactory
from training.models import ModelVersion, RolloutScore
from training.services.winrates import win_rate_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def ranked_two_policies():
    """Six prompts, each with one rollout of policy 'a' and one of 'b'; two annotators always prefer 'a'."""
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=2)
    for prompt in PromptFactory.create_batch(6, prompt_set=prompt_set):
        RolloutFactory(prompt=prompt, policy="a")
        RolloutFactory(prompt=prompt, policy="b")
    build_tasks(prompt_set)
    for annotator in AnnotatorFactory.create_batch(2):
        while (assignment := next_task_for(annotator, prompt_set=prompt_set, rng=random.Random(0))) is not None:
            policy_of = dict(assignment.task.rollouts.values_list("id", "policy"))
            order = sorted(assignment.display_order, key=lambda rollout_id: policy_of[rollout_id] != "a")
            submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[rid] for rid in order])
    return prompt_set


def _score(reward_model: ModelVersion, prompt_set, points: dict[str, float]) -> None:
    for rollout in Rollout.objects.filter(prompt__prompt_set=prompt_set):
        RolloutScore.objects.create(rollout=rollout, reward_model=reward_model, score=points[rollout.policy])


def test_the_report_ranks_the_preferred_policy_first_by_humans_and_by_the_reward_model(ranked_two_policies):
    """Humans and a reward model that agree both say 'a' beats 'b', with every comparison counted."""
    judge = ModelVersion.objects.create(name="rm-1", kind=ModelVersion.Kind.REWARD, path="/nowhere")
    _score(judge, ranked_two_policies, {"a": 1.0, "b": 0.0})

    report = win_rate_report(ranked_two_policies, samples=40)

    assert [rating.item for rating in report.ratings] == ["a", "b"]
    assert report.comparisons == 12
    head_to_head = {(rate.a, rate.b): rate for rate in report.win_rates}
    assert (head_to_head["a", "b"].wins, head_to_head["a", "b"].losses) == (12, 0)
    automatic = {(rate.new, rate.old, rate.reward_model): rate for rate in report.automatic}
    assert set(automatic) == {("a", "b", "rm-1"), ("b", "a", "rm-1")}
    assert automatic["a", "b", "rm-1"].rate == 1.0 and automatic["b", "a", "rm-1"].rate == 0.0
    assert set(report.strength_by_round) == {"a", "b"}
    assert report.strength_by_round["a"][0][1] > report.strength_by_round["b"][0][1]


def test_a_reward_model_that_scored_another_set_only_is_left_out(ranked_two_policies):
    """A judge shows up for a set only when it scored both policies' rollouts there."""
    elsewhere = PromptSetFactory()
    for policy in ("a", "b"):
        RolloutFactory(prompt=PromptFactory(prompt_set=elsewhere), policy=policy)
    judge = ModelVersion.objects.create(name="rm-elsewhere", kind=ModelVersion.Kind.REWARD, path="/nowhere")
    _score(judge, elsewhere, {"a": 1.0, "b": 0.0})

    assert win_rate_report(ranked_two_policies, samples=20).automatic == []


def test_the_win_rate_page_shows_the_report(ranked_two_policies, client):
    """The page is a thin view over the report: ratings, head-to-head rows and the chart."""
    client.force_login(AdminFactory())
    page = client.get(f"/training/win-rates/{ranked_two_policies.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "No reward-model scores yet." in html
    assert client.get("/training/win-rates/999999/").status_code == 404
