"""The one lifecycle every preference run follows: setup -> evaluate -> train -> evaluate -> save.

In the manner of torchtune's recipes, the steps that differ between the reward and DPO trainers (building the TRL
trainer, measuring the held-out split, saving the weights) live in a small `Recipe`; everything around them lives
here once: device choice, timing, progress/cancel/heartbeat, the empty-test-split check, "a cancelled run saves
nothing", result assembly and freeing memory for the worker's next task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from datasets import Dataset, DatasetDict
from transformers import set_seed

from ._runtime import RunClock, build_result, release_memory, require_test_split, resolve_device, summary_metrics
from .checkpoint_files import latest_complete_checkpoint
from .config import _RunConfig
from .data import load_preference_splits
from .lengths import count_split, log_split
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult

_BEFORE_METRICS = "before_metrics.json"


class Recipe(Protocol):
    """What one kind of preference run adds to the shared lifecycle."""

    @property
    def kind(self) -> str:
        """ "reward" or "dpo": which of TRL's length rules apply (see `lengths`)."""
        ...

    def setup(
        self,
        *,
        train_dataset: Dataset,
        eval_dataset: Dataset | None,
        output_dir: Path,
        device: str,
        progress: ProgressReporter,
    ) -> Any:
        """Build the TRL trainer (a `ThroughputMixin` subclass) with `progress` among its callbacks."""
        ...

    def run_metrics(self) -> dict[str, float]:
        """Figures about the run itself, known once `setup` has run (e.g. what an automatic setting decided)."""
        ...

    def held_out_metrics(self, trainer: Any, progress: ProgressReporter, phase: str) -> dict[str, float]:
        """Metrics on the test split, named `test_*_{phase}` (phase is "before" or "after"), plus `test_pairs`."""
        ...

    def save(self, trainer: Any, output_dir: Path) -> None:
        """Write a loadable model and its tokenizer to `output_dir` (which exists)."""
        ...


def run_preference_training(
    recipe: Recipe,
    *,
    dataset_path: str | Path,
    output_dir: str | Path,
    config: _RunConfig,
    on_log: OnLog | None = None,
    should_stop: ShouldStop | None = None,
    heartbeat: Heartbeat | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train with `recipe` on `dataset_path`'s train split; evaluate before and after when `config.eval` is on.

    A run cancelled through `should_stop` saves nothing and returns `stopped_early=True`.

    With `config.save_steps`, checkpoints go to `checkpoint_dir` (default: beside `output_dir`), never into the saved
    model; when that directory already holds one, training resumes from the latest — weights, optimizer, scheduler,
    data position and RNG — and the "before" metrics are those the first attempt measured, not the checkpoint's.
    With `config.report_to == "tensorboard"`, the log events also go to `tensorboard_dir`.
    """
    output_dir = Path(output_dir)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else output_dir.with_name(f"{output_dir.name}.checkpoints")
    resume_from = latest_checkpoint(checkpoints) if config.save_steps else None
    device = resolve_device(config.device)
    clock = RunClock.start(device)
    progress = ProgressReporter(on_log=on_log, should_stop=should_stop, heartbeat=heartbeat)
    progress.beat()

    splits = load_preference_splits(dataset_path)
    require_test_split(config, len(splits["test"]), dataset_path)
    needs_test = config.eval or config.eval_steps is not None
    # Before the model loads: a reward model's fresh score head (and dropout) draw from the global generators,
    # which TRL only seeds later, inside the Trainer; unseeded, two runs of one seed started from different heads.
    set_seed(config.seed)
    trainer = recipe.setup(
        train_dataset=splits["train"],
        eval_dataset=splits["test"] if needs_test else None,
        # TRL's output directory only receives checkpoints; the model is saved by `recipe.save` below.
        output_dir=checkpoints if config.save_steps else output_dir,
        device=device,
        progress=progress,
    )
    if config.report_to == "tensorboard" and trainer.is_world_process_zero():
        trainer.add_callback(_tensorboard_callback(tensorboard_dir or output_dir.with_name(f"{output_dir.name}.tb")))
    try:
        # Counted after TRL's preprocessing, which may drop pairs that do not fit max_length.
        metrics: dict[str, float] = {"train_pairs": float(len(trainer.train_dataset)), **recipe.run_metrics()}
        metrics |= _length_metrics(recipe.kind, config.max_length, splits, trainer)
        if config.eval:
            metrics |= _before_metrics(
                recipe, trainer, progress, checkpoints if config.save_steps else None, resume_from
            )
        train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        metrics |= summary_metrics(train_output.metrics)
        if not progress.stopped_early:
            if config.eval:
                metrics |= recipe.held_out_metrics(trainer, progress, "after")
            output_dir.mkdir(parents=True, exist_ok=True)
            recipe.save(trainer, output_dir)
        return build_result(
            trainer=trainer,
            progress=progress,
            output_dir=output_dir,
            metrics=metrics,
            train_seconds=float(train_output.metrics.get("train_runtime", 0.0)),
            clock=clock,
        )
    finally:
        del trainer
        release_memory(device)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-<step>` in `checkpoint_dir`, or None (one cut short by a kill is skipped)."""
    found = latest_complete_checkpoint(checkpoint_dir)
    return found[1] if found else None


def _before_metrics(
    recipe: Recipe, trainer: Any, progress: ProgressReporter, checkpoints: Path | None, resume_from: Path | None
) -> dict[str, float]:
    """Held-out metrics of the starting model, kept beside the checkpoints so that a resumed run reports them too."""
    saved = checkpoints / _BEFORE_METRICS if checkpoints is not None else None
    if resume_from is not None and saved is not None and saved.exists():
        return dict(json.loads(saved.read_text()))
    metrics = recipe.held_out_metrics(trainer, progress, "before")
    if saved is not None and trainer.is_world_process_zero():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(metrics))
    return metrics


def _tensorboard_callback(log_dir: str | Path) -> Any:
    # Our own callback with its own writer rather than report_to="tensorboard": transformers would pick the directory
    # from a process-wide environment variable or put it inside the checkpoints.
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def _length_metrics(kind: str, max_length: int | None, splits: DatasetDict, trainer: Any) -> dict[str, float]:
    """`{train,test}_pairs_{dropped,truncated}` from the datasets TRL prepared, each split logged.

    The test split is counted only when TRL was given it (evaluation on): otherwise the run never reads it.
    """
    prepared = {"train": trainer.train_dataset, "test": trainer.eval_dataset}
    metrics: dict[str, float] = {}
    for split, dataset in prepared.items():
        if dataset is None:
            continue
        counts = count_split(split, kind=kind, max_length=max_length, pairs_given=len(splits[split]), prepared=dataset)
        log_split(counts, kind=kind, max_length=max_length)
        metrics |= counts.metrics()
    return metrics
