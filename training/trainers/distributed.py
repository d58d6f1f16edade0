"""One run on several processes: `accelerate launch` (DDP, or FSDP) from the worker, progress and cancel kept.

A Celery worker trains a one-process run in its own process. A run with `num_processes > 1` (by default every GPU
the worker sees) is handed to `accelerate launch`, which starts one process per GPU through torchrun; each process
runs the same `train_reward_model` / `train_dpo` as a single-process run (`distributed_entry`), and TRL's Trainer
does the rest (gradient all-reduce, sharded data, one writer when saving). The worker process stays the run's owner:

- progress: rank 0 appends each log event as a JSON line to `events.jsonl`; the worker tails it into `on_log`;
- cancel: the worker's `should_stop` creates a `stop` file; every rank reads it at each step end and the ranks
  agree through an all-reduce, so they stop on the same step (one rank stopping alone would hang the others);
- result: rank 0 writes `result.json` (a `TrainResult`) after saving; the worker reads it once every process exited;
- failure: a non-zero exit raises with the tail of the launcher's output; the worker's own death takes the launch
  down with it (parent-death signal), so no orphan keeps a GPU busy.

Single-process runs never come here: the plain path stays the plain path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import child_process
from .config import DPORunConfig, RewardRunConfig, _RunConfig
from .progress import OnLog, ShouldStop
from .result import TrainResult

#: How often the worker reads the events file and asks `should_stop`.
POLL_SECONDS = 0.5


def process_count(config: _RunConfig) -> int:
    """How many processes train this run: `num_processes`, or every visible GPU when it is unset."""
    if config.num_processes is not None:
        return config.num_processes
    if config.device == "cpu":
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def launch_command(
    *, spec_path: Path, num_processes: int, config: _RunConfig, port: int, python: str = sys.executable
) -> list[str]:
    """The `accelerate launch` command line of one run.

    `--multi_gpu` is accelerate's torchrun launcher; on a machine without GPUs each process then trains on CPU over
    gloo (the trainer's `use_cpu`), which is how the suite exercises this path. Precision stays the run config's
    (`bf16`), not accelerate's: `--mixed_precision no` keeps the launcher from overriding TrainingArguments.
    """
    command = child_process.python_command("-m", "accelerate.commands.launch", python=python)
    command += ["--num_machines", "1", "--num_processes", str(num_processes)]
    command += ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if config.fsdp:
        # FULL_SHARD over the processes; wraps each transformer block, the unit that fits a GPU.
        command += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD"]
        command += ["--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT"]
    else:
        command += ["--multi_gpu"]
    command += ["-m", "training.trainers.distributed_entry", str(spec_path)]
    return command


def train_distributed(
    kind: str,
    *,
    dataset_path: str | Path,
    base_model: str,
    output_dir: str | Path,
    config: RewardRunConfig | DPORunConfig,
    num_processes: int,
    on_log: OnLog | None = None,
    should_stop: ShouldStop | None = None,
    heartbeat: Callable[[], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train `kind` ("reward" or "dpo") on `num_processes` processes; same contract as the single-process trainers."""
    output_dir = Path(output_dir)
    work = output_dir.with_name(f"{output_dir.name}.launch")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    events, stop, result_path = work / "events.jsonl", work / "stop", work / "result.json"
    spec = {
        "kind": kind,
        "dataset_path": str(dataset_path),
        "base_model": base_model,
        "output_dir": str(output_dir),
        "config": config.to_dict(),
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        "tensorboard_dir": str(tensorboard_dir) if tensorboard_dir else None,
        "events": str(events),
        "stop": str(stop),
        "result": str(result_path),
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    log_path = work / "launch.log"
    command = launch_command(spec_path=spec_path, num_processes=num_processes, config=config, port=_free_port())
    try:
        process = child_process.start(command, log_path=log_path, environment=_child_environment())
        try:
            _follow(process, events, stop, on_log, should_stop, heartbeat)
        finally:
            if process.poll() is None:
                child_process.kill_group(process)
        if process.returncode != 0:
            raise RuntimeError(
                f"accelerate launch of {num_processes} processes exited with status {process.returncode}:\n"
                + child_process.tail(log_path)
            )
        if not result_path.exists():
            raise RuntimeError(
                "accelerate launch exited without a result from rank 0:\n" + child_process.tail(log_path)
            )
        return TrainResult(**json.loads(result_path.read_text()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _follow(
    process: subprocess.Popen,
    events: Path,
    stop: Path,
    on_log: OnLog | None,
    should_stop: ShouldStop | None,
    heartbeat: Callable[[], None] | None,
) -> None:
    """Until the launch exits: forward rank 0's log events, beat, and pass a cancel on as the stop file."""
    offset = 0
    while True:
        exited = process.poll() is not None
        offset = _forward_events(events, offset, on_log)
        if exited:
            return
        if heartbeat is not None:
            heartbeat()
        if should_stop is not None and not stop.exists() and should_stop():
            stop.touch()
        time.sleep(POLL_SECONDS)


def _forward_events(events: Path, offset: int, on_log: OnLog | None) -> int:
    """Hand every complete new line of `events` to `on_log`; returns the offset after the last one read."""
    if not events.exists():
        return offset
    with events.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
    for line in complete.splitlines():
        event = json.loads(line)
        if on_log is not None:
            on_log(event["step"], event["total_steps"], event["logs"])
    return offset + len(complete)


def _child_environment() -> dict[str, str]:
    environment = child_process.child_environment()
    # Each process sets its own torch threads; OMP's default would oversubscribe the cores N times.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2)))
    return environment


def _free_port() -> int:
    """A free TCP port for the rendezvous: two runs on one machine must not share accelerate's default 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
