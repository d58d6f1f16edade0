"""Time `labeling.services.agreement.agreement` (what the admin's Agreement page and the dashboard compute).

Pure computation on simulated rankings (no database): k rollouts per task, each task ranked by `--annotators`
annotators with noise, every task its own prompt, the default 200 bootstrap resamples, every annotator's row.

    .venv/bin/python benchmarks/agreement_speed.py --tasks 1000 5000 20000 --annotators 3 --k 4
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from labeling.services.agreement import RankingRecord, agreement


def simulate(tasks: int, annotators: int, k: int, seed: int = 0) -> list[RankingRecord]:
    rng = random.Random(seed)
    records = []
    for task in range(tasks):
        quality = [rng.gauss(0, 1) for _ in range(k)]
        ids = [task * 16 + i for i in range(k)]
        for annotator in range(annotators):
            seen = sorted(ids, key=lambda rid: -(quality[rid - ids[0]] + rng.gauss(0, 0.7)))
            records.append(RankingRecord(task, task, annotator, [[rid] for rid in seen]))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    for tasks in args.tasks:
        records = simulate(tasks, args.annotators, args.k)
        wall, cpu = time.perf_counter(), time.process_time()
        report = agreement(records)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{tasks:>7,} tasks × {args.annotators} annotators, k={args.k}: {len(records):>7,} rankings, "
            f"α={report.alpha.value:.3f} [{report.alpha.low:.3f}, {report.alpha.high:.3f}]  "
            f"{wall:6.2f} s wall, {cpu:6.2f} s CPU  (load average {os.getloadavg()[0]:.2f})"
        )


if __name__ == "__main__":
    main()
