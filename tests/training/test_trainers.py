"""Behaviour of the pure-ML trainers (training/trainers/), trained for real on a tiny local GPT-2 on CPU.

No Django and no database: these functions take a dataset directory, a model path and a config.
Training runs are session-scoped fixtures shared by the tests that inspect them, to keep the file fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.trainers import ConfigError, DPORunConfig, RewardRunConfig, TrainResult
from training.trainers.dpo import train_dpo
from training.trainers.evaluation import completion_logps, reward_metrics, reward_scores
from training.trainers.reward import train_reward_model
from training.trainers.tiny import build_tiny_causal_lm

REPO_ROOT = Path(__file__).resolve().parents[2]

# Enough steps for the tiny model to learn the politeness signal, few enough for ~1-2 s per run on a laptop CPU.
REWARD_CONFIG = {"learning_rate": 1e-3, "max_steps": 24, "per_device_batch_size": 16, "logging_steps": 4}
DPO_CONFIG = {"learning_rate": 1e-3, "max_steps": 12, "per_device_batch_size": 16, "logging_steps": 4, "beta": 0.1}
LORA_CONFIG = {**DPO_CONFIG, "learning_rate": 5e-3, "lora": True, "lora_r": 8, "lora_alpha": 16}


def _causal_lm_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(model_dir).state_dict())


# --- training runs shared by several tests ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def reward_run(tiny_base_model, standard_dataset, tmp_path_factory) -> TrainResult:
    return train_reward_model(
        dataset_path=standard_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("reward") / "model",
        config=RewardRunConfig.from_dict(REWARD_CONFIG),
    )


@pytest.fixture(scope="session")
def dpo_run(tiny_base_model, standard_dataset, tmp_path_factory) -> TrainResult:
    return train_dpo(
        dataset_path=standard_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("dpo") / "model",
        config=DPORunConfig.from_dict(DPO_CONFIG),
    )


@pytest.fixture(scope="session")
def lora_run(tiny_base_model, standard_dataset, tmp_path_factory) -> TrainResult:
    return train_dpo(
        dataset_path=standard_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("dpo-lora") / "model",
        config=DPORunConfig.from_dict(LORA_CONFIG),
    )


# --- reward model ---------------------------------------------------------------------------------------------------


def test_reward_model_ranks_held_out_pairs_after_training(reward_run):
    """After training, the reward model scores the chosen answer above the rejected one on >= 85% of unseen pairs."""
    assert reward_run.metrics["test_pairs"] == 32
    assert reward_run.metrics["test_accuracy_after"] >= 0.85
    assert reward_run.metrics["test_margin_after"] > reward_run.metrics["test_margin_before"]


def test_reward_training_updates_every_backbone_weight_and_saves_a_scalar_head(reward_run, tiny_base_model):
    """Every transformer weight that the loss depends on changed, and the saved model has a single scalar output."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    saved = AutoModelForSequenceClassification.from_pretrained(reward_run.output_dir)
    assert saved.config.num_labels == 1
    # The tokenizer travels with the weights: the saved one encodes and pads exactly as the base's did.
    saved_tokenizer = AutoTokenizer.from_pretrained(reward_run.output_dir)
    base_tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    assert saved_tokenizer.get_vocab() == base_tokenizer.get_vocab()
    assert saved_tokenizer.pad_token_id == base_tokenizer.pad_token_id is not None
    base = _causal_lm_weights(tiny_base_model)
    unchanged = [
        name
        for name, tensor in saved.state_dict().items()
        if name.startswith("transformer.") and torch.equal(tensor, base[name])
    ]
    # The final LayerNorm bias adds the same constant to every score, which the Bradley-Terry loss (a function of
    # score differences) cannot see: its gradient is exactly zero.
    assert unchanged == ["transformer.ln_f.bias"]


def test_reward_result_reports_history_and_throughput(reward_run):
    """The result carries a loss history by step, the step/sample/token counts and JSON-safe metrics."""
    steps = [entry["step"] for entry in reward_run.history if "loss" in entry]
    assert steps == [1, 4, 8, 12, 16, 20, 24]
    losses = [entry["loss"] for entry in reward_run.history if "loss" in entry]
    assert losses[-1] < losses[0]
    assert reward_run.total_steps == 24
    assert reward_run.train_samples == 24 * 16
    assert reward_run.train_tokens > reward_run.train_samples * 2  # every sequence is several tokens long
    assert reward_run.device == "cpu"
    assert reward_run.peak_memory_bytes > 0
    assert 0 < reward_run.train_seconds <= reward_run.wall_seconds
    json.dumps(reward_run.to_dict(), allow_nan=False)


# --- DPO ------------------------------------------------------------------------------------------------------------


def test_dpo_widens_held_out_chosen_minus_rejected_log_prob_margin(dpo_run):
    """DPO raises the policy's chosen-minus-rejected log-prob margin on unseen pairs, and its implicit reward agrees."""
    metrics = dpo_run.metrics
    assert metrics["test_logp_margin_after"] > metrics["test_logp_margin_before"] + 5.0
    # Before training the policy is the reference, so the implicit reward margin starts at exactly zero.
    assert metrics["test_reward_margin_before"] == pytest.approx(0.0, abs=1e-4)
    assert metrics["test_reward_margin_after"] > 0.5
    assert metrics["test_reward_accuracy_after"] >= 0.85


def test_dpo_updates_the_policy_weights(dpo_run, tiny_base_model):
    """Full-parameter DPO changes every weight of the saved causal LM."""
    base = _causal_lm_weights(tiny_base_model)
    trained = _causal_lm_weights(Path(dpo_run.output_dir))
    assert trained.keys() == base.keys()
    assert [name for name in base if torch.equal(base[name], trained[name])] == []


def test_dpo_with_lora_saves_a_merged_plain_causal_lm(lora_run, tiny_base_model):
    """A LoRA run saves a plain causal LM: no adapter files, base keys, adapted weights changed, others untouched."""
    output_dir = Path(lora_run.output_dir)
    assert not (output_dir / "adapter_config.json").exists()
    base = _causal_lm_weights(tiny_base_model)
    merged = _causal_lm_weights(output_dir)
    assert merged.keys() == base.keys()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert "transformer.h.0.attn.c_attn.weight" in changed
    assert "transformer.h.1.mlp.c_fc.weight" in changed
    assert not any("ln_" in name or "wte" in name or "wpe" in name for name in changed)
    assert lora_run.metrics["test_logp_margin_after"] > lora_run.metrics["test_logp_margin_before"]
    assert lora_run.metrics["test_reward_margin_after"] > 0


def test_merged_lora_model_reproduces_the_adapters_held_out_log_probs(lora_run, standard_dataset, tmp_path):
    """Reloaded from disk, the merged LoRA model gives the same held-out chosen log-prob the adapter had in training."""
    # The "before" figures of a new run starting from the merged model are that model's held-out log-probs, computed
    # by the same code (and TRL's own tokenization) that measured the adapter after training.
    from_merged = train_dpo(
        dataset_path=standard_dataset,
        policy_model=lora_run.output_dir,
        output_dir=tmp_path / "model",
        config=DPORunConfig.from_dict({**DPO_CONFIG, "max_steps": 1}),
    )
    before, adapter = from_merged.metrics, lora_run.metrics
    assert before["test_chosen_logp_before"] == pytest.approx(adapter["test_chosen_logp_after"], rel=1e-4)
    assert before["test_rejected_logp_before"] == pytest.approx(adapter["test_rejected_logp_after"], rel=1e-4)


def test_an_explicit_reference_model_anchors_the_implicit_reward(dpo_run, tiny_base_model, standard_dataset, tmp_path):
    """With the DPO-trained model as reference, the untrained base starts with a negative implicit reward margin."""
    result = train_dpo(
        dataset_path=standard_dataset,
        policy_model=str(tiny_base_model),
        ref_model=dpo_run.output_dir,
        output_dir=tmp_path / "model",
        config=DPORunConfig.from_dict({**DPO_CONFIG, "max_steps": 1}),
    )
    # reward margin = beta * (policy margin - reference margin); the reference prefers chosen far more than the base.
    expected = DPO_CONFIG["beta"] * (
        dpo_run.metrics["test_logp_margin_before"] - dpo_run.metrics["test_logp_margin_after"]
    )
    assert result.metrics["test_reward_margin_before"] == pytest.approx(expected, rel=1e-3)
    assert result.metrics["test_reward_margin_before"] < -1.0


def test_conversational_dataset_trains_dpo(tiny_base_model, conversational_dataset, tmp_path):
    """DPO on {"role", "content"} messages goes through the chat template and still widens the held-out margin."""
    result = train_dpo(
        dataset_path=conversational_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path / "model",
        config=DPORunConfig.from_dict(DPO_CONFIG),
    )
    assert result.metrics["test_logp_margin_after"] > result.metrics["test_logp_margin_before"]
    assert result.metrics["test_reward_accuracy_after"] >= 0.85


def test_conversational_dataset_trains_a_reward_model(tiny_base_model, conversational_dataset, tmp_path):
    """A reward model trained on conversational pairs ranks held-out conversations correctly."""
    result = train_reward_model(
        dataset_path=conversational_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path / "model",
        config=RewardRunConfig.from_dict(REWARD_CONFIG),
    )
    assert result.metrics["test_accuracy_after"] >= 0.85


# --- progress, cancellation, heartbeat ------------------------------------------------------------------------------


def test_should_stop_cancels_training_early_and_saves_nothing(tiny_base_model, standard_dataset, tmp_path):
    """When should_stop turns True at step 3 of 50, training stops there, no model is saved and the result says so."""
    steps_checked = []

    def should_stop() -> bool:
        steps_checked.append(True)
        return len(steps_checked) >= 3

    output_dir = tmp_path / "model"
    result = train_reward_model(
        dataset_path=standard_dataset,
        base_model=str(tiny_base_model),
        output_dir=output_dir,
        config=RewardRunConfig.from_dict({**REWARD_CONFIG, "max_steps": 50, "eval": False}),
        should_stop=should_stop,
    )
    assert result.stopped_early
    assert result.total_steps == 3
    assert not (output_dir / "model.safetensors").exists()


def test_progress_is_reported_at_each_log_and_heartbeat_at_each_step(tiny_base_model, standard_dataset, tmp_path):
    """on_log receives (step, total_steps, logs) at every logging step and heartbeat fires at least once per step."""
    reports: list[tuple[int, int, dict]] = []
    heartbeats: list[int] = []
    result = train_dpo(
        dataset_path=standard_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path / "model",
        config=DPORunConfig.from_dict({**DPO_CONFIG, "max_steps": 4, "logging_steps": 2, "eval": False}),
        on_log=lambda step, total, logs: reports.append((step, total, logs)),
        heartbeat=lambda: heartbeats.append(1),
    )
    loss_reports = [(step, total) for step, total, logs in reports if "loss" in logs]
    assert loss_reports == [(1, 4), (2, 4), (4, 4)]
    assert all(logs["step"] == step for step, _, logs in reports)
    assert len(heartbeats) >= result.total_steps == 4


# --- building blocks ------------------------------------------------------------------------------------------------


def test_completion_logps_sums_only_completion_tokens():
    """completion_logps equals a hand-worked sum of log-softmax values over the masked completion positions."""
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    input_ids = torch.tensor([[0, 1, 0, 2]])
    completion_mask = torch.tensor([[0, 0, 1, 1]])  # tokens 2 and 3 are the completion
    # Token 2 (id 0) is predicted at position 1, token 3 (id 2) at position 2.
    expected = torch.log_softmax(logits[0, 1], -1)[0] + torch.log_softmax(logits[0, 2], -1)[2]
    assert completion_logps(logits, input_ids, completion_mask).item() == pytest.approx(expected.item(), abs=1e-6)


class _SumOfIds(torch.nn.Module):
    """A stand-in scorer whose reward for a row is the sum of its unmasked token ids: easy to work by hand."""

    def forward(self, input_ids, attention_mask, **kwargs):
        assert not self.training  # evaluation runs without dropout
        return SimpleNamespace(logits=(input_ids * attention_mask).sum(-1, keepdim=True).float())


def test_reward_scores_split_each_batch_into_chosen_then_rejected_and_restore_training_mode():
    """Rows [chosen..., rejected...] of every batch are scored and concatenated in order; one heartbeat per batch."""
    batches = [
        # 2 pairs: chosen rows score 3 and 5, rejected rows 1 and 0 (the padded 9 is masked out).
        {
            "input_ids": torch.tensor([[1, 2], [5, 0], [1, 0], [9, 0]]),
            "attention_mask": torch.tensor([[1, 1]] * 3 + [[0, 0]]),
        },
        # 1 pair: chosen 4, rejected 7.
        {"input_ids": torch.tensor([[4, 0], [3, 4]]), "attention_mask": torch.tensor([[1, 1], [1, 1]])},
    ]
    model = _SumOfIds().train()
    beats = []
    chosen, rejected = reward_scores(model, batches, heartbeat=lambda: beats.append(1))
    assert chosen.tolist() == [3.0, 5.0, 4.0] and rejected.tolist() == [1.0, 0.0, 7.0]
    assert reward_metrics(chosen, rejected)["accuracy"] == pytest.approx(2 / 3)
    assert len(beats) == 2 and model.training


def test_an_evaluation_without_batches_yields_empty_scores():
    """A test split whose pairs were all dropped gives two empty tensors, not an error."""
    chosen, rejected = reward_scores(_SumOfIds(), [])
    assert chosen.numel() == rejected.numel() == 0


def test_tiny_model_is_deterministic_given_its_seed(tmp_path):
    """Two builds with the same seed have identical weights; a different seed gives different weights."""
    corpus = ["a small corpus for a small tokenizer", "with two sentences"]
    first = _causal_lm_weights(build_tiny_causal_lm(tmp_path / "a", corpus=corpus, seed=3))
    again = _causal_lm_weights(build_tiny_causal_lm(tmp_path / "b", corpus=corpus, seed=3))
    other = _causal_lm_weights(build_tiny_causal_lm(tmp_path / "c", corpus=corpus, seed=4))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["transformer.h.0.attn.c_attn.weight"], other["transformer.h.0.attn.c_attn.weight"])


def test_an_sft_term_keeps_dpo_from_pushing_the_chosen_answers_down(
    dpo_run, tiny_base_model, standard_dataset, tmp_path
):
    """With sft_weight (RPO) the chosen answers end more likely than under pure DPO, and the margin still widens."""
    rpo = train_dpo(
        dataset_path=standard_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path / "model",
        config=DPORunConfig.from_dict({**DPO_CONFIG, "sft_weight": 1.0}),
    )
    assert rpo.metrics["test_chosen_logp_after"] > dpo_run.metrics["test_chosen_logp_after"]
    assert rpo.metrics["test_logp_margin_after"] > rpo.metrics["test_logp_margin_before"]


def test_a_negative_sft_weight_is_refused():
    """The config names the field."""
    with pytest.raises(ConfigError, match="sft_weight"):
        DPORunConfig.from_dict({"sft_weight": -0.5})
