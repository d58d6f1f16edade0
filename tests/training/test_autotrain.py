"""Scheduled export + train, and the refresh that follows a scheduled DPO run."""

from __future__ import annotations

import pytest

from tests.training.factories import ranked_prompt_set
from training.models import AutoTrainPolicy, DatasetVersion, GenerationRun, ModelVersion, TrainingRun
from training.services.autotrain import auto_train_tick
from training.services.export_worker import execute_export
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


def test_a_tick_queues_an_export_whose_version_queues_the_run_once_per_batch_of_new_rankings():
    """At the threshold the tick only queues an export (no lock held while it builds); the export queues the run."""
    prompt_set = ranked_prompt_set(n_prompts=6, overlap=1)
    policy = AutoTrainPolicy.objects.create(
        prompt_set=prompt_set,
        enabled=True,
        min_new_rankings=6,
        kind="reward",
        base_model="org/model",
        config={"max_steps": 2},
    )
    (export,) = auto_train_tick()
    assert export.status == "queued" and export.then_run == {"auto_train_policy": policy.pk}
    assert not DatasetVersion.objects.exists()  # built later, by a worker, outside the tick's transaction
    assert auto_train_tick() == []  # the mark moved when the export was queued
    export = execute_export(export.pk)
    run = TrainingRun.objects.get()
    assert (run.kind, run.trigger, run.status, run.config["max_steps"]) == ("reward", "schedule", "queued", 2)
    assert AutoTrainPolicy.objects.get().last_dataset_version == run.dataset_version == export.dataset_version


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
    (export,) = auto_train_tick()
    execute_export(export.pk)
    run = execute_run(TrainingRun.objects.get().pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    generation = GenerationRun.objects.get()
    assert (generation.policy, generation.prompt_set, generation.trigger) == (
        ModelVersion.objects.get(run=run),
        prompt_set,
        "schedule",
    )


def test_new_rankings_that_add_no_pairs_do_not_retrain_the_same_data():
    """All-bad rankings move the high-water mark but export the same content: no second run, now or later."""
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
    (first,) = auto_train_tick()
    execute_export(first.pk)
    late = AnnotatorFactory()
    while (assignment := next_task_for(late, prompt_set=prompt_set)) is not None:
        submit_ranking(annotator=late, assignment_id=assignment.pk, tiers=[], all_bad=True)
    assert Ranking.objects.filter(annotator=late).count() == 4
    (second,) = auto_train_tick()
    assert execute_export(second.pk).reused and auto_train_tick() == []
    assert TrainingRun.objects.count() == 1 and DatasetVersion.objects.count() == 1
    assert AutoTrainPolicy.objects.get().last_ranking_id == Ranking.objects.latest("id").pk
