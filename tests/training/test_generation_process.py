"""Generation in a process of its own (always for vLLM): the same samples as in the worker, progress, clear failures.

vLLM needs a GPU; the process path is the same for every engine, so it is exercised here with the HF engine on CPU.
"""

from __future__ import annotations

import os

import pytest

from labeling.models import Rollout
from tests.training.test_generation import old_and_new, tiny_policy_dir  # noqa: F401 - fixtures
from training.models import GenerationRun
from training.services.generation import execute_generation, start_generation
from training.trainers.generation import GenerationConfig, generate
from training.trainers.generation_process import generate_in_subprocess

PROMPTS = ["Tell me about rain.\n", "Tell me about bread.\n"]
CONFIG = GenerationConfig(n_samples=2, temperature=1.0, max_new_tokens=8, seed=7, backend="hf")


def test_a_child_process_samples_exactly_what_the_worker_would(tiny_policy_dir):  # noqa: F811
    here = generate(model_path=str(tiny_policy_dir), prompts=PROMPTS, config=CONFIG)
    progress: list[tuple[int, int]] = []
    there = generate_in_subprocess(
        model_path=str(tiny_policy_dir),
        prompts=PROMPTS,
        config=CONFIG,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert there.extra["pid"] != os.getpid()
    assert there.samples == here.samples
    assert there.finish_reasons == here.finish_reasons
    assert there.stop_token_ids == here.stop_token_ids and there.new_tokens == here.new_tokens
    assert progress and progress[-1] == (len(PROMPTS), len(PROMPTS))


def test_a_failing_child_raises_with_its_own_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with status [1-9](.|\n)*no-such-model"):
        generate_in_subprocess(model_path=str(tmp_path / "no-such-model"), prompts=PROMPTS, config=CONFIG)


@pytest.mark.django_db
def test_a_generation_run_can_sample_in_its_own_process(old_and_new, settings):  # noqa: F811
    settings.PREFLOOP_GENERATION_PROCESS = "always"
    prompt_set, _old, new = old_and_new
    run = start_generation(
        policy=new,
        prompt_set=prompt_set,
        settings={"n_samples": 2, "max_new_tokens": 8, "seed": 1, "backend": "hf"},
        dispatch=False,
    )
    run = execute_generation(run.pk)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert run.prompts_done == 3
    assert Rollout.objects.filter(policy="new").count() == run.rollouts_created > 0
