#!/usr/bin/env python
"""Import benchmark: a generated JSONL file through labeling.services.importing.import_file.

    python benchmarks/import_speed.py --db postgres|sqlite [--prompts 10000] [--rollouts 4] [--profile]

A fresh database (postgres: DROP/CREATE `prefloop_bench_import`, so a load.py run beside it is left
alone; sqlite: a temp file) is migrated, a JSONL file of `--prompts` prompts × `--rollouts` distinct
responses is written to a temp dir, and imported into a new prompt set (rollouts_per_task 4) in this
process. Printed: parse time alone, the import's wall time, rollouts/s, prompts/s, tasks built, the
number of SQL statements and the time spent in them, then a second import of the same file
(idempotent: it must add nothing) with the row counts before and after. `--profile` adds the top
functions of a cProfile of the first import.

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_PG_URL,
    FreshDatabase,
    cpu_busy_ticks,
    cpu_snapshot,
    cpu_split,
    django_setup,
    migrate,
)

WORDS = (
    "the model answer explains a step by step reasoning with one example and a short summary while checking each"
    " claim against the question and noting where it is unsure about the details"
).split()


def write_jsonl(path: Path, prompts: int, rollouts: int, seed: int = 0) -> int:
    """prompts × rollouts distinct responses (~60 words each), two policies; returns bytes written."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for p in range(prompts):
            prompt = f"Prompt {p}: " + " ".join(rng.choices(WORDS, k=25))
            responses = [
                {
                    "text": f"Response {r} to prompt {p}. " + " ".join(rng.choices(WORDS, k=60)),
                    "policy": f"policy-{r % 2}",
                }
                for r in range(rollouts)
            ]
            out.write(json.dumps({"id": f"p{p}", "prompt": prompt, "responses": responses}) + "\n")
    return path.stat().st_size


@contextmanager
def sql_counter():
    """Count SQL statements and the time spent executing them (no SQL text kept)."""
    from django.db import connection

    stats = {"queries": 0, "seconds": 0.0}

    def wrapper(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            stats["queries"] += 1
            stats["seconds"] += time.perf_counter() - started

    with connection.execute_wrapper(wrapper):
        yield stats


def counts() -> dict[str, int]:
    from labeling.models import Prompt, RankingTask, Rollout, TaskRollout

    return {
        "prompts": Prompt.objects.count(),
        "rollouts": Rollout.objects.count(),
        "tasks": RankingTask.objects.count(),
        "task_rollouts": TaskRollout.objects.count(),
    }


def machine_busy() -> float:
    return cpu_busy_ticks()[0] / os.sysconf("SC_CLK_TCK")


def cpu_line(before: tuple, after: tuple, seconds: float, postgres_db: str | None) -> str:
    """Who used the CPU during the import, in % of one core (other jobs on the box skew wall times)."""
    machine = 100 * (after[0] - before[0]) / seconds
    split = cpu_split(before[1], after[1], seconds, {"this process": {os.getpid()}}, postgres_db)
    split["other processes"] = max(0.0, machine - sum(split.values()))
    return f"machine {machine:.0f}% (of {100 * (os.cpu_count() or 1)}%): " + ", ".join(
        f"{label} {value:.0f}%" for label, value in split.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--rollouts", type=int, default=4, help="responses per prompt")
    parser.add_argument("--profile", action="store_true", help="cProfile the first import (slower)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "PREFLOOP_BENCH_IMPORT_PG_URL", DEFAULT_PG_URL.replace("prefloop_bench", "prefloop_bench_import")
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (JSONL file, sqlite file)")
    args = parser.parse_args()

    idle0 = machine_busy()
    time.sleep(1)
    print(f"background CPU before start: {100 * (machine_busy() - idle0):.0f}% of one core")
    database = FreshDatabase(args.db, pg_url=args.pg_url, keep=args.keep)
    try:
        env = database.env()
        migrate(env)
        django_setup(env)

        from django.conf import settings

        from labeling.models import PromptSet
        from labeling.services.importing import import_file
        from labeling.services.parsing import parse_upload

        path = database.tmp / "bench.jsonl"
        size = write_jsonl(path, args.prompts, args.rollouts)
        data = path.read_bytes()
        n_rollouts = args.prompts * args.rollouts
        print(
            f"import benchmark: db={args.db} file={args.prompts} prompts × {args.rollouts} rollouts "
            f"= {n_rollouts} rollouts, {size / 1e6:.1f} MB JSONL; rollouts_per_task=4"
        )

        started = time.perf_counter()
        parse_upload(data, filename=path.name, max_chars=settings.PREFLOOP_MAX_TEXT_CHARS)
        parse_s = time.perf_counter() - started
        print(f"parse only (no database): {parse_s:.2f}s")

        prompt_set = PromptSet.objects.create(name="Import benchmark", rollouts_per_task=4, overlap=1)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        with sql_counter() as sql:
            cpu0 = (machine_busy(), cpu_snapshot())
            started = time.perf_counter()
            report = import_file(prompt_set=prompt_set, data=data, filename=path.name)
            wall = time.perf_counter() - started
            cpu1 = (machine_busy(), cpu_snapshot())
        if profiler is not None:
            profiler.disable()
        print()
        print(f"== first import ({args.db}) ==")
        print(f"wall time:     {wall:.2f}s")
        print(f"rollouts/s:    {report.rollouts_created / wall:,.0f}")
        print(f"prompts/s:     {report.prompts_created / wall:,.0f}")
        print(f"tasks built:   {report.tasks_created}")
        print(f"report:        {report}")
        print(
            f"SQL:           {sql['queries']} statements, {sql['seconds']:.2f}s waiting on the database "
            f"({100 * sql['seconds'] / wall:.0f}% of wall, incl. the driver's parameter conversion; the rest is "
            "Python: parse, hashing, model instances, COMMIT)"
        )
        print(f"CPU:           {cpu_line(cpu0, cpu1, wall, database.pg_name)}")
        before = counts()

        with sql_counter() as sql:
            started = time.perf_counter()
            again = import_file(prompt_set=prompt_set, data=data, filename=path.name)
            wall2 = time.perf_counter() - started
        after = counts()
        print()
        print(f"== second import of the same file ({args.db}, idempotent) ==")
        print(f"wall time:     {wall2:.2f}s")
        print(f"report:        {again}")
        print(f"SQL:           {sql['queries']} statements, {sql['seconds']:.2f}s waiting on the database")
        print(f"rows before:   {before}")
        print(f"rows after:    {after}")
        print(f"rows added:    { {key: after[key] - before[key] for key in after} }")

        if profiler is not None:
            import io
            import pstats

            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            print("\n== cProfile of the first import (cumulative) ==")
            print("\n".join(out.getvalue().splitlines()[:60]))
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        database.close()


if __name__ == "__main__":
    main()
