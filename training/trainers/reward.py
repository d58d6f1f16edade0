"""Bradley-Terry reward-model training: the shared lifecycle (setup -> evaluate -> train -> evaluate -> save) over TRL.

TRL's `RewardTrainer` loads `base_model` as `AutoModelForSequenceClassification(num_labels=1)` (a causal-LM
checkpoint gets a fresh scalar head) and minimises -log sigmoid(r_chosen - r_rejected). The pairs are tokenized by
`tokenization` (TRL's own rules: EOS appended, BOS once, chat template), the function reward scoring uses too, and
TRL sees the id columns and skips its own tokenizing. We add what a production run needs around it:
progress/cancel/heartbeat, held-out accuracy before and after, and throughput figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from datasets import Dataset
from trl import RewardConfig, RewardTrainer

from ._runtime import ThroughputMixin, load_tokenizer, phase_metrics, quiet_console, trl_arguments
from .config import RewardRunConfig
from .evaluation import reward_metrics, reward_scores
from .lifecycle import run_preference_training
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult
from .tokenization import REWARD, tokenize_preference_dataset


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
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train a reward model on `dataset_path`'s train split and save it with its tokenizer to `output_dir`.

    `base_model` is a local directory (or a hub id where a hub is reachable). Metrics hold held-out pairwise accuracy
    (score(chosen) > score(rejected)) and mean margin on the test split, before and after training. A run cancelled
    through `should_stop` saves nothing and returns `stopped_early=True`.
    """
    return run_preference_training(
        _RewardRecipe(base_model=base_model, config=config),
        dataset_path=dataset_path,
        output_dir=output_dir,
        config=config,
        on_log=on_log,
        should_stop=should_stop,
        heartbeat=heartbeat,
        checkpoint_dir=checkpoint_dir,
        tensorboard_dir=tensorboard_dir,
    )


@dataclass
class _RewardRecipe:
    kind: ClassVar[str] = "reward"
    base_model: str
    config: RewardRunConfig

    def setup(
        self,
        *,
        train_dataset: Dataset,
        eval_dataset: Dataset | None,
        output_dir: Path,
        device: str,
        progress: ProgressReporter,
    ) -> _RewardTrainer:
        args = RewardConfig(
            **trl_arguments(self.config, output_dir=output_dir, device=device),
            center_rewards_coefficient=self.config.center_rewards_coefficient,
        )
        tokenizer = load_tokenizer(self.base_model)
        if eval_dataset is not None:
            eval_dataset = tokenize_preference_dataset(eval_dataset, tokenizer, kind=REWARD)
        trainer = _RewardTrainer(
            model=self.base_model,
            args=args,
            # With chosen_ids/rejected_ids present, TRL only applies its max_length filter.
            train_dataset=tokenize_preference_dataset(train_dataset, tokenizer, kind=REWARD),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[progress],
        )
        quiet_console(trainer)
        return trainer

    def run_metrics(self) -> dict[str, float]:
        return {}

    def held_out_metrics(self, trainer: _RewardTrainer, progress: ProgressReporter, phase: str) -> dict[str, float]:
        # trainer.eval_dataset is the test split as TRL prepared it (EOS, chat template, pairs over max_length dropped).
        chosen, rejected = reward_scores(
            trainer.model,
            trainer.get_eval_dataloader(),
            autocast=trainer.accelerator.autocast,
            heartbeat=progress.beat,
            gather=trainer.accelerator.gather_for_metrics,  # every pair once under a multi-process launch
        )
        metrics = {"test_pairs": float(len(chosen))}
        if len(chosen):
            metrics |= phase_metrics(reward_metrics(chosen, rejected), phase)
        return metrics

    def save(self, trainer: _RewardTrainer, output_dir: Path) -> None:
        trainer.save_model(str(output_dir))  # model + tokenizer (Trainer saves its processing_class)
