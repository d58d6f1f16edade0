"""Plumbing shared by the reward and DPO runs: device choice, TRL arguments, counters, memory, result assembly."""

from __future__ import annotations

import gc
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PrinterCallback

from .config import _RunConfig
from .progress import ProgressReporter
from .result import TrainResult


def resolve_device(requested: str) -> str:
    """ "cuda" or "cpu". Asking for CUDA where there is none is an error, not a silent fall-back to a slow CPU run."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("The run config asks for device='cuda', but this process sees no CUDA device.")
    return requested


def describe_device(device: str) -> str:
    """Human-readable device, e.g. "cpu" or "cuda:0 NVIDIA H100 80GB HBM3"."""
    if device != "cuda":
        return "cpu"
    index = torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def use_bf16(config: _RunConfig, device: str) -> bool:
    """bf16 autocast where the hardware does it natively; fp32 on CPU, where bf16 is slow and only adds noise."""
    if config.bf16 is not None:
        return config.bf16
    return device == "cuda" and torch.cuda.is_bf16_supported()


def resolve_dtype(config: _RunConfig, device: str) -> str:
    """The weights' precision by name: the config's; for 'auto' bfloat16 on CUDA that has it, else float32."""
    if config.dtype != "auto":
        return config.dtype
    return "bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32"


def trl_arguments(config: _RunConfig, *, output_dir: Path, device: str) -> dict[str, Any]:
    """Keyword arguments shared by `RewardConfig` and `DPOConfig` (both `TrainingArguments`)."""
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "per_device_train_batch_size": config.per_device_batch_size,
        "per_device_eval_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,  # the initial loss anchors the loss curve
        "logging_nan_inf_filter": False,  # a NaN loss must reach the history, not be replaced by a running mean
        "eval_strategy": "steps" if config.eval_steps else "no",
        "eval_steps": config.eval_steps,
        # Checkpoints are for resuming only (see `lifecycle`); a finished run's model is saved separately, then
        # registered atomically by the caller. Only the latest is kept: resuming needs no other.
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "save_total_limit": 1,
        "report_to": "none",
        "disable_tqdm": True,  # no progress bars in worker logs; see quiet_console
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device == "cuda",
        "use_cpu": device == "cpu",
        "bf16": use_bf16(config, device),
        # TRL loads a model given by path in float32 unless told otherwise (transformers would read the config's).
        "model_init_kwargs": {"dtype": resolve_dtype(config, device)},
        # transformers 5.24 renamed gradient_checkpointing; TRL still defaults the old name to True.
        "activation_checkpointing": config.gradient_checkpointing,
    }


def load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the model; TRL fills in a missing pad token from EOS."""
    return AutoTokenizer.from_pretrained(model_path)


def require_test_split(config: _RunConfig, test_size: int, dataset_path: str | Path) -> None:
    """Held-out metrics need held-out pairs; say so before minutes of model loading."""
    if (config.eval or config.eval_steps) and test_size == 0:
        raise ValueError(
            f"{Path(dataset_path) / 'test.parquet'} has no rows, but held-out evaluation is on; "
            "set eval=false and eval_steps=null to train without it."
        )


def quiet_console(trainer: Any) -> None:
    """Drop transformers' PrinterCallback, which prints every log dict to stdout.

    Progress already reaches the caller through `on_log` (and `TrainResult.history`); printing it again would double
    every line in a worker's log. Warnings and errors still go through `logging`/`warnings` as usual.
    """
    trainer.remove_callback(PrinterCallback)


class ThroughputMixin:
    """Counts the pairs and non-padding tokens the training loop consumes.

    TRL's preference collators stack a batch as [chosen rows, rejected rows], so pairs = rows / 2. Mixed into a TRL
    trainer subclass: `class _Trainer(ThroughputMixin, RewardTrainer)`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_pairs_seen = 0
        self.train_tokens_seen = 0

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        self.train_pairs_seen += inputs["input_ids"].shape[0] // 2
        self.train_tokens_seen += int(inputs["attention_mask"].sum())
        # The TRL trainer this is mixed into (see the class docstring) defines training_step.
        return super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]


@dataclass
class RunClock:
    """Wall time and peak memory of one call."""

    device: str
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, device: str) -> RunClock:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return cls(device=device)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def peak_memory_bytes(self) -> int:
        if self.device == "cuda":
            return int(torch.cuda.max_memory_allocated())
        # ru_maxrss is the process's lifetime peak: KiB on Linux, bytes on macOS.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def phase_metrics(prefix_metrics: dict[str, float], phase: str) -> dict[str, float]:
    """{"accuracy": x} -> {"test_accuracy_before": x}."""
    return {f"test_{name}_{phase}": value for name, value in prefix_metrics.items()}


def summary_metrics(train_output_metrics: dict[str, Any]) -> dict[str, float]:
    """TRL's end-of-training summary (train_loss, train_runtime, ...) as plain floats."""
    return {
        key: float(value)
        for key, value in train_output_metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def build_result(
    *,
    trainer: Any,
    progress: ProgressReporter,
    output_dir: Path,
    metrics: dict[str, float],
    train_seconds: float,
    clock: RunClock,
) -> TrainResult:
    return TrainResult(
        output_dir=str(output_dir),
        metrics=metrics,
        history=progress.history,
        device=describe_device(clock.device),
        total_steps=int(trainer.state.global_step),
        train_samples=int(trainer.train_pairs_seen),
        train_tokens=int(trainer.train_tokens_seen),
        wall_seconds=clock.elapsed(),
        train_seconds=train_seconds,
        peak_memory_bytes=clock.peak_memory_bytes(),
        stopped_early=progress.stopped_early,
    )


def release_memory(device: str) -> None:
    """Free the run's tensors now: a Celery worker process lives on to run the next task on the same GPU."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
