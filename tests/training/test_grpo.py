"""GRPO and RLOO for real on CPU (no mocked trainer): a toy policy learns from a judge; runs register policies.

The learning test uses the character-level toy of `grpo_toy` on "a*0=" prompts with the math judge: a simple
learnable target (a 2-layer policy cannot learn addition from a few dozen RL steps; multiplying by zero it can), and
the held-out prompts are numbers it never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.grpo_toy import build_char_policy, times_zero_prompts
from training.judges.base import Judge, JudgeInput, JudgeResult
from training.judges.build import build_judge
from training.trainers.config import GRPORunConfig, RLOORunConfig
from training.trainers.grpo import ROLLOUTS_FILE, OnlinePrompt, WeightedJudge, train_online

TOY_CONFIG = {
    "max_steps": 16,
    "learning_rate": 5e-3,
    "per_device_batch_size": 16,
    "num_generations": 8,
    "max_completion_length": 2,
    "max_length": 32,
    "heldout_fraction": 0.25,
    "logging_steps": 4,
    "eval_steps": 8,
    "device": "cpu",
    "seed": 0,
}


@pytest.fixture(scope="module")
def char_policy(tmp_path_factory) -> Path:
    return build_char_policy(tmp_path_factory.mktemp("char-policy"))


def _prompts() -> list[OnlinePrompt]:
    return [OnlinePrompt(i, text, answer=answer) for i, (text, answer) in enumerate(times_zero_prompts())]


def _weights(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_grpo_with_the_math_judge_raises_held_out_accuracy_above_the_base_rate(char_policy, tmp_path):
    """Held-out accuracy (greedy, prompts never trained on) goes from the random policy's ~0 to >= 0.8."""
    out = tmp_path / "out"
    result = train_online(
        "grpo",
        prompts=_prompts(),
        judges=[WeightedJudge("math", build_judge("math", {}), 1.0)],
        policy_model=str(char_policy),
        output_dir=out,
        config=GRPORunConfig.from_dict(TOY_CONFIG),
    )
    metrics = result.metrics
    assert metrics["heldout_prompts"] == 5 and metrics["train_prompts"] == 13
    assert metrics["test_math_before"] <= 0.2, "the starting policy already answers: nothing to learn"
    assert metrics["test_math_after"] >= 0.8, metrics
    before, after = _weights(char_policy), _weights(out)
    assert any(not before[name].equal(after[name]) for name in before), "no weight moved"
    logged = {key for point in result.history for key in point}
    assert {"kl", "entropy", "frac_reward_zero_std", "completions/mean_length", "rewards/math/mean"} <= logged
    assert "heldout/math" in logged
    kls = [point["kl"] for point in result.history if point.get("kl") is not None]
    assert kls[-1] > 0, "beta > 0 keeps a reference, so KL is tracked and grows as the policy moves"
    rollouts = [json.loads(line) for line in (out / ROLLOUTS_FILE).read_text().splitlines()]
    assert len(rollouts) == metrics["rollouts"] == 16 * 16
    assert {row["reasons"]["math"] for row in rollouts} <= {"equivalent", "different", "no_answer_found"}
    assert all(row["reward"] == row["scores"]["math"] for row in rollouts)
    late = [row["scores"]["math"] for row in rollouts if row["step"] == 16]
    early = [row["scores"]["math"] for row in rollouts if row["step"] == 1]
    assert sum(late) / len(late) > sum(early) / len(early) + 0.3


class _CrashingJudge(Judge):
    kind = "exact"

    def _score_batch(self, items: list[JudgeInput]) -> list[JudgeResult]:
        raise RuntimeError("the checker fell over")


def test_a_crashing_judge_gives_no_opinion_with_the_reason_and_a_monitor_is_only_logged(char_policy, tmp_path):
    """A judge that raises scores None ('judge_error', with the error); a weight-0 judge is logged, not trained on."""
    config = GRPORunConfig.from_dict({**TOY_CONFIG, "max_steps": 2, "eval": False, "heldout_fraction": 0.0})
    judges = [
        WeightedJudge("math", build_judge("math", {}), 1.0),
        WeightedJudge("broken", _CrashingJudge(), 1.0),
        WeightedJudge("short", build_judge("length", {"unit": "chars", "max": 1}), 0.0),
    ]
    result = train_online(
        "grpo", prompts=_prompts(), judges=judges, policy_model=str(char_policy), output_dir=tmp_path, config=config
    )
    assert result.total_steps == 2 and not result.stopped_early
    rows = [json.loads(line) for line in (tmp_path / ROLLOUTS_FILE).read_text().splitlines()]
    assert {row["reasons"]["broken"] for row in rows} == {"judge_error"}
    assert all(row["scores"]["broken"] is None for row in rows)
    assert all(row["scores"]["short"] is not None for row in rows)
    # The monitor's score never enters the reward: the reward is the math judge's alone.
    assert all(row["reward"] == row["scores"]["math"] for row in rows)
    assert any(point.get("rewards/short/mean") is not None for point in result.history)


def test_rloo_trains_and_saves_a_loadable_policy(char_policy, tmp_path):
    """RLOO runs through the same wrapper, with its default two samples per prompt."""
    config = RLOORunConfig.from_dict(
        {**TOY_CONFIG, "max_steps": 3, "num_generations": 2, "per_device_batch_size": 8, "eval_steps": None}
    )
    result = train_online(
        "rloo",
        prompts=_prompts(),
        judges=[WeightedJudge("exact", build_judge("exact", {}), 1.0)],
        policy_model=str(char_policy),
        output_dir=tmp_path,
        config=config,
    )
    assert result.total_steps == 3
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer.json").exists()
    assert "test_exact_before" in result.metrics and "test_exact_after" in result.metrics
