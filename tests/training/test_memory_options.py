"""The options that make big models fit (dtype, precomputed reference, automatic LoRA), exercised for real on CPU.

On a GPU the same code paths run with `dtype='auto'` resolving to bfloat16; here each is chosen explicitly.
"""

from __future__ import annotations

import pytest
import torch

from training.config_form_fields import config_form_field
from training.trainers import DPORunConfig
from training.trainers._runtime import resolve_dtype
from training.trainers.dpo import count_parameters, train_dpo, use_lora

pytestmark = pytest.mark.slow

CONFIG = {"learning_rate": 1e-3, "max_steps": 3, "per_device_batch_size": 16, "logging_steps": 1, "device": "cpu"}


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return dict(AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").state_dict())


def _dpo(dataset, base, out, **overrides):
    return train_dpo(
        dataset_path=dataset,
        policy_model=str(base),
        output_dir=out,
        config=DPORunConfig.from_dict({**CONFIG, **overrides}),
    )


@pytest.fixture(scope="module")
def live_reference(standard_dataset, tiny_base_model, tmp_path_factory):
    return _dpo(standard_dataset, tiny_base_model, tmp_path_factory.mktemp("live") / "model")


def test_a_precomputed_reference_trains_the_same_policy_as_a_live_one(
    live_reference, standard_dataset, tiny_base_model, tmp_path
):
    """No reference copy in memory, same reference log-probs: the same update, step for step."""
    precomputed = _dpo(standard_dataset, tiny_base_model, tmp_path / "model", precompute_ref_log_probs=True)
    live, pre = _weights(live_reference.output_dir), _weights(precomputed.output_dir)
    for name in live:
        torch.testing.assert_close(pre[name], live[name], rtol=1e-4, atol=1e-5, msg=name)
    assert precomputed.metrics["test_reward_margin_before"] == pytest.approx(0.0, abs=1e-6)
    assert precomputed.metrics["test_reward_margin_after"] == pytest.approx(
        live_reference.metrics["test_reward_margin_after"], rel=1e-3
    )
    base = _weights(str(tiny_base_model))
    assert any(not torch.equal(pre[name], base[name]) for name in base)  # it did train


def test_lora_is_decided_by_the_policys_size_when_left_unset(live_reference, tiny_base_model):
    from transformers import AutoModelForCausalLM

    parameters = count_parameters(str(tiny_base_model))
    assert parameters == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_base_model).parameters())
    automatic = DPORunConfig.from_dict({})
    assert automatic.lora is None
    assert use_lora(automatic, parameters=parameters) is False  # a tiny model: full fine-tuning
    assert use_lora(automatic, parameters=parameters, threshold=parameters - 1) is True
    assert use_lora(DPORunConfig.from_dict({"lora": True}), parameters=1) is True
    assert use_lora(DPORunConfig.from_dict({"lora": False}), parameters=10**12) is False
    # The run records what was decided, and on what size.
    assert live_reference.metrics["lora"] == 0.0
    assert live_reference.metrics["policy_parameters"] == parameters


def test_weights_load_train_and_save_in_the_configured_dtype(standard_dataset, tiny_base_model, tmp_path):
    result = _dpo(
        standard_dataset, tiny_base_model, tmp_path / "model", dtype="bfloat16", max_steps=2, per_device_batch_size=4
    )
    saved = _weights(result.output_dir)
    assert {tensor.dtype for tensor in saved.values()} == {torch.bfloat16}
    assert result.total_steps == 2


def test_auto_dtype_is_float32_without_cuda_and_explicit_dtypes_are_kept():
    assert resolve_dtype(DPORunConfig.from_dict({}), "cpu") == "float32"
    assert resolve_dtype(DPORunConfig.from_dict({"dtype": "bfloat16"}), "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        DPORunConfig.from_dict({"dtype": "int8"})


def test_the_run_form_offers_automatic_lora():
    import dataclasses
    import typing

    hints = typing.get_type_hints(DPORunConfig)
    lora = next(f for f in dataclasses.fields(DPORunConfig) if f.name == "lora")
    field = config_form_field(lora, hints["lora"])
    assert field.clean("unknown") is None and field.clean("true") is True and field.clean("false") is False
    assert "Automatic" in str(field.widget.render("lora", None))
