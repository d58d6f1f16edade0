"""Run configs: every bad value is refused naming its field; configs round-trip and import no ML library."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.trainers import ConfigError, DPORunConfig, RewardRunConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("beta", [0, -0.1, math.nan, math.inf, "0.1", True])
def test_invalid_beta_is_rejected_naming_the_field(beta):
    """A non-positive, non-finite or non-numeric beta raises a ConfigError that names DPORunConfig.beta."""
    with pytest.raises(ConfigError, match=r"DPORunConfig\.beta must be a finite number > 0") as error:
        DPORunConfig.from_dict({"beta": beta})
    assert error.value.field == "beta"


def test_unknown_config_keys_are_rejected_and_listed():
    """from_dict refuses unknown keys, lists every one of them and suggests the likely intended key."""
    with pytest.raises(ConfigError) as error:
        RewardRunConfig.from_dict({"learning_rte": 1e-5, "epochs": 3, "seed": 1})
    message = str(error.value)
    assert "'epochs'" in message and "'learning_rte'" in message
    assert "did you mean 'learning_rate'?" in message
    assert "seed" not in message.split("Allowed keys")[0]


@pytest.mark.parametrize(
    ("config_class", "data", "field"),
    [
        (RewardRunConfig, {"per_device_batch_size": 0}, "per_device_batch_size"),
        (RewardRunConfig, {"max_steps": 2.5}, "max_steps"),
        (RewardRunConfig, {"device": "tpu"}, "device"),
        (DPORunConfig, {"loss_type": "exo_pair"}, "loss_type"),
        (DPORunConfig, {"lora_dropout": 1.0}, "lora_dropout"),
        (DPORunConfig, {"lora_target_modules": "c_attn"}, "lora_target_modules"),
    ],
)
def test_invalid_config_values_name_their_field(config_class, data, field):
    """Each invalid value raises a ConfigError whose field and message name the offending key."""
    with pytest.raises(ConfigError, match=rf"{config_class.__name__}\.{field} must be") as error:
        config_class.from_dict(data)
    assert error.value.field == field


def test_config_round_trips_through_json():
    """to_dict output survives JSON and from_dict rebuilds an equal config."""
    config = DPORunConfig(beta=0.25, lora=True, lora_target_modules=["c_attn"], max_steps=7)
    assert DPORunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_module_imports_no_ml_library():
    """Importing the configs (as the web process does) loads neither torch, transformers, trl nor datasets."""
    code = (
        "import sys, training.trainers.config, training.trainers; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env=environment)
