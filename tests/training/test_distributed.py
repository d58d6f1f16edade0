"""One run on several processes through `accelerate launch`, exercised on CPU: 2 processes over gloo, real training.

The GPU path is the same command with `--multi_gpu` meaning GPUs; on this CPU box each process trains with
`use_cpu`, so DDP's gradient all-reduce, the sharded data and the one-writer save are the real ones.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.training.conftest import _write_dataset
from training.trainers import ConfigError, DPORunConfig, RewardRunConfig
from training.trainers.distributed import launch_command, process_count, train_distributed
from training.trainers.reward import train_reward_model

pytestmark = pytest.mark.slow

# 13 held-out pairs with a batch of 2 on 2 processes: the last global batch is short, so accelerate pads the shards
# with repeated pairs that the metrics must not count.
HELD_OUT_PAIRS = 13
CONFIG = {
    "max_steps": 6,
    "per_device_batch_size": 2,
    "learning_rate": 1e-3,
    "logging_steps": 2,
    "device": "cpu",
    "num_processes": 2,
}


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory, preference_rows) -> Path:
    return _write_dataset(
        tmp_path_factory.mktemp("odd"), preference_rows["train"], preference_rows["test"][:HELD_OUT_PAIRS]
    )


@pytest.fixture(scope="module")
def two_process_run(odd_dataset, tiny_base_model, tmp_path_factory):
    events: list[tuple[int, int, dict]] = []
    result = train_distributed(
        "reward",
        dataset_path=odd_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("ddp") / "model",
        config=RewardRunConfig.from_dict(CONFIG),
        num_processes=2,
        on_log=lambda step, total, logs: events.append((step, total, logs)),
    )
    return result, events


def test_two_processes_train_one_run_and_rank_zero_saves_the_model(two_process_run):
    from transformers import AutoModelForSequenceClassification

    result, events = two_process_run
    assert result.total_steps == 6
    assert not result.stopped_early
    # Each process trained on its own shard: the run counts both (2 processes x batch 2 x 6 steps).
    assert result.train_samples == 2 * 2 * 6
    assert result.device == "cpu × 2 processes"
    saved = AutoModelForSequenceClassification.from_pretrained(result.output_dir)
    assert saved.config.num_labels == 1
    # Progress reached the worker from rank 0, step by step, while the launch ran.
    assert [step for step, _, logs in events if "loss" in logs] == [1, 2, 4, 6]
    assert {total for _, total, _ in events} == {6}


def test_held_out_metrics_cover_every_pair_exactly_once(two_process_run, odd_dataset, tiny_base_model, tmp_path):
    """Gathered over both shards, the padding dropped: the same before-training figures as one process computes."""
    result, _ = two_process_run
    single = train_reward_model(
        dataset_path=odd_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path / "single",
        config=RewardRunConfig.from_dict({**CONFIG, "num_processes": 1, "max_steps": 1}),
    )
    assert result.metrics["test_pairs"] == single.metrics["test_pairs"] == HELD_OUT_PAIRS
    # Same seed, same fresh score head on every process: the untrained model's scores are the same numbers.
    for name in ("test_accuracy_before", "test_margin_before", "test_chosen_score_before"):
        assert result.metrics[name] == pytest.approx(single.metrics[name], rel=1e-5, abs=1e-6), name


def test_a_cancel_stops_every_process_on_the_same_step_and_saves_nothing(odd_dataset, tiny_base_model, tmp_path):
    first_log = threading.Event()
    output_dir = tmp_path / "model"
    result = train_distributed(
        "reward",
        dataset_path=odd_dataset,
        base_model=str(tiny_base_model),
        output_dir=output_dir,
        config=RewardRunConfig.from_dict({**CONFIG, "max_steps": 100_000, "logging_steps": 1, "eval": False}),
        num_processes=2,
        on_log=lambda *_: first_log.set(),
        should_stop=first_log.is_set,
    )
    assert result.stopped_early
    assert 0 < result.total_steps < 100_000
    assert not output_dir.exists() or not any(output_dir.iterdir())
    assert not output_dir.with_name("model.launch").exists()  # the launch's scratch files are gone


def test_a_failing_launch_raises_with_the_processes_own_error(odd_dataset, tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with status [1-9](.|\n)*no-such-model"):
        train_distributed(
            "reward",
            dataset_path=odd_dataset,
            base_model=str(tmp_path / "no-such-model"),
            output_dir=tmp_path / "model",
            config=RewardRunConfig.from_dict(CONFIG),
            num_processes=2,
        )
    assert not (tmp_path / "model").exists()


def test_the_plain_path_stays_single_process_unless_asked():
    assert process_count(RewardRunConfig.from_dict({"device": "cpu"})) == 1
    assert process_count(RewardRunConfig.from_dict({"device": "cpu", "num_processes": 3})) == 3
    # "auto" on a machine without GPUs: one process, in the worker.
    assert process_count(RewardRunConfig.from_dict({})) == 1


def test_fsdp_is_a_multi_gpu_option_launched_with_full_sharding(tmp_path):
    config = DPORunConfig.from_dict({"fsdp": True, "num_processes": 8, "device": "cuda"})
    command = launch_command(spec_path=tmp_path / "spec.json", num_processes=8, config=config, port=29501)
    assert command[command.index("--num_processes") + 1] == "8"
    assert "--use_fsdp" in command and "--multi_gpu" not in command
    assert command[command.index("--fsdp_sharding_strategy") + 1] == "FULL_SHARD"
    ddp = launch_command(
        spec_path=tmp_path / "spec.json", num_processes=2, config=DPORunConfig.from_dict({}), port=29501
    )
    assert "--multi_gpu" in ddp and "--use_fsdp" not in ddp
    for bad in ({"fsdp": True, "device": "cpu"}, {"fsdp": True, "num_processes": 1}):
        with pytest.raises(ConfigError) as error:
            DPORunConfig.from_dict(bad)
        assert error.value.field == "fsdp"
    with pytest.raises(ConfigError, match="num_processes"):
        RewardRunConfig.from_dict({"num_processes": 0})
