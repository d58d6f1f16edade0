#!/usr/bin/env python
"""Generation throughput: new tokens/s of `training.trainers.generation.generate` (HF generate; vLLM where usable).

    python benchmarks/generation_speed.py [--model PATH] [--prompts 32] [--samples 4] [--max-new-tokens 64]
        [--batch-size 16]

Without --model it builds a small local GPT-2 (6 layers × 256, the training benchmark's size). With a GPU and
vLLM installed it runs both engines on the same model and settings. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local model directory (default: build a small GPT-2)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    from training.trainers.generation import GenerationConfig, generate, vllm_usable
    from training.trainers.tiny import build_tiny_causal_lm

    model = args.model or str(
        build_tiny_causal_lm(Path(tempfile.mkdtemp()) / "gpt2-6x256", n_layer=6, n_embd=256, n_head=4)
    )
    prompts = [f"Question {i}: how would you explain topic number {i} to a friend?\n" for i in range(args.prompts)]
    engines = ["hf"] + (["vllm"] if vllm_usable() else [])
    print(
        f"model {model}  prompts {args.prompts} × samples {args.samples}, max_new_tokens {args.max_new_tokens},"
        f" batch {args.batch_size} prompts"
    )
    print(f"torch threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")
    print(f"{'engine':8} {'device':28} {'new tokens':>10} {'seconds':>8} {'tokens/s':>10}")
    for engine in engines:
        config = GenerationConfig(
            n_samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=engine
        )
        generate(model_path=model, prompts=prompts[:2], config=config)  # warm-up: load, kernels, caches
        result = generate(model_path=model, prompts=prompts, config=config)
        print(
            f"{engine:8} {result.device:28} {result.new_tokens:>10,} {result.seconds:>8.2f}"
            f" {result.tokens_per_second:>10,.0f}"
        )
    if len(engines) == 1:
        print("vLLM: not measured (needs the vllm package and a CUDA GPU)")


if __name__ == "__main__":
    main()
