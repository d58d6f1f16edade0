"""GRPO trained by a reward-model judge alone raises a held-out oracle check (the math judge, weight 0: a monitor).

The loop as a lab runs it: a reward model is trained from preference pairs by PrefLoop's own reward trainer, then
judges a GRPO run; the programmatic check the policy never trains on says whether what the reward model taught is
right. Toy scale (the character-level policy of `grpo_toy`, "a*0=" prompts), real trainers, CPU.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.training.grpo_toy import CHARS, build_char_policy, times_zero_prompts
from training.judges.build import build_judge
from training.trainers.config import GRPORunConfig, RewardRunConfig
from training.trainers.grpo import OnlinePrompt, WeightedJudge, train_online
from training.trainers.reward import train_reward_model

# Everything else the toy can answer in one token: the other characters, and "" (EOS, pad and <unk> decode to it,
# so it appears three times, as often as a random policy says it). A reward model never shown "" as rejected may rate
# it above "0", and a policy that samples many empty completions learns that instead.
REJECTED = [*(c for c in CHARS if c != "0"), "", "", ""]
# The reward model's prompts: six of the toy's "a*0=" and six "ab*0=" the toy does not use. Both lengths matter: a
# reward model shown only "a*0=" scores "ab*0=0" as low as a wrong answer (the toy's positions are learned), so half
# the GRPO prompts would give it nothing to compare.
RM_PROMPTS = [prompt for prompt, _ in times_zero_prompts()[:6]] + ["29*0=", "89*0=", "19*0=", "46*0=", "27*0=", "80*0="]


def _pairs(prompts: list[str], n: int, rng: random.Random) -> list[dict[str, str]]:
    """The humans' preference: the answer "0" over anything else the toy could say."""
    return [{"prompt": rng.choice(prompts), "chosen": "0", "rejected": rng.choice(REJECTED)} for _ in range(n)]


def _write(rows: list[dict[str, str]], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def char_policy(tmp_path_factory) -> Path:
    return build_char_policy(tmp_path_factory.mktemp("char-policy"))


@pytest.fixture(scope="module")
def reward_model(char_policy, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reward")
    rng = random.Random(0)
    # Trained on some prompts only: most of the GRPO prompts below are new to the reward model.
    (root / "data").mkdir()
    _write(_pairs(RM_PROMPTS, 192, rng), root / "data" / "train.parquet")
    _write(_pairs(RM_PROMPTS, 32, rng), root / "data" / "test.parquet")
    config = {"max_steps": 60, "learning_rate": 3e-3, "per_device_batch_size": 16, "max_length": 32}
    config |= {"device": "cpu", "seed": 0, "eval": True}
    result = train_reward_model(
        dataset_path=root / "data",
        base_model=str(char_policy),
        output_dir=root / "model",
        config=RewardRunConfig.from_dict(config),
    )
    assert result.metrics["test_accuracy_after"] >= 0.9, result.metrics  # it learned the preference
    return root / "model"


def test_grpo_with_only_a_reward_model_judge_raises_the_held_out_oracle(char_policy, reward_model, tmp_path):
    prompts = [OnlinePrompt(i, text, answer=answer) for i, (text, answer) in enumerate(times_zero_prompts())]
    judges = [
        WeightedJudge("rm", build_judge("reward_model", {}, model_path=str(reward_model)), 1.0),
        WeightedJudge("math", build_judge("math", {}), 0.0),  # the oracle: logged, never trained on
    ]
    config = {
        "max_steps": 16,
        "learning_rate": 5e-3,
        # 4 prompts x 16 samples a step: a random policy says "0" once in 18, so groups of 8 (2 prompts a step) held
        # no "0" to learn from on some seeds and GRPO stalled; with 64 samples a step seeds 0-9 all learn it.
        "per_device_batch_size": 64,
        "num_generations": 16,
        "max_completion_length": 1,  # one character: the answer, judged as the reward model was trained
        "max_length": 32,
        "heldout_fraction": 0.25,
        "logging_steps": 4,
        "eval_steps": None,
        "device": "cpu",
        "seed": 0,
    }
    result = train_online(
        "grpo",
        prompts=prompts,
        judges=judges,
        policy_model=str(char_policy),
        output_dir=tmp_path / "out",
        config=GRPORunConfig.from_dict(config),
    )
    metrics = result.metrics
    assert metrics["test_math_before"] <= 0.2, "the starting policy already answers: nothing to learn"
    assert metrics["test_math_after"] >= 0.6, metrics
    assert metrics["test_rm_after"] > metrics["test_rm_before"], metrics
