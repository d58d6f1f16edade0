#!/usr/bin/env python
"""Judge throughput: checks per second of each programmatic judge, and what a sandboxed unit-test run costs.

    python benchmarks/judge_speed.py [--items 400] [--unit-tests 32]

Completions are synthetic answers (half right). The unit-test judge runs `--unit-tests` completions one by one and
then as one batch (side by side, one sandbox per CPU). Prints figures with the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.judges.base import JudgeInput, Reference
from training.judges.build import build_judge

TESTS = "from solution import add\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"


def _rate(judge, items: list[JudgeInput]) -> tuple[float, float]:
    """(items per second, CPU seconds per 1,000 items) of one batch."""
    wall, cpu = time.perf_counter(), time.process_time()
    judge.score_batch(items)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(items) / wall, 1e6 * cpu / len(items)  # seconds → ms, per item → per 1,000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--unit-tests", type=int, default=32)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.items} items per checker")
    answers = [
        JudgeInput("What is 6*7?", f"The answer is {42 if i % 2 else i}.", Reference(answer="42"))
        for i in range(args.items)
    ]
    checkers = {
        "exact": ({"extract": "last_line"}, answers),
        "regex": ({"pattern": r"answer is {answer}\b"}, answers),
        "math": ({}, answers),
        "length": ({"min": 3, "max": 8}, answers),
        "format": ({"require": "code_block"}, answers),
    }
    print(f"{'judge':12} {'checks/s':>10} {'CPU ms/1k':>10}")
    for kind, (config, items) in checkers.items():
        judge = build_judge(kind, config)
        judge.score_batch(items[:2])  # warm-up (math-verify's first call parses its grammar)
        rate, cpu = _rate(judge, items)
        print(f"{kind:12} {rate:>10,.0f} {cpu:>10,.0f}")
    judge = build_judge("unit_tests", {})
    runs = [JudgeInput("Write add.", RIGHT if i % 2 else WRONG, Reference(tests=TESTS)) for i in range(args.unit_tests)]
    started = time.perf_counter()
    results = [judge.score(item.prompt, item.completion, item.reference) for item in runs]
    one_by_one = (time.perf_counter() - started) / len(runs)
    started = time.perf_counter()
    judge.score_batch(runs)
    batched = (time.perf_counter() - started) / len(runs)
    isolation = results[0].details.get("isolation", "?")
    print(f"unit_tests   {one_by_one:.3f} s/rollout one by one, {batched:.3f} s/rollout batched ({isolation})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
