"""GRPO speed: rollouts/s, judge time share, update time share and peak memory, on the toy policy and SmolLM2.

    python benchmarks/grpo_speed.py                               # both models, CPU (CUDA when present)
    python benchmarks/grpo_speed.py --models toy --steps 20
    python benchmarks/grpo_speed.py --models smollm2 --smollm2 var/cache/base-models/gguf-<sha256> --device cpu

It runs the production path (`training.trainers.grpo.train_online`, the math judge on arithmetic prompts) and
prints figures; it asserts nothing. No Django import. Shares are of the time spent inside training steps:
generation (sampling the group's completions, model.generate), judges (scoring them), update (log-probs, loss,
backward, optimizer). Peak memory is the process's peak RSS on CPU (so the largest model run sets it for the rest:
run one model per process to compare), `max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere


def _arithmetic(chat: bool) -> list:
    from training.trainers.grpo import OnlinePrompt

    rows = [(a, b) for a in range(1, 10) for b in range(1, 10)]
    out = []
    for index, (a, b) in enumerate(rows):
        if chat:
            prompt = [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}]
            out.append(OnlinePrompt(index, prompt, answer=str(a + b)))
        else:
            out.append(OnlinePrompt(index, f"{a}+{b}=", answer=str(a + b)))
    return out


def _smollm2_default() -> str | None:
    found = sorted((ROOT / "var" / "cache" / "base-models").glob("gguf-*"))
    return str(found[0]) if found else None


def _run(name: str, model: str, args: argparse.Namespace, work: Path) -> dict:
    import time

    from training.judges.build import build_judge
    from training.trainers.config import GRPORunConfig
    from training.trainers.grpo import WeightedJudge, train_online

    chat = name == "smollm2"
    config = GRPORunConfig.from_dict(
        {
            "max_steps": args.steps,
            "learning_rate": 1e-5 if chat else 5e-3,
            "per_device_batch_size": args.batch_size,
            "num_generations": args.num_generations,
            "max_completion_length": args.completion_tokens if chat else 2,
            "max_length": 256 if chat else 32,
            "eval": False,
            "heldout_fraction": 0.0,
            "logging_steps": 1,
            "device": args.device,
            "seed": 0,
        }
    )
    started = time.perf_counter()
    result = train_online(
        "grpo",
        prompts=_arithmetic(chat),
        judges=[WeightedJudge("math", build_judge("math", {}), 1.0)],
        policy_model=model,
        output_dir=work / name,
        config=config,
    )
    metrics = result.metrics
    rewards = [p["reward"] for p in result.history if p.get("reward") is not None]
    return {
        "model": name,
        "device": result.device,
        "steps": result.total_steps,
        "rollouts": int(metrics["rollouts"]),
        "rollouts/s": metrics["rollouts_per_second"],
        "generation": metrics["generation_time_share"],
        "judges": metrics["judge_time_share"],
        "update": metrics["update_time_share"],
        "peak_mem_gb": result.peak_memory_bytes / 1e9,
        "reward first→last": f"{rewards[0]:.2f}→{rewards[-1]:.2f}" if rewards else "-",
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=("toy", "smollm2"), default=["toy", "smollm2"])
    parser.add_argument("--smollm2", default=_smollm2_default(), help="converted SmolLM2 folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="completions per step")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--completion-tokens", type=int, default=16, help="max_completion_length for SmolLM2")
    args = parser.parse_args(argv)

    from tests.training.grpo_toy import build_char_policy  # the toy the tests learn on

    rows = []
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        work = Path(tmp)
        for name in args.models:
            if name == "toy":
                model = str(build_char_policy(work / "toy-policy"))
            elif args.smollm2:
                model = args.smollm2
            else:
                print("SmolLM2 not converted here (var/cache/base-models); pass --smollm2 DIR", file=sys.stderr)
                continue
            rows.append(_run(name, model, args, work))
    load = os.getloadavg()[0]
    print(
        f"\nGRPO, math judge, {args.steps} steps, {args.batch_size} completions/step "
        f"({args.num_generations} per prompt), load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        "model",
        "device",
        "steps",
        "rollouts",
        "rollouts/s",
        "generation",
        "judges",
        "update",
        "peak_mem_gb",
        "reward first→last",
        "wall_s",
    )
    print(" | ".join(header))
    for row in rows:
        cells = []
        for key in header:
            value = row[key]
            if key in ("generation", "judges", "update"):
                cells.append(f"{value:.0%}")
            elif isinstance(value, float):
                cells.append(f"{value:.2f}")
            else:
                cells.append(str(value))
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
