"""The reward-model judge loads its model once per process, again when its files change, and keeps at most two."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.training.grpo_toy import build_char_policy
from training.judges import reward_model
from training.judges.build import build_judge


def _reward_model(policy: Path, out: Path, seed: int) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(policy, num_labels=1))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(policy).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reward_models(tmp_path_factory) -> list[Path]:
    policy = build_char_policy(tmp_path_factory.mktemp("char-policy"))
    return [_reward_model(policy, tmp_path_factory.mktemp(f"rm{seed}"), seed) for seed in range(3)]


def test_two_scoring_calls_load_the_reward_model_once(reward_models):
    """Two calls (two judge objects, as two steps of a run build them) load once and score alike; new weights in the
    same folder (a newer file) are loaded again — the control that the counter does count loads."""
    reward_model.clear_cache()
    path = reward_models[0]
    before = reward_model.loads
    first = build_judge("reward_model", {}, model_path=str(path)).score("1*0=", "0")
    second = build_judge("reward_model", {}, model_path=str(path)).score("1*0=", "0")
    assert reward_model.loads - before == 1
    assert first.reason == "scored" and first.score == second.score
    weights = next(path.glob("*.safetensors"))
    later = weights.stat().st_mtime + 10
    os.utime(weights, (later, later))
    build_judge("reward_model", {}, model_path=str(path)).score("1*0=", "0")
    assert reward_model.loads - before == 2


def test_the_cache_keeps_at_most_two_models(reward_models):
    """A third model pushes out the least recently used one, which then loads again; the two newest stay loaded."""
    reward_model.clear_cache()
    before = reward_model.loads
    judges = [build_judge("reward_model", {}, model_path=str(path)) for path in reward_models]
    for judge in judges:
        judge.score("1*0=", "0")
    assert reward_model.loads - before == 3 and len(reward_model._cache) == reward_model.CACHE_SIZE == 2
    judges[2].score("2*0=", "0")
    judges[1].score("2*0=", "0")
    assert reward_model.loads - before == 3
    judges[0].score("2*0=", "0")
    assert reward_model.loads - before == 4
