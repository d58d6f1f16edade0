"""Loading an exported preference dataset: only the preference columns, clear errors for broken files."""

from __future__ import annotations

import pytest
from datasets import Dataset

from training.trainers import RewardRunConfig
from training.trainers.data import load_preference_splits, preference_format
from training.trainers.reward import train_reward_model

# Enough steps for the tiny model to learn the politeness signal, few enough for ~1-2 s per run on a laptop CPU.
REWARD_CONFIG = {"learning_rate": 1e-3, "max_steps": 24, "per_device_batch_size": 16, "logging_steps": 4}
DPO_CONFIG = {"learning_rate": 1e-3, "max_steps": 12, "per_device_batch_size": 16, "logging_steps": 4, "beta": 0.1}
LORA_CONFIG = {**DPO_CONFIG, "learning_rate": 5e-3, "lora": True, "lora_r": 8, "lora_alpha": 16}


def test_loader_keeps_only_preference_columns_and_detects_format(standard_dataset, conversational_dataset):
    """Exporter bookkeeping columns are dropped and each directory's format is recognised."""
    standard = load_preference_splits(standard_dataset)
    conversational = load_preference_splits(conversational_dataset)
    assert standard["train"].column_names == ["prompt", "chosen", "rejected"]
    assert (len(standard["train"]), len(standard["test"])) == (96, 32)
    assert preference_format(standard["train"]) == "standard"
    assert preference_format(conversational["test"]) == "conversational"


def test_loader_names_the_missing_column_and_file(tmp_path, standard_dataset):
    """A split without a `rejected` column fails with a message naming the column and the file."""
    (tmp_path / "test.parquet").write_bytes((standard_dataset / "test.parquet").read_bytes())
    Dataset.from_dict({"prompt": ["Q"], "chosen": [" A"]}).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match=r"train\.parquet lacks column\(s\) rejected"):
        load_preference_splits(tmp_path)


def test_loader_reports_a_missing_split_file(tmp_path, standard_dataset):
    """A directory without test.parquet fails with FileNotFoundError naming the missing file."""
    (tmp_path / "train.parquet").write_bytes((standard_dataset / "train.parquet").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"test\.parquet is missing"):
        load_preference_splits(tmp_path)


def test_an_empty_test_split_is_refused_only_when_evaluation_is_on(tiny_base_model, standard_dataset, tmp_path):
    """With no held-out rows, eval=true fails before training with a clear message; eval=false trains anyway."""
    dataset_dir = tmp_path / "data"
    dataset_dir.mkdir()
    (dataset_dir / "train.parquet").write_bytes((standard_dataset / "train.parquet").read_bytes())
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).to_parquet(str(dataset_dir / "test.parquet"))
    common = {"dataset_path": dataset_dir, "base_model": str(tiny_base_model), "output_dir": tmp_path / "model"}
    with pytest.raises(ValueError, match=r"test\.parquet has no rows, but held-out evaluation is on"):
        train_reward_model(**common, config=RewardRunConfig.from_dict({**REWARD_CONFIG, "max_steps": 2}))
    without_eval = RewardRunConfig.from_dict({**REWARD_CONFIG, "max_steps": 2, "eval": False})
    result = train_reward_model(**common, config=without_eval)
    assert result.total_steps == 2
    assert not any(name.startswith("test_") for name in result.metrics)
