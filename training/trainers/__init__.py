"""Pure-ML training entry points for PrefLoop: thin wrappers over TRL, no Django.

A Celery task (or a test, or a notebook) calls `train_reward_model(...)` or `train_dpo(...)` with a dataset
directory, a model path and a run config, and gets back a `TrainResult`.

Importing this package stays light: the web process imports `training.trainers.config` to validate admin forms, and
Python runs this `__init__` first. So only the config and result names are imported eagerly; the torch-backed
names load on first use (PEP 562 module `__getattr__`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import RUN_CONFIGS, ConfigError, DPORunConfig, RewardRunConfig
from .result import TrainResult

if TYPE_CHECKING:
    from .data import load_preference_splits
    from .distributed import process_count, train_distributed
    from .dpo import train_dpo
    from .progress import ProgressReporter
    from .reward import train_reward_model
    from .tiny import build_tiny_causal_lm, build_tiny_tokenizer

_LAZY = {
    "train_reward_model": ".reward",
    "train_dpo": ".dpo",
    "train_distributed": ".distributed",
    "process_count": ".distributed",
    "load_preference_splits": ".data",
    "ProgressReporter": ".progress",
    "build_tiny_causal_lm": ".tiny",
    "build_tiny_tokenizer": ".tiny",
}

__all__ = [
    "RUN_CONFIGS",
    "ConfigError",
    "DPORunConfig",
    "ProgressReporter",
    "RewardRunConfig",
    "TrainResult",
    "build_tiny_causal_lm",
    "build_tiny_tokenizer",
    "load_preference_splits",
    "process_count",
    "train_distributed",
    "train_dpo",
    "train_reward_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
