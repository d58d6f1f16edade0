"""Training throughput of the reward-model and DPO trainers: tokens/s, pairs/s, peak memory and, on CUDA, MFU.

    python benchmarks/train_throughput.py                       # small local GPT-2 (6 x 256), CUDA if present
    python benchmarks/train_throughput.py --device cpu --steps 3
    python benchmarks/train_throughput.py --device cuda --model /models/qwen2.5-0.5b --batch-size 8 --seq-len 1024

It runs the production code path (`train_reward_model`, `train_dpo`) on synthetic pairs and prints figures; it
asserts nothing. No Django import.

Model FLOPs follow the usual 6 * N * tokens rule for a trained model (forward 2N + backward 4N per token), plus
2 * N * tokens for the DPO reference forward. N counts matmul weights (linear layers and the LM head, not embedding
lookups); attention-score FLOPs are left out, so MFU is slightly understated at long sequence lengths. Tokens are
non-padding tokens of the chosen and rejected sequences (the prompt counted in each).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from training.trainers import DPORunConfig, RewardRunConfig, TrainResult

H100_SXM_DENSE_BF16_TFLOPS = 989.0
_SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "zu", "an", "el", "or", "ix", "um", "by")


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as scratch:
        scratch_dir = Path(scratch)
        words = _words(args.seed)
        model_path = args.model or str(_build_default_model(scratch_dir / "model", words, args))
        dataset_dir = _write_dataset(
            scratch_dir / "data", words, model_path=model_path, pairs=args.batch_size * args.steps, args=args
        )
        print(
            f"model={args.model or 'local GPT-2 6x256 (built)'}  device={device}  steps={args.steps}  "
            f"batch={args.batch_size} pairs  seq_len~{args.seq_len} tokens"
        )
        rows = []
        for kind in args.trainers:
            rows.append(_run(kind, model_path, dataset_dir, scratch_dir / f"out-{kind}", device, args))
    _print_table(rows, device, args.peak_tflops)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--model", default=None, help="local causal-LM directory (default: build a 6x256 GPT-2)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per trainer")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps excluded from the steady-state rate")
    parser.add_argument("--batch-size", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--seq-len", type=int, default=256, help="approximate tokens per prompt+completion")
    parser.add_argument("--trainers", nargs="+", choices=("reward", "dpo"), default=["reward", "dpo"])
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H100_SXM_DENSE_BF16_TFLOPS,
        help="accelerator peak dense bf16 TFLOP/s for MFU (H100 SXM: 989; H200: 989; A100: 312)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.seq_len < 16:
        parser.error("--steps and --batch-size must be >= 1 and --seq-len >= 16")
    return args


# --- inputs ---------------------------------------------------------------------------------------------------------


def _words(seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(3000)]


def _text(rng: random.Random, words: list[str], n_words: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n_words))


def _build_default_model(out_dir: Path, words: list[str], args: argparse.Namespace) -> Path:
    from training.trainers.tiny import build_tiny_causal_lm

    rng = random.Random(args.seed)
    corpus = [_text(rng, words, 40) for _ in range(2000)]
    return build_tiny_causal_lm(
        out_dir,
        corpus=corpus,
        n_layer=6,
        n_embd=256,
        n_head=4,
        n_positions=max(1024, 2 * args.seq_len),
        vocab_size=4096,
        seed=args.seed,
    )


def _write_dataset(out_dir: Path, words: list[str], *, model_path: str, pairs: int, args: argparse.Namespace) -> Path:
    """Prompt ~ half of --seq-len tokens, each completion the other half, measured with the model's tokenizer."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    rng = random.Random(args.seed + 1)
    sample = _text(rng, words, 200)
    tokens_per_word = len(AutoTokenizer.from_pretrained(model_path)(sample)["input_ids"]) / 200
    words_per_half = max(2, round(args.seq_len / 2 / tokens_per_word))

    def rows(count: int) -> dict[str, list[str]]:
        return {
            "prompt": [_text(rng, words, words_per_half) for _ in range(count)],
            "chosen": [" " + _text(rng, words, words_per_half) for _ in range(count)],
            "rejected": [" " + _text(rng, words, words_per_half) for _ in range(count)],
        }

    out_dir.mkdir(parents=True)
    Dataset.from_dict(rows(pairs)).to_parquet(str(out_dir / "train.parquet"))
    Dataset.from_dict(rows(args.batch_size)).to_parquet(str(out_dir / "test.parquet"))
    return out_dir


# --- measurement ----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    matmul_params: int
    result: TrainResult
    steady_tokens_per_s: float | None
    steady_pairs_per_s: float | None


class _StepTimer:
    """on_log sink recording (time, step, cumulative tokens) to compute a steady-state rate after warm-up."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int, float]] = []

    def __call__(self, step: int, total_steps: int, logs: dict) -> None:
        if "loss" in logs and logs.get("num_tokens") is not None:
            self.marks.append((time.perf_counter(), step, logs["num_tokens"]))

    def steady_rates(self, warmup_steps: int, pairs_per_step: int) -> tuple[float | None, float | None]:
        warm = [mark for mark in self.marks if mark[1] >= max(1, warmup_steps)]
        if len(warm) < 2:
            return None, None
        (t0, step0, tokens0), (t1, step1, tokens1) = warm[0], warm[-1]
        return (tokens1 - tokens0) / (t1 - t0), (step1 - step0) * pairs_per_step / (t1 - t0)


def _run(kind: str, model_path: str, dataset_dir: Path, output_dir: Path, device: str, args) -> Row:
    common = {
        "max_steps": args.steps,
        "per_device_batch_size": args.batch_size,
        "max_length": 2 * args.seq_len,
        "logging_steps": 1,  # one mark per step for the steady-state rate
        "eval": False,
        "device": device,
        "seed": args.seed,
    }
    timer = _StepTimer()
    if kind == "reward":
        from training.trainers.reward import train_reward_model

        result = train_reward_model(
            dataset_path=dataset_dir,
            base_model=model_path,
            output_dir=output_dir,
            config=RewardRunConfig.from_dict(common),
            on_log=timer,
        )
    else:
        from training.trainers.dpo import train_dpo

        result = train_dpo(
            dataset_path=dataset_dir,
            policy_model=model_path,
            output_dir=output_dir,
            config=DPORunConfig.from_dict(common),
            on_log=timer,
        )
    steady_tokens, steady_pairs = timer.steady_rates(args.warmup_steps, args.batch_size)
    return Row(kind, _matmul_params(model_path, kind), result, steady_tokens, steady_pairs)


def _matmul_params(model_path: str, kind: str) -> int:
    """Weights that take part in a matmul per token; built on the meta device, so no memory is used."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(model_path, num_labels=1)
    with torch.device("meta"):
        if kind == "reward":
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    # Per module, not per parameter: a tied LM head is an embedding lookup once and a matmul once.
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, (torch.nn.Linear, Conv1D)))


def _print_table(rows: list[Row], device: str, peak_tflops: float) -> None:
    print()
    print(
        f"{'trainer':<8} {'N(matmul)':>11} {'steps':>5} {'pairs':>6} {'tokens':>9} {'train s':>8} "
        f"{'tokens/s':>10} {'pairs/s':>8} {'steady tok/s':>12} {'peak mem':>10} {'TFLOP/s':>8} {'MFU':>7}"
    )
    for row in rows:
        result = row.result
        seconds = max(result.train_seconds, 1e-9)
        tokens_per_s = result.train_tokens / seconds
        pairs_per_s = result.train_samples / seconds
        # Policy forward + backward, plus the frozen reference forward for DPO.
        flops_per_token = (6 if row.kind == "reward" else 8) * row.matmul_params
        rate = row.steady_tokens_per_s or tokens_per_s
        tflops = flops_per_token * rate / 1e12
        mfu = f"{100 * tflops / peak_tflops:6.2f}%" if device == "cuda" else "n/a"
        steady = f"{row.steady_tokens_per_s:12.0f}" if row.steady_tokens_per_s else f"{'n/a':>12}"
        print(
            f"{row.kind:<8} {row.matmul_params:>11,} {result.total_steps:>5} {result.train_samples:>6} "
            f"{result.train_tokens:>9,} {seconds:>8.2f} {tokens_per_s:>10.0f} {pairs_per_s:>8.1f} {steady} "
            f"{_human_bytes(result.peak_memory_bytes):>10} {tflops:>8.3f} {mfu:>7}"
        )
    print()
    print(f"device: {rows[0].result.device if rows else device}")
    print("peak mem: torch.cuda.max_memory_allocated per run on CUDA; process peak RSS so far on CPU (cumulative).")
    print(
        "TFLOP/s and MFU use the steady-state token rate (after --warmup-steps) when available, else the whole loop;"
        f" MFU against {peak_tflops:g} TFLOP/s dense bf16."
    )


def _human_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


if __name__ == "__main__":
    main()
