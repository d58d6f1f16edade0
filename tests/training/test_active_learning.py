"""Active learning's refresh: a real tiny reward model scores the open tasks and their priorities are written."""

from __future__ import annotations

import math
import random

import pytest

from labeling.models import PromptSet, Ranking, RankingTask, TaskRollout
from labeling.services.queue import next_task_for
from training.models import ModelVersion, RolloutScore
from training.services.active_learning import (
    PriorityRefreshFailed,
    refresh_due_priorities,
    refresh_priorities,
    task_uncertainty,
)


def test_one_models_uncertainty_is_its_smallest_margin_through_the_logistic():
    """Hand-worked: scores 0, 1, 3 → closest pair 1 apart → 2·σ(−1) = 2/(1+e); a tie → 1; far apart → near 0."""
    assert task_uncertainty([[0.0, 1.0, 3.0]]) == pytest.approx(2 / (1 + math.e))
    assert task_uncertainty([[3.0, 0.0, 1.0]]) == pytest.approx(0.5378828427)
    assert task_uncertainty([[2.0, 2.0]]) == 1.0
    assert task_uncertainty([[0.0, 800.0]]) == pytest.approx(0.0)  # no overflow on a huge margin
    assert task_uncertainty([[0.0, math.log(3)]]) == pytest.approx(0.5)  # σ(ln 3) = 3/4 → 2·(1 − 3/4)


def test_an_ensembles_uncertainty_is_its_spread_of_preference_probabilities():
    """Two models that order a pair oppositely with margin ln 3: σ = 1/4 and 3/4, std 1/4 → 0.5; agreeing ones → 0."""
    ln3 = math.log(3)
    assert task_uncertainty([[0.0, ln3], [ln3, 0.0]]) == pytest.approx(0.5)
    assert task_uncertainty([[0.0, ln3], [0.0, ln3]]) == pytest.approx(0.0)
    # Three rollouts: the largest spread over the pairs (here the pair (0, 2)) is the task's.
    assert task_uncertainty([[0.0, 0.0, ln3], [0.0, 0.0, -ln3]]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        task_uncertainty([[1.0]])


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_base_model, tmp_path_factory):
    """A reward model (fresh scalar head) on the tiny GPT-2, saved with its tokenizer like a registered one."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    config = AutoConfig.from_pretrained(tiny_base_model, num_labels=1)
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    path = tmp_path_factory.mktemp("tiny-reward-active")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _uncertainty_set(reward_model: ModelVersion, n_prompts: int = 4) -> PromptSet:
    from tests.factories import prompt_set_with_tasks

    prompt_set = prompt_set_with_tasks(n_prompts=n_prompts, rollouts_per_task=3, overlap=1)
    prompt_set.ordering = PromptSet.Ordering.UNCERTAINTY
    prompt_set.priority_refresh_rankings = 2
    prompt_set.save()
    prompt_set.uncertainty_models.add(reward_model)
    return prompt_set


@pytest.mark.django_db
def test_a_refresh_writes_each_open_tasks_smallest_margin_from_a_real_reward_model(tiny_reward_model):
    """Scores come from the tiny reward model as trained (the judge's path); the priority of each task is
    2·σ(−smallest margin) of those scores, worked out here from the stored scores; a second refresh runs no model."""
    from labeling.services.task_builder import build_tasks
    from training.judges import reward_model as reward_model_judge
    from training.judges.build import build_judge

    reward_model = ModelVersion.objects.create(name="rm", kind=ModelVersion.Kind.REWARD, path=str(tiny_reward_model))
    prompt_set = _uncertainty_set(reward_model)

    result = refresh_priorities(prompt_set.pk)

    assert (result.tasks, result.written, result.rollouts_scored) == (4, 4, 12)
    scores = dict(RolloutScore.objects.filter(reward_model=reward_model).values_list("rollout_id", "score"))
    judge = build_judge("reward_model", {}, model_path=str(tiny_reward_model))
    for task in RankingTask.objects.filter(prompt_set=prompt_set).select_related("prompt"):
        rollouts = list(TaskRollout.objects.filter(task=task).values_list("rollout_id", "rollout__text"))
        task_scores = [scores[rid] for rid, _ in rollouts]
        # The stored scores are the reward model's own, on the judge's (training's) rendering; one at a time here,
        # batched (padded) there, hence float noise.
        judged = [judge.score(task.prompt.text, text).score for _, text in rollouts]
        assert task_scores == pytest.approx(judged, abs=1e-5)
        a, b, c = task_scores
        smallest = min(abs(a - b), abs(a - c), abs(b - c))
        assert smallest > 0  # a fresh head still tells different texts apart
        assert task.uncertainty == pytest.approx(2 / (1 + math.exp(smallest)))
    # The model stays loaded in this process (the judge's cache), and a second refresh finds every score stored.
    loads = reward_model_judge.loads
    again = refresh_priorities(prompt_set.pk)
    assert (again.written, again.rollouts_scored) == (4, 0)
    prompt_set.prompts.first().rollouts.create(text="A brand new answer.", content_hash="new")
    build_tasks(prompt_set)
    assert refresh_priorities(prompt_set.pk).rollouts_scored >= 1
    assert reward_model_judge.loads == loads  # scored by the model already loaded
    # The queue then hands out the most uncertain task first.
    from tests.factories import AnnotatorFactory

    most_uncertain = RankingTask.objects.filter(prompt_set=prompt_set, status="open").order_by("-uncertainty").first()
    assert next_task_for(AnnotatorFactory(), prompt_set=prompt_set, rng=random.Random(0)).task_id == most_uncertain.pk


@pytest.mark.django_db
def test_two_models_give_their_disagreement(tiny_reward_model):
    """With a second model whose scores are the first's negated, every pair is ordered oppositely: the priority is
    the spread 2·std(σ(m), σ(−m)) = |2σ(m) − 1| of the largest margin m, checked by hand from the stored scores."""
    first = ModelVersion.objects.create(name="rm-a", kind=ModelVersion.Kind.REWARD, path=str(tiny_reward_model))
    second = ModelVersion.objects.create(name="rm-b", kind=ModelVersion.Kind.REWARD, path=str(tiny_reward_model))
    prompt_set = _uncertainty_set(first, n_prompts=2)
    prompt_set.uncertainty_models.add(second)
    refresh_priorities(prompt_set.pk)  # scores every rollout with both (the same weights: equal scores)
    negated = [
        RolloutScore(pk=row.pk, rollout_id=row.rollout_id, reward_model=second, score=-row.score)
        for row in RolloutScore.objects.filter(reward_model=second)
    ]
    RolloutScore.objects.bulk_update(negated, ["score"])
    assert refresh_priorities(prompt_set.pk).rollouts_scored == 0  # the stored (negated) scores are what it reads
    scores = dict(RolloutScore.objects.filter(reward_model=first).values_list("rollout_id", "score"))
    for task in RankingTask.objects.filter(prompt_set=prompt_set):
        task_scores = [
            scores[rid] for rid in TaskRollout.objects.filter(task=task).values_list("rollout_id", flat=True)
        ]
        largest = max(abs(x - y) for i, x in enumerate(task_scores) for y in task_scores[i + 1 :])
        assert task.uncertainty == pytest.approx(abs(2 / (1 + math.exp(-largest)) - 1))


@pytest.mark.django_db
def test_a_model_that_cannot_score_fails_the_refresh_and_writes_nothing():
    """The judge turns a crash into "no opinion"; the refresh turns that into an error naming the model."""
    broken = ModelVersion.objects.create(name="broken", kind=ModelVersion.Kind.REWARD, path="/nowhere/at/all")
    prompt_set = _uncertainty_set(broken, n_prompts=1)
    with pytest.raises(PriorityRefreshFailed, match="'broken' could not score"):
        refresh_priorities(prompt_set.pk)
    assert not RankingTask.objects.filter(uncertainty__isnull=False).exists()
    assert not RolloutScore.objects.exists()


@pytest.mark.django_db
def test_insertion_sets_and_sets_without_a_reward_model_are_left_alone(tiny_reward_model):
    """Nothing is scored or written for a set in insertion order, nor for an uncertainty set with no model."""
    reward_model = ModelVersion.objects.create(name="rm", kind=ModelVersion.Kind.REWARD, path=str(tiny_reward_model))
    ordered = _uncertainty_set(reward_model, n_prompts=2)
    ordered.ordering = PromptSet.Ordering.INSERTION
    ordered.save()
    assert refresh_priorities(ordered.pk).written == 0
    bare = _uncertainty_set(reward_model, n_prompts=2)
    bare.uncertainty_models.clear()
    assert refresh_priorities(bare.pk).written == 0
    assert not RankingTask.objects.filter(uncertainty__isnull=False).exists()
    assert not RolloutScore.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_beat_check_queues_a_refresh_when_due_and_the_task_runs_it(tiny_reward_model):
    """Due sets are sent to the broker (the real Redis) by name; the Celery task itself, run here, writes priorities
    and moves the mark, after which the set is not due until N new rankings arrive."""
    from labeling.services.ranking import submit_ranking
    from tests.factories import AnnotatorFactory
    from training import tasks

    reward_model = ModelVersion.objects.create(name="rm", kind=ModelVersion.Kind.REWARD, path=str(tiny_reward_model))
    prompt_set = _uncertainty_set(reward_model)
    PromptSet.objects.create(name="insertion, ignored")
    assert refresh_due_priorities() == [prompt_set.pk]  # never scored: due
    assert tasks.refresh_priorities(prompt_set.pk) == 4
    assert refresh_due_priorities() == []
    annotator = AnnotatorFactory()
    for n in (1, 2):
        assignment = next_task_for(annotator, prompt_set=prompt_set)
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])
        assert refresh_due_priorities() == ([prompt_set.pk] if n == 2 else [])
    assert tasks.refresh_priorities(prompt_set.pk) == 2  # the two open tasks left
    prompt_set.refresh_from_db()
    assert prompt_set.priorities_ranking_mark == Ranking.objects.filter(task__prompt_set=prompt_set).latest("id").pk


@pytest.mark.django_db
def test_the_admin_action_queues_a_refresh_of_the_uncertainty_sets_only(client, admin_user, settings):
    """ "Refresh priorities" sends one message per uncertainty set with a model to the real broker's cpu queue, and
    says which selected sets it skipped."""
    import redis

    client.force_login(admin_user)
    reward_model = ModelVersion.objects.create(name="rm", kind=ModelVersion.Kind.REWARD, path="/nowhere")
    ordered = _uncertainty_set(reward_model, n_prompts=1)
    plain = PromptSet.objects.create(name="plain")
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("cpu")
    response = client.post(
        "/admin/labeling/promptset/",
        {"action": "refresh_priorities", "_selected_action": [ordered.pk, plain.pk], "index": 0},
        follow=True,
    )
    text = response.content.decode()
    assert "Refresh queued for 1 set(s)" in text and "1 set(s) skipped" in text
    assert broker.llen("cpu") == before + 1


@pytest.mark.django_db
def test_the_sets_admin_page_offers_reward_models_only(client, admin_user):
    """The set's change page lists registered reward models to choose from, never a policy."""
    client.force_login(admin_user)
    reward_model = ModelVersion.objects.create(name="a-reward-model", kind=ModelVersion.Kind.REWARD, path="/rm")
    ModelVersion.objects.create(name="a-policy-model", kind=ModelVersion.Kind.POLICY, path="/policy")
    prompt_set = _uncertainty_set(reward_model, n_prompts=1)
    page = client.get(f"/admin/labeling/promptset/{prompt_set.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "a-reward-model" in text and "Most uncertain first" in text
    assert "a-policy-model" not in text
