"""Bradley-Terry reward-model training: a thin lifecycle (setup -> evaluate -> train -> evaluate -> save) over TRL.

TRL's `RewardTrainer` loads `base_model` as `AutoModelForSequenceClassification(num_labels=1)` (a causal-LM
checkpoint gets a fresh scalar head), appends EOS, tokenizes, and minimises -log sigmoid(r_chosen - r_rejected).
We add what a production run needs around it: progress/cancel/heartbeat, held-out accuracy before and after, and
throughput figures.
"""

from __future__ import annotations

from pathlib import Path

from datasets import DatasetDict
from trl import RewardConfig, RewardTrainer

from ._runtime import (
    RunClock,
    ThroughputMixin,
    build_result,
    load_tokenizer,
    phase_metrics,
    quiet_console,
    release_memory,
    require_test_split,
    resolve_device,
    summary_metrics,
    trl_arguments,
)
from .config import RewardRunConfig
from .data import load_preference_splits
from .evaluation import reward_metrics, reward_scores
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult


class _RewardTrainer(ThroughputMixin, RewardTrainer):
    """TRL's RewardTrainer, counting pairs and tokens for throughput."""


def train_reward_model(
    *,
    dataset_path: str | Path,
    base_model: str,
    output_dir: str | Path,
    config: RewardRunConfig,
    on_log: OnLog | None = None,
    should_stop: ShouldStop | None = None,
    heartbeat: Heartbeat | None = None,
) -> TrainResult:
    """Train a reward model on `dataset_path`'s train split and save it with its tokenizer to `output_dir`.

    `base_model` is a local directory (or a hub id where a hub is reachable). Metrics hold held-out pairwise accuracy
    (score(chosen) > score(rejected)) and mean margin on the test split, before and after training. A run cancelled
    through `should_stop` saves nothing and returns `stopped_early=True`.
    """
    output_dir = Path(output_dir)
    device = resolve_device(config.device)
    clock = RunClock.start(device)
    progress = ProgressReporter(on_log=on_log, should_stop=should_stop, heartbeat=heartbeat)
    progress.beat()

    splits = load_preference_splits(dataset_path)
    require_test_split(config, len(splits["test"]), dataset_path)
    trainer = _setup_trainer(
        splits=splits, base_model=base_model, output_dir=output_dir, config=config, device=device, progress=progress
    )
    try:
        # Counted after TRL's preprocessing, which drops pairs longer than max_length.
        metrics: dict[str, float] = {"train_pairs": float(len(trainer.train_dataset))}
        if config.eval:
            metrics |= _held_out_metrics(trainer, progress, "before")
        train_output = trainer.train()
        metrics |= summary_metrics(train_output.metrics)
        if not progress.stopped_early:
            if config.eval:
                metrics |= _held_out_metrics(trainer, progress, "after")
            output_dir.mkdir(parents=True, exist_ok=True)
            trainer.save_model(str(output_dir))  # model + tokenizer (Trainer saves its processing_class)
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


def _setup_trainer(
    *,
    splits: DatasetDict,
    base_model: str,
    output_dir: Path,
    config: RewardRunConfig,
    device: str,
    progress: ProgressReporter,
) -> _RewardTrainer:
    needs_test = config.eval or config.eval_steps is not None
    args = RewardConfig(
        **trl_arguments(config, output_dir=output_dir, device=device),
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    trainer = _RewardTrainer(
        model=base_model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["test"] if needs_test else None,
        processing_class=load_tokenizer(base_model),
        callbacks=[progress],
    )
    quiet_console(trainer)
    return trainer


def _held_out_metrics(trainer: _RewardTrainer, progress: ProgressReporter, phase: str) -> dict[str, float]:
    # trainer.eval_dataset is the test split as TRL prepared it (EOS, chat template, pairs over max_length dropped).
    chosen, rejected = reward_scores(
        trainer.model,
        trainer.get_eval_dataloader(),
        autocast=trainer.accelerator.autocast,
        heartbeat=progress.beat,
    )
    metrics = {"test_pairs": float(len(chosen))}
    if len(chosen):
        metrics |= phase_metrics(reward_metrics(chosen, rejected), phase)
    return metrics
