"""The one lifecycle every preference run follows: setup -> evaluate -> train -> evaluate -> save.

In the manner of torchtune's recipes, the steps that differ between the reward and DPO trainers (building the TRL
trainer, measuring the held-out split, saving the weights) live in a small `Recipe`; everything around them lives
here once: device choice, timing, progress/cancel/heartbeat, the empty-test-split check, "a cancelled run saves
nothing", result assembly and freeing memory for the worker's next task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from datasets import Dataset, DatasetDict
from transformers import set_seed

from ._runtime import RunClock, build_result, release_memory, require_test_split, resolve_device, summary_metrics
from .config import _RunConfig
from .data import load_preference_splits
from .lengths import count_split, log_split
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult


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
) -> TrainResult:
    """Train with `recipe` on `dataset_path`'s train split; evaluate before and after when `config.eval` is on.

    A run cancelled through `should_stop` saves nothing and returns `stopped_early=True`.
    """
    output_dir = Path(output_dir)
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
        output_dir=output_dir,
        device=device,
        progress=progress,
    )
    try:
        # Counted after TRL's preprocessing, which may drop pairs that do not fit max_length.
        metrics: dict[str, float] = {"train_pairs": float(len(trainer.train_dataset))}
        metrics |= _length_metrics(recipe.kind, config.max_length, splits, trainer)
        if config.eval:
            metrics |= recipe.held_out_metrics(trainer, progress, "before")
        train_output = trainer.train()
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
