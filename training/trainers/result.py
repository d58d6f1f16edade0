"""What a training run hands back to its caller (a Celery task, a test, a notebook)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainResult:
    """Outcome of one run. Everything here is JSON-serialisable so a task can store `to_dict()` on the run row.

    When `stopped_early` is True the run was cancelled through `should_stop`: nothing was saved to `output_dir` and
    only the "before" metrics exist, so the caller must not register a model from it.
    """

    output_dir: str
    #: Flat name -> float: held-out metrics before/after training (`test_*_before`, `test_*_after`), `test_pairs`,
    #: `train_pairs` (after TRL's length filtering), what `max_length` did to each split TRL was given
    #: (`train_pairs_dropped`, `train_pairs_truncated`, and `test_*` likewise when evaluation is on; see
    #: `lengths`), and TRL's end-of-training summary (`train_loss`, `train_runtime`).
    metrics: dict[str, float]
    #: One dict per TRL log event, each with its `step`: loss, learning rate, grad norm, TRL's own metrics.
    #: NaN/inf values are stored as None (JSON has no NaN).
    history: list[dict[str, float | None]]
    #: Where training ran, e.g. "cpu" or "cuda:0 NVIDIA H100 80GB HBM3".
    device: str
    #: Optimizer steps actually completed (fewer than planned when stopped early).
    total_steps: int
    #: Preference pairs processed by the training loop, counting repeats across epochs.
    train_samples: int
    #: Non-padding tokens processed by the training loop (chosen and rejected sequences, prompt included in each).
    train_tokens: int
    #: Whole call: loading, evaluation, training and saving.
    wall_seconds: float
    #: The training loop alone, the denominator for throughput.
    train_seconds: float
    #: CUDA: `torch.cuda.max_memory_allocated` during the call. CPU: the process's peak resident set size so far.
    peak_memory_bytes: int
    #: True when `should_stop` cancelled the run.
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)
