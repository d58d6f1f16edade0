"""Generation: a policy's samples enter the queue all at once, duplicates collapse, tasks mix new and old."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.models import RankingTask, Rollout
from labeling.services import rounds
from labeling.services.importing import import_file
from labeling.services.task_builder import mixed_groups
from tests.factories import PromptSetFactory
from training.models import GenerationRun, ModelVersion
from training.services.generation import execute_generation, start_generation
from training.services.lifecycle import RunRejected

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory) -> Path:
    from training.trainers.pretrain import pretrain_causal_lm
    from training.trainers.tiny import DEFAULT_CORPUS, build_tiny_causal_lm

    # A few steps of language modelling so greedy decoding emits words rather than special tokens.
    path = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-policy"))
    pretrain_causal_lm(path, [f"Tell me about rain.\n{s}" for s in DEFAULT_CORPUS[:64]], steps=40)
    return path


@pytest.fixture
def old_and_new(tiny_policy_dir, settings):
    """A set whose prompts have two 'old' rollouts each, and a registered child policy of 'old'."""
    # The tiny policy's few-token samples are cut off at max_new_tokens; these tests count rounds and duplicates, so
    # the quality gate (tests/training/test_rollout_quality.py) is off here.
    settings.PREFLOOP_ROLLOUT_QUALITY_GATE = False
    old = ModelVersion.objects.create(name="old", kind=ModelVersion.Kind.POLICY, path="/nowhere")
    new = ModelVersion.objects.create(name="new", kind=ModelVersion.Kind.POLICY, path=str(tiny_policy_dir), parent=old)
    prompt_set = PromptSetFactory(rollouts_per_task=4, overlap=1)
    lines = [
        json.dumps(
            {"prompt": f"Tell me about {topic}.\n", "responses": [f"{topic} one", f"{topic} two"], "policy": "old"}
        )
        for topic in ("rain", "bread", "trains")
    ]
    import_file(prompt_set=prompt_set, data="\n".join(lines))
    return prompt_set, old, new


def test_a_generation_run_adds_rollouts_and_mixed_tasks_in_a_new_round(old_and_new):
    """Each new task holds the new policy's samples beside the old policy's rollouts."""
    prompt_set, _old, new = old_and_new
    run = start_generation(
        policy=new, prompt_set=prompt_set, settings={"n_samples": 2, "max_new_tokens": 8, "seed": 1}, dispatch=False
    )
    assert run.compare_with == "old"
    run = execute_generation(run.pk)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert run.round == 1 and run.prompts_done == 3
    assert run.rollouts_created + run.duplicates_collapsed == 6
    new_tasks = RankingTask.objects.filter(prompt_set=prompt_set, round=1)
    assert new_tasks.count() == run.tasks_created > 0
    for task in new_tasks:
        assert set(task.rollouts.values_list("policy", flat=True)) == {"new", "old"}
    stored = Rollout.objects.filter(policy="new").first()
    assert stored.generation["n_samples"] == 2 and stored.generation["round"] == 1


def test_greedy_duplicates_collapse_into_one_rollout(old_and_new):
    """Temperature 0 gives identical samples: one rollout per prompt, the rest counted as collapsed."""
    prompt_set, _, new = old_and_new
    run = execute_generation(
        start_generation(
            policy=new,
            prompt_set=prompt_set,
            settings={"n_samples": 4, "temperature": 0.0, "max_new_tokens": 6},
            dispatch=False,
        ).pk
    )
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert (run.rollouts_created, run.duplicates_collapsed) == (3, 9)
    assert Rollout.objects.filter(policy="new").count() == 3


def test_a_generation_that_fails_while_writing_leaves_nothing_behind(old_and_new, monkeypatch):
    """If forming tasks fails, the rollouts written in the same transaction are rolled back too."""
    prompt_set, _, new = old_and_new
    before = (Rollout.objects.count(), RankingTask.objects.count())

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while building tasks")

    monkeypatch.setattr(rounds, "build_mixed_tasks", broken)
    run = execute_generation(
        start_generation(
            policy=new, prompt_set=prompt_set, settings={"n_samples": 2, "max_new_tokens": 6}, dispatch=False
        ).pk
    )
    assert run.status == GenerationRun.Status.FAILED and "disk full" in run.error
    assert (Rollout.objects.count(), RankingTask.objects.count()) == before


def test_a_missing_model_fails_the_run_cleanly(old_and_new):
    """Bad weights are a FAILED run with the reason, not a crashed worker."""
    prompt_set, old, _ = old_and_new
    run = execute_generation(start_generation(policy=old, prompt_set=prompt_set, dispatch=False).pk)
    assert run.status == GenerationRun.Status.FAILED and run.error
    assert not Rollout.objects.filter(policy="old", generation__has_key="round").exists()


def test_bad_generation_settings_are_refused_before_queueing(old_and_new):
    """Validation happens at the request, not in the worker."""
    prompt_set, _, new = old_and_new
    with pytest.raises(RunRejected, match="top_p"):
        start_generation(policy=new, prompt_set=prompt_set, settings={"top_p": 1.5}, dispatch=False)
    with pytest.raises(RunRejected, match="Unknown generation setting"):
        start_generation(policy=new, prompt_set=prompt_set, settings={"temprature": 1.0}, dispatch=False)
    assert not GenerationRun.objects.exists()


def test_mixed_groups_pair_new_rollouts_with_old_ones():
    """Half new, half old; every new rollout used once; old ones cycled."""
    assert mixed_groups([1, 2, 3, 4], [10, 11], 4) == [[1, 2, 10, 11], [3, 4, 10, 11]]
    assert mixed_groups([1, 2, 3], [10], 4) == [[1, 2, 10], [3, 10]]
    assert mixed_groups([1, 2], [], 4) == [[1, 2]]
