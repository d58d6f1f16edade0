"""What each process of a multi-process run executes (`accelerate launch -m training.trainers.distributed_entry`).

It runs the same trainer a single-process run does; only the plumbing to the worker differs (see `distributed`):
rank 0 writes the log events and the result, every rank watches the stop file, and the ranks agree on stopping.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import RUN_CONFIGS, DPORunConfig, RewardRunConfig
from .result import TrainResult


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    config = RUN_CONFIGS[spec["kind"]].from_dict(spec["config"])
    events = Path(spec["events"])
    stop = Path(spec["stop"])

    def on_log(step: int, total_steps: int, logs: dict[str, Any]) -> None:
        if rank == 0:
            with events.open("a") as handle:
                handle.write(json.dumps({"step": step, "total_steps": total_steps, "logs": logs}) + "\n")

    def should_stop() -> bool:
        # Called at every step end on every rank: a collective, so all ranks stop after the same step.
        wanted = torch.tensor([1.0 if stop.exists() else 0.0], device=_collective_device())
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(wanted, op=dist.ReduceOp.MAX)
        return bool(wanted.item())

    common = {
        "dataset_path": spec["dataset_path"],
        "output_dir": spec["output_dir"],
        "on_log": on_log,
        "should_stop": should_stop,
        "checkpoint_dir": spec.get("checkpoint_dir"),
        "tensorboard_dir": spec.get("tensorboard_dir"),
    }
    if isinstance(config, RewardRunConfig):
        from .reward import train_reward_model

        result = train_reward_model(base_model=spec["base_model"], config=config, **common)
    elif isinstance(config, DPORunConfig):
        from .dpo import train_dpo

        result = train_dpo(policy_model=spec["base_model"], config=config, **common)
    else:  # RUN_CONFIGS and this function list the same kinds
        raise ValueError(f"No trainer for run kind {spec['kind']!r}.")
    _combine_across_processes(result)
    if rank == 0:
        partial = Path(spec["result"]).with_suffix(".partial")
        partial.write_text(json.dumps(result.to_dict()))
        partial.replace(spec["result"])  # the worker never reads half a result


def _combine_across_processes(result: TrainResult) -> None:
    """Each process counted its own shard: the run's pairs and tokens are the sums, its peak memory the largest."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    device = _collective_device()
    totals = torch.tensor([result.train_samples, result.train_tokens], dtype=torch.float64, device=device)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)  # float64 holds every count below 2**53 exactly
    peak = torch.tensor([result.peak_memory_bytes], dtype=torch.float64, device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    result.train_samples, result.train_tokens = int(totals[0].item()), int(totals[1].item())
    result.peak_memory_bytes = int(peak.item())
    result.device = f"{result.device} × {dist.get_world_size()} processes"


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo (CPU runs) reduces CPU tensors.
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


if __name__ == "__main__":
    main(sys.argv[1])
