"""Generation: a policy's samples enter the queue all at once, duplicates collapse, tasks mix new and old."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.models import RankingTask, Rollout
from labeling.services import rounds
from labeling.services.importing import import_file
from labeling.services.rollout_finish import is_cut_off, may_be_chosen
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


# --- explicit sampling, recorded with each rollout with how it finished ---------------------------------------------


def test_each_rollout_records_every_sampling_setting_and_how_it_finished(old_and_new):
    """temperature, top_p, top_k, repetition_penalty, max_new_tokens and seed are stored, with "stop" or "length"."""
    prompt_set, _, new = old_and_new
    run = execute_generation(
        start_generation(
            policy=new,
            prompt_set=prompt_set,
            settings={"n_samples": 1, "temperature": 0.0, "max_new_tokens": 40},
            dispatch=False,
        ).pk
    )
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    rollouts = list(Rollout.objects.filter(policy="new"))
    assert len(rollouts) == 3
    explicit = {
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 40,
        "seed": 0,
        "do_sample": False,
    }
    for rollout in rollouts:
        assert explicit.items() <= rollout.generation.items()
        assert rollout.generation["stop_token_ids"] and rollout.generation["generation_run"] == run.pk
    # The pretrained toy ends "rain" with EOS within 40 tokens and loops on another prompt until it is cut off.
    assert {r.generation["finish_reason"] for r in rollouts} == {"stop", "length"}


def test_samples_cut_off_at_max_new_tokens_are_marked_length(old_and_new):
    """Two new tokens end no sentence: every rollout says it was cut off."""
    prompt_set, _, new = old_and_new
    run = execute_generation(
        start_generation(
            policy=new, prompt_set=prompt_set, settings={"n_samples": 2, "max_new_tokens": 2, "seed": 5}, dispatch=False
        ).pk
    )
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    generated = Rollout.objects.filter(policy="new")
    assert generated.exists()
    assert all(is_cut_off(rollout.generation) for rollout in generated)
    assert all(not may_be_chosen(rollout.generation) for rollout in generated)


def test_model_generation_defaults_never_change_what_is_sampled(tiny_policy_dir, tmp_path):
    """A checkpoint whose generation_config.json sets top_k, repetition_penalty, n-gram and length rules samples the
    same as a clean one under the same explicit settings; plain `generate` (negative control) does not."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.trainers.generation import GenerationConfig, generate

    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny_policy_dir, poisoned)
    defaults = json.loads((poisoned / "generation_config.json").read_text())
    defaults |= {"top_k": 1, "repetition_penalty": 1.9, "no_repeat_ngram_size": 1, "min_new_tokens": 6}
    (poisoned / "generation_config.json").write_text(json.dumps(defaults))
    prompts = ["Tell me about rain.\n", "Tell me about bread.\n"]
    config = GenerationConfig(n_samples=2, max_new_tokens=10, seed=3, backend="hf")
    clean_result = generate(model_path=str(tiny_policy_dir), prompts=prompts, config=config)
    poisoned_result = generate(model_path=str(poisoned), prompts=prompts, config=config)
    assert poisoned_result.samples == clean_result.samples
    assert poisoned_result.finish_reasons == clean_result.finish_reasons

    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    inputs = tokenizer(prompts[0], return_tensors="pt")
    plain = []
    for path in (tiny_policy_dir, poisoned):
        torch.manual_seed(3)
        model = AutoModelForCausalLM.from_pretrained(path)
        plain.append(model.generate(**inputs, do_sample=True, temperature=1.0, max_new_tokens=10).tolist())
    assert plain[0] != plain[1]


def test_a_finish_is_stop_at_the_first_stop_id_and_length_without_one():
    """Tokens after the stop id are padding; a row with no stop id ran out of max_new_tokens."""
    from training.trainers.generation import finish_of

    assert finish_of([5, 6, 2, 2, 2], stop_ids=[2]) == (3, "stop")
    assert finish_of([5, 9, 6], stop_ids=[2, 9]) == (2, "stop")
    assert finish_of([5, 6, 7], stop_ids=[2]) == (3, "length")


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"temperature": 6.0}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"repetition_penalty": 3.0}, "repetition_penalty"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"seed": -1}, "seed"),
        ({"n_samples": True}, "n_samples"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_out_of_bounds_sampling_settings_are_refused_naming_the_setting(old_and_new, bad, field):
    """Each bad value is a RunRejected that names its setting, before anything is queued."""
    prompt_set, _, new = old_and_new
    with pytest.raises(RunRejected, match=field):
        start_generation(policy=new, prompt_set=prompt_set, settings=bad, dispatch=False)
    assert not GenerationRun.objects.exists()


def test_the_generation_form_bounds_every_sampling_setting(old_and_new):
    """The admin form shows top_k and repetition_penalty, refuses values out of bounds, and passes all settings on."""
    from training.forms import GenerationForm

    prompt_set, _, new = old_and_new
    good = {"policy": new.pk, "prompt_set": prompt_set.pk, "n_samples": 2, "temperature": 0.7, "top_p": 0.9}
    good |= {"top_k": 20, "repetition_penalty": 1.1, "max_new_tokens": 32, "seed": 7}
    form = GenerationForm(good)
    assert form.is_valid(), form.errors
    assert form.settings() == {key: good[key] for key in form.settings()} and len(form.settings()) == 7
    bad = GenerationForm({**good, "top_k": -1, "repetition_penalty": 3})
    assert not bad.is_valid() and {"top_k", "repetition_penalty"} <= set(bad.errors)


def test_a_cut_off_rollout_may_be_rejected_but_not_chosen_by_default():
    """The export rule: never chosen when cut off, unless allowed; unknown (imported) rollouts are not held back."""
    assert may_be_chosen({"finish_reason": "stop"}) and may_be_chosen({}) and may_be_chosen(None)
    assert not may_be_chosen({"finish_reason": "length"})
    assert may_be_chosen({"finish_reason": "length"}, allow_cut_off=True)


def test_admins_see_which_rollouts_were_cut_off(old_and_new, admin_client):
    """The prompt page marks a cut-off rollout, and the prompt list filters prompts holding one."""
    from labeling.models import Prompt
    from tests.factories import RolloutFactory

    prompt_set, _, _ = old_and_new
    cut, whole = Prompt.objects.filter(prompt_set=prompt_set).order_by("pk")[:2]
    RolloutFactory(prompt=cut, policy="new", text="and then the", generation={"finish_reason": "length"})
    RolloutFactory(prompt=whole, policy="new", text="A whole answer.", generation={"finish_reason": "stop"})
    page = admin_client.get(f"/admin/labeling/prompt/{cut.pk}/change/")
    assert page.status_code == 200 and "CUT OFF at max_new_tokens" in page.content.decode()
    listed = admin_client.get("/admin/labeling/prompt/", {"cut_off": "yes"}).context["cl"].result_list
    assert [prompt.pk for prompt in listed] == [cut.pk]
    unlisted = admin_client.get("/admin/labeling/prompt/", {"cut_off": "no"}).context["cl"].result_list
    assert cut.pk not in {prompt.pk for prompt in unlisted} and whole.pk in {prompt.pk for prompt in unlisted}
