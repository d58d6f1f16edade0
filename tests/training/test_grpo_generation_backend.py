"""Where an online run samples: transformers' generate on CPU, vLLM (colocated) where it is installed on CUDA.

The vLLM path itself needs a GPU; on CPU what can be checked is the choice, the refusal with its reason before any
model loads, and the arguments TRL receives.
"""

from __future__ import annotations

import pytest

from tests.training.grpo_toy import build_char_policy, times_zero_prompts
from training.judges.build import build_judge
from training.trainers.config import ConfigError, GRPORunConfig, RLOORunConfig
from training.trainers.generation import vllm_usable
from training.trainers.grpo import (
    OnlinePrompt,
    WeightedJudge,
    online_generation_backend,
    train_online,
    vllm_arguments,
)

SMALL = {"max_steps": 1, "per_device_batch_size": 4, "num_generations": 2, "max_completion_length": 2}
SMALL |= {"max_length": 32, "heldout_fraction": 0.0, "eval": False, "device": "cpu", "seed": 0}


def test_auto_samples_with_generate_on_cpu_and_hf_never_asks_for_vllm():
    config = GRPORunConfig.from_dict(SMALL)
    assert config.generation_backend == "auto"
    assert online_generation_backend(config, "cpu") == "hf"
    hf = GRPORunConfig.from_dict(SMALL | {"generation_backend": "hf"})
    assert online_generation_backend(hf, "cuda") == "hf"


@pytest.mark.skipif(vllm_usable(), reason="this machine can run vLLM: the refusal is for machines that cannot")
def test_insisting_on_vllm_where_it_cannot_run_is_refused_with_the_reason():
    config = RLOORunConfig.from_dict(SMALL | {"generation_backend": "vllm"})
    with pytest.raises(ValueError, match=r"generation_backend is 'vllm'.*no CUDA device.*requirements-gpu\.txt"):
        online_generation_backend(config, "cpu")


def test_trl_gets_colocated_vllm_with_the_memory_share_only_when_vllm_is_the_backend():
    config = GRPORunConfig.from_dict(SMALL | {"vllm_gpu_memory_utilization": 0.45})
    assert vllm_arguments(config, "vllm") == {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": 0.45,
    }
    assert vllm_arguments(config, "hf") == {"use_vllm": False}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"generation_backend": "sglang"}, "generation_backend"),
        ({"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization"),
        ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization"),
    ],
)
def test_bad_backend_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as refused:
        GRPORunConfig.from_dict(SMALL | changes)
    assert refused.value.field == field


@pytest.mark.skipif(vllm_usable(), reason="this machine can run vLLM")
def test_a_run_insisting_on_vllm_fails_before_loading_the_policy(tmp_path):
    """The refusal comes first: the policy path does not even exist (loading it would fail otherwise), and no
    output is written."""
    config = GRPORunConfig.from_dict(SMALL | {"generation_backend": "vllm"})
    with pytest.raises(ValueError, match="cannot run it"):
        train_online(
            "grpo",
            prompts=[OnlinePrompt(0, "1*0=", answer="0"), OnlinePrompt(1, "2*0=", answer="0")],
            judges=[WeightedJudge("math", build_judge("math", {}), 1.0)],
            policy_model=str(tmp_path / "no-such-model"),
            output_dir=tmp_path / "out",
            config=config,
        )
    assert not (tmp_path / "out").exists()


def test_a_cpu_run_records_that_it_sampled_without_vllm(tmp_path):
    policy = build_char_policy(tmp_path / "policy")
    prompts = [OnlinePrompt(i, text, answer=answer) for i, (text, answer) in enumerate(times_zero_prompts()[:4])]
    result = train_online(
        "grpo",
        prompts=prompts,
        judges=[WeightedJudge("math", build_judge("math", {}), 1.0)],
        policy_model=str(policy),
        output_dir=tmp_path / "out",
        config=GRPORunConfig.from_dict(SMALL),
    )
    assert result.metrics["generation_on_vllm"] == 0.0 and result.metrics["rollouts"] == 4
