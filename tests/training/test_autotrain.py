"""Scheduled export + train, and the refresh that follows a scheduled DPO run."""

from __future__ import annotations

import pytest

from tests.training.factories import ranked_prompt_set
from training.models import AutoTrainPolicy, DatasetVersion, GenerationRun, ModelVersion, TrainingRun
from training.services.autotrain import auto_train_tick
from training.services.runs import execute_run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from training.trainers.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny"))


def test_nothing_trains_until_enough_new_rankings_arrived():
    """Below the threshold, or with the policy disabled, a tick does nothing."""
    prompt_set = ranked_prompt_set(n_prompts=4, overlap=1)  # 4 rankings
    AutoTrainPolicy.objects.create(prompt_set=prompt_set, enabled=True, min_new_rankings=5, base_model="org/model")
    assert auto_train_tick() == []
    AutoTrainPolicy.objects.update(min_new_rankings=4, enabled=False)
    assert auto_train_tick() == [] and not DatasetVersion.objects.exists()


def test_a_tick_exports_and_queues_a_run_once_per_batch_of_new_rankings():
    """At the threshold: one version, one scheduled run; the next tick waits for new rankings."""
    prompt_set = ranked_prompt_set(n_prompts=6, overlap=1)
    AutoTrainPolicy.objects.create(
        prompt_set=prompt_set,
        enabled=True,
        min_new_rankings=6,
        kind="reward",
        base_model="org/model",
        config={"max_steps": 2},
    )
    (run,) = auto_train_tick()
    assert (run.kind, run.trigger, run.status, run.config["max_steps"]) == ("reward", "schedule", "queued", 2)
    assert AutoTrainPolicy.objects.get().last_dataset_version == run.dataset_version
    assert auto_train_tick() == []


@pytest.mark.slow
def test_a_finished_scheduled_dpo_run_refreshes_the_prompt_set(tiny_base):
    """The new policy is queued to generate for the set (its rollouts will be ranked against the old ones)."""
    prompt_set = ranked_prompt_set(n_prompts=8, overlap=1)
    AutoTrainPolicy.objects.create(
        prompt_set=prompt_set,
        enabled=True,
        min_new_rankings=1,
        kind="dpo",
        base_model=str(tiny_base),
        config={"max_steps": 2, "per_device_batch_size": 4},
    )
    (run,) = auto_train_tick()
    run = execute_run(run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    generation = GenerationRun.objects.get()
    assert (generation.policy, generation.prompt_set, generation.trigger) == (
        ModelVersion.objects.get(run=run),
        prompt_set,
        "schedule",
    )


def test_new_rankings_that_add_no_pairs_do_not_retrain_the_same_data():
    """All-bad rankings move the high-water mark but give the same export: no second run, now or later."""
    from labeling.models import Ranking
    from labeling.services.queue import next_task_for
    from labeling.services.ranking import submit_ranking
    from tests.factories import AnnotatorFactory

    prompt_set = ranked_prompt_set(n_prompts=4, overlap=1)
    prompt_set.overlap = 2
    prompt_set.save()
    prompt_set.tasks.update(overlap=2, status="open")
    AutoTrainPolicy.objects.create(
        prompt_set=prompt_set, enabled=True, min_new_rankings=4, kind="reward", base_model="org/model"
    )
    assert len(auto_train_tick()) == 1
    late = AnnotatorFactory()
    while (assignment := next_task_for(late, prompt_set=prompt_set)) is not None:
        submit_ranking(annotator=late, assignment_id=assignment.pk, tiers=[], all_bad=True)
    assert Ranking.objects.filter(annotator=late).count() == 4
    assert auto_train_tick() == [] and auto_train_tick() == []
    assert TrainingRun.objects.count() == 1
    assert AutoTrainPolicy.objects.get().last_ranking_id == Ranking.objects.latest("id").pk
