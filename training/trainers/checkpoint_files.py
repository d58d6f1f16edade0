"""Which checkpoints on disk are complete: pure file checks, importable by the web process (no torch).

A worker killed while writing `checkpoint-<n>` leaves a directory without all its files, and transformers'
`get_last_checkpoint` would still pick it (then refuse it on load), so a resume would fail instead of continuing
from the checkpoint before. A checkpoint counts once it holds its trainer state and its weights.
"""

from __future__ import annotations

import re
from pathlib import Path

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")


def latest_complete_checkpoint(directory: str | Path) -> tuple[int, Path] | None:
    """(step, path) of the newest complete `checkpoint-<step>` in `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    complete = [
        (int(match.group(1)), child)
        for child in directory.iterdir()
        if (match := _CHECKPOINT.fullmatch(child.name)) and _is_complete(child)
    ]
    return max(complete, default=None)


def _is_complete(checkpoint: Path) -> bool:
    return (checkpoint / "trainer_state.json").is_file() and any((checkpoint / name).is_file() for name in _WEIGHTS)
