"""Checkpoints every N steps and resume, and experiment tracking (TensorBoard), on the tiny model with real training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from training.trainers import RewardRunConfig
from training.trainers.lifecycle import latest_checkpoint
from training.trainers.reward import train_reward_model

pytestmark = pytest.mark.slow

CONFIG = {
    "max_steps": 6,
    "save_steps": 2,
    "per_device_batch_size": 4,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "device": "cpu",
}


def _weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    return dict(AutoModelForSequenceClassification.from_pretrained(model_dir).state_dict())


def _train(
    dataset: Path,
    base: Path,
    out: Path,
    checkpoints: Path,
    *,
    stop_after: int | None = None,
    tensorboard_dir: Path | None = None,
    **extra,
):
    steps: list[int] = []
    return train_reward_model(
        dataset_path=dataset,
        base_model=str(base),
        output_dir=out,
        config=RewardRunConfig.from_dict({**CONFIG, **extra}),
        checkpoint_dir=checkpoints,
        tensorboard_dir=tensorboard_dir,
        on_log=lambda step, total, logs: steps.append(step),
        # Log events come after a step's end: asked at the end of step n, the last logged step is n - 1.
        should_stop=(lambda: bool(steps) and steps[-1] >= stop_after) if stop_after else None,
    )


@pytest.fixture(scope="module")
def uninterrupted(standard_dataset, tiny_base_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    return _train(
        standard_dataset,
        tiny_base_model,
        root / "model",
        root / "checkpoints",
        report_to="tensorboard",
        tensorboard_dir=root / "tb",
    )


@pytest.fixture(scope="module")
def interrupted(standard_dataset, tiny_base_model, tmp_path_factory) -> Path:
    """The checkpoints of a run stopped after step 3: the latest is step 2's."""
    root = tmp_path_factory.mktemp("interrupted")
    first = _train(standard_dataset, tiny_base_model, root / "first", root / "checkpoints", stop_after=2)
    assert first.stopped_early and first.total_steps == 3
    return root / "checkpoints"


def _resume(checkpoints: Path, dataset: Path, base: Path, tmp_path: Path, *, without: str | None = None):
    copy = tmp_path / "checkpoints"
    shutil.copytree(checkpoints, copy)
    if without:
        (latest_checkpoint(copy) / without).unlink()
    return _train(dataset, base, tmp_path / "resumed", copy)


def test_a_resumed_run_ends_with_the_weights_of_a_run_never_interrupted(
    uninterrupted, interrupted, standard_dataset, tiny_base_model, tmp_path
):
    assert latest_checkpoint(interrupted).name == "checkpoint-2"  # step 3's progress is lost, step 2's is not
    resumed = _resume(interrupted, standard_dataset, tiny_base_model, tmp_path)
    assert resumed.total_steps == 6
    # Weights, optimizer moments, schedule, data position and dropout RNG all came back: same model as no stop.
    expected, got = _weights(uninterrupted.output_dir), _weights(resumed.output_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # The starting model's held-out figures are the first attempt's, not the checkpoint's.
    for name in ("test_accuracy_before", "test_margin_before"):
        assert resumed.metrics[name] == pytest.approx(uninterrupted.metrics[name]), name
    assert resumed.metrics["test_margin_after"] == pytest.approx(uninterrupted.metrics["test_margin_after"], rel=1e-4)


def test_resuming_without_the_optimizer_state_would_not_give_the_same_model(
    uninterrupted, interrupted, standard_dataset, tiny_base_model, tmp_path
):
    """Negative control for the test above: the comparison sees a resume that restores weights only."""
    resumed = _resume(interrupted, standard_dataset, tiny_base_model, tmp_path, without="optimizer.pt")
    assert resumed.total_steps == 6
    expected, got = _weights(uninterrupted.output_dir), _weights(resumed.output_dir)
    assert any(not torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-6) for name in expected)


def test_checkpoints_stay_out_of_the_saved_model(uninterrupted):
    assert not list(Path(uninterrupted.output_dir).glob("checkpoint-*"))


def test_tensorboard_receives_the_loss_curve(uninterrupted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(uninterrupted.output_dir).parent / "tb"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [point.step for point in losses] == [1, 2, 3, 4, 5, 6]
    history = [entry["loss"] for entry in uninterrupted.history if "loss" in entry]
    assert [point.value for point in losses] == pytest.approx(history, rel=1e-5)


def test_a_checkpoint_cut_short_by_a_kill_is_skipped_for_the_one_before(tmp_path):
    """A worker killed while writing checkpoint-4 leaves it without weights: resuming starts from checkpoint-2."""
    for step, files in ((2, ("trainer_state.json", "model.safetensors")), (4, ("trainer_state.json",))):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / "checkpoint-4" / "model.safetensors").write_text("{}")  # control: once complete, it is the latest
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
