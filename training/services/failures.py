"""Why a run failed, in words a researcher acts on, before the traceback that says where.

A worker's exception is written twice on the run: `failure_reason`, one or two plain sentences naming the cause and
the fix when we recognise it (a model the offline machine cannot load, memory, a bad setting), and `error`, the whole
traceback, never cut (the page folds it away). Unrecognised errors keep their own message as the reason.
"""

from __future__ import annotations

import traceback

from training.services.registry import looks_like_local_path

# Longest reason shown first; an exception message can be pages long (a tokenizer dumping its vocabulary).
_REASON_CHARS = 600
# Phrases of huggingface_hub / transformers errors that mean "the files are not here and cannot be fetched".
_NOT_AVAILABLE_MARKERS = (
    "couldn't connect to 'https://huggingface.co'",
    "cannot find the requested files in the disk cache",
    "outgoing traffic has been disabled",
    "is not a local folder and is not a valid model identifier",
    "we couldn't connect",
)


def failure_reason(error: BaseException, *, starting_model: str = "") -> str:
    """One or two sentences: what went wrong and what to do about it."""
    message = _chain_text(error).lower()
    name = starting_model.strip()
    if isinstance(error, OSError) and any(marker in message for marker in _NOT_AVAILABLE_MARKERS):
        if name and not looks_like_local_path(name):
            return (
                f"Model `{name}` is not available offline: the hub cannot be reached and it is not in the local "
                "cache. Register a base model (Model versions → Register a base model) and start the run from it."
            )
        return f"The model files of `{name or '?'}` could not be loaded on the worker: {_first_line(error)}"
    if isinstance(error, FileNotFoundError) and name and looks_like_local_path(name):
        return f"Model folder `{name}` is missing or incomplete on the worker's machine: {_first_line(error)}"
    if isinstance(error, MemoryError) or "out of memory" in message:
        return (
            "The worker ran out of memory. Lower per_device_batch_size or max_length, or turn on lora or "
            f"gradient_checkpointing. ({_first_line(error)})"
        )
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return "The worker was stopped while the run was training. No model was registered."
    return f"{error.__class__.__name__}: {_first_line(error)}"


def full_error(error: BaseException) -> str:
    """The whole traceback (with chained causes) of the exception being handled, uncut."""
    return "".join(traceback.format_exception(error)).rstrip() + "\n"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else error.__class__.__name__
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"


def _chain_text(error: BaseException) -> str:
    """The messages of the error and the errors it was raised from (transformers wraps the hub's own)."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)
