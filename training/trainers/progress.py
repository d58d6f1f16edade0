"""A TrainerCallback that connects a training loop to plain callables: progress, cancellation and liveness.

The Django side passes three functions and never sees transformers: `on_log` writes progress to the run row,
`should_stop` polls a "cancel requested" flag, `heartbeat` touches a timestamp a reaper watches to detect dead workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

OnLog = Callable[[int, int, dict[str, float | None]], None]
ShouldStop = Callable[[], bool]
Heartbeat = Callable[[], None]


class ProgressReporter(TrainerCallback):
    """Forward TRL's log events, stop when asked, beat once per optimizer step (and per accumulation micro-step).

    Exceptions raised by the callables propagate and fail the run: a progress sink that cannot write is a real error,
    not something to hide.
    """

    def __init__(
        self,
        *,
        on_log: OnLog | None = None,
        should_stop: ShouldStop | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._on_log = on_log
        self._should_stop = should_stop
        self._heartbeat = heartbeat
        self.history: list[dict[str, float | None]] = []
        self.stopped_early = False

    def beat(self) -> None:
        """Signal liveness; also called by evaluation loops, which can be long on a big test split."""
        if self._heartbeat is not None:
            self._heartbeat()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.beat()

    def on_substep_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.beat()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.beat()
        if self._should_stop is not None and self._should_stop():
            self.stopped_early = True
            control.should_training_stop = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        entry = {"step": state.global_step, **_numeric(logs or {})}
        self.history.append(entry)
        if self._on_log is not None:
            self._on_log(state.global_step, state.max_steps, dict(entry))


def _numeric(logs: dict[str, Any]) -> dict[str, float | None]:
    """Numeric values as floats; NaN/inf become None because JSON (and Postgres JSONB) has no NaN."""
    out: dict[str, float | None] = {}
    for key, value in logs.items():
        if hasattr(value, "item") and not isinstance(value, (int, float)):  # 0-d tensor or numpy scalar
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value) if math.isfinite(value) else None
    return out
