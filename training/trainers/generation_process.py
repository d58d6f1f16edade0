"""Generation in a process of its own: the worker starts it, follows its progress and reads its result.

vLLM must not run inside a Celery prefork child (a daemon process, which may not start the engine's own worker
processes) and holds its GPU memory until its process exits. So a generation with the vLLM engine — or any engine,
when the `PREFLOOP_GENERATION_PROCESS` setting says "always" — runs here: `python -m
training.trainers.generation_process <spec>` samples with the same `generate` as in-process, appends progress lines,
writes its result and exits, freeing everything it loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import child_process
from .generation import GenerationConfig, GenerationResult, Prompt, generate

POLL_SECONDS = 0.5


def generate_in_subprocess(
    *,
    model_path: str,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    on_progress: Callable[[int, int], None] | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> GenerationResult:
    """`generate(...)` in a child process; the same result, or a RuntimeError carrying the child's own output."""
    work = Path(tempfile.mkdtemp(prefix="prefloop-generation-"))
    try:
        progress, result_path, log_path = work / "progress", work / "result.json", work / "generation.log"
        spec = {
            "model_path": model_path,
            "prompts": list(prompts),
            "config": config.to_dict(),
            "engine_options": dict(engine_options or {}),
            "progress": str(progress),
            "result": str(result_path),
        }
        (work / "spec.json").write_text(json.dumps(spec))
        command = child_process.python_command("-m", __name__, str(work / "spec.json"))
        process = child_process.start(command, log_path=log_path)
        try:
            offset = 0
            while process.poll() is None:
                offset = _forward_progress(progress, offset, on_progress)
                time.sleep(POLL_SECONDS)
            _forward_progress(progress, offset, on_progress)
        finally:
            if process.poll() is None:
                child_process.kill_group(process)
        if process.returncode != 0 or not result_path.exists():
            raise RuntimeError(
                f"The generation process exited with status {process.returncode}:\n{child_process.tail(log_path)}"
            )
        return GenerationResult(**json.loads(result_path.read_text()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _forward_progress(path: Path, offset: int, on_progress: Callable[[int, int], None] | None) -> int:
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.splitlines():
        done, total = (int(part) for part in line.split())
        if on_progress is not None:
            on_progress(done, total)
    return offset + len(complete)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    progress = Path(spec["progress"])

    def on_progress(done: int, total: int) -> None:
        with progress.open("a") as handle:
            handle.write(f"{done} {total}\n")

    result = generate(
        model_path=spec["model_path"],
        prompts=spec["prompts"],
        config=GenerationConfig(**spec["config"]),
        on_progress=on_progress,
        engine_options=spec["engine_options"],
    )
    result.extra["pid"] = os.getpid()  # which process sampled: the worker can tell it was not itself
    partial = Path(spec["result"]).with_suffix(".partial")
    partial.write_text(json.dumps(dataclasses.asdict(result)))
    partial.replace(spec["result"])  # the worker never reads half a result


if __name__ == "__main__":
    main(sys.argv[1])
