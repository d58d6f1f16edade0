#!/usr/bin/env python
"""Load benchmark of the ranking queue: N annotators doing next → submit against gunicorn.

    python benchmarks/load.py --db postgres|sqlite [--annotators 32] [--seconds 20] [--workers N]
                              [--threads N] [--keep-alive S] [--prompts 2000] [--overlap 3]
                              [--sets 1] [--across-sets]

Steps: a fresh database (postgres: DROP/CREATE `prefloop_bench`; sqlite: a temp file) →
`manage.py migrate` → a setup step through the ORM and services (a prompt set of `--prompts`
prompts × 4 rollouts, one task each, and `--annotators` users in the annotators group with DRF
tokens) → gunicorn (gthread, DJANGO_DEBUG=0) on 127.0.0.1:<free port> → N closed-loop annotators,
each a thread with its own persistent httpx client, doing POST /api/tasks/next/ → POST
/api/rankings/ until the time is up → gunicorn stopped (SIGTERM, graceful) → correctness counts
read back from the database through the ORM. `--sets N` splits the prompts over N sets; annotators ask for the first
set's tasks, or with `--across-sets` for no set (the queue across all sets).

The server runs with the shipped gunicorn.conf.py (what scripts/run, the Dockerfile and compose start: gthread,
one worker per core, 4 threads, keep-alive 0; that file says why); --workers, --threads, --keep-alive and
--worker-class override it for one run (`--keep-alive 30` measures the unfair setup of issue 13). Every worker
counts its requests and database round trips (benchmarks/_gunicorn_counting.py), printed per cycle.

It prints figures and asserts nothing (exit status 0 unless the benchmark itself could not run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    DEFAULT_PG_URL,
    ROOT,
    FreshDatabase,
    cpu_busy_ticks,
    cpu_snapshot,
    cpu_split,
    django_setup,
    migrate,
    percentile,
)
from benchmarks._load_clients import Annotator, annotate
from benchmarks._load_server import Gunicorn, shipped_settings

PY = sys.executable


# --------------------------------------------------------------------------------------------
# Steps that need Django: run in a child process with the benchmark's DATABASE_URL.
# --------------------------------------------------------------------------------------------


def step_setup(args: argparse.Namespace) -> dict:
    """Prompt set + tasks (through the import service) and annotators with tokens."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from labeling import roles
    from labeling.demo import demo_jsonl
    from labeling.models import PromptSet, RankingTask
    from labeling.services.importing import import_file

    roles.ensure_groups()
    prompt_sets, reports, import_s = [], [], 0.0
    for index in range(args.sets):
        prompt_set = PromptSet.objects.create(
            name=f"Load benchmark {index + 1}",
            rollouts_per_task=4,
            overlap=args.overlap,
            description="benchmarks/load.py",
        )
        started = time.perf_counter()
        data = demo_jsonl(n_prompts=args.prompts // args.sets, responses_per_prompt=4)
        reports.append(str(import_file(prompt_set=prompt_set, data=data)))
        import_s += time.perf_counter() - started
        prompt_sets.append(prompt_set.pk)
    group = Group.objects.get(name=roles.ANNOTATORS)
    User = get_user_model()
    tokens = []
    for index in range(args.annotators):
        user = User(username=f"bench-annotator-{index:03d}")
        user.set_unusable_password()  # no password hashing: it is not what is measured
        user.save()
        user.groups.add(group)
        tokens.append(Token.objects.create(user=user).key)
    return {
        "prompt_set": prompt_sets[0],
        "tasks": RankingTask.objects.count(),
        "first_set_tasks": RankingTask.objects.filter(prompt_set_id=prompt_sets[0]).count(),
        "import": "; ".join(reports),
        "import_s": import_s,
        "tokens": tokens,
    }


def step_check(args: argparse.Namespace) -> dict:
    """Correctness counts, read from the database after the run (gunicorn is stopped)."""
    from django.db.models import Count, F, IntegerField, OuterRef, Q, Subquery, Value
    from django.db.models.functions import Coalesce

    from labeling.models import Assignment, Ranking, RankingTask

    client = json.loads(Path(args.client_file).read_text())
    statuses = Assignment.Status
    tasks = RankingTask.objects.all()

    def count_of(queryset):
        return Coalesce(
            Subquery(queryset.order_by().values("task_id").annotate(n=Count("id")).values("n")[:1]),
            Value(0),
            output_field=IntegerField(),
        )

    holding = Assignment.objects.filter(task_id=OuterRef("pk"), status__in=[statuses.LEASED, statuses.SUBMITTED])
    ranked = Ranking.objects.filter(task_id=OuterRef("pk"))
    with_counts = tasks.annotate(holding=count_of(holding), ranked=count_of(ranked))

    submitted_ids = set(Assignment.objects.filter(status=statuses.SUBMITTED).values_list("id", flat=True))
    all_ids = set(Assignment.objects.values_list("id", flat=True))
    got = set(client["received"])
    ok = set(client["submitted_ok"])
    return {
        "tasks_with_more_rankings_than_overlap": tasks.annotate(n=Count("rankings")).filter(n__gt=F("overlap")).count(),
        "tasks_active_count_over_overlap": tasks.filter(active_count__gt=F("overlap")).count(),
        "task_annotator_pairs_handed_out_twice": Assignment.objects.values("task_id", "annotator_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "assignments_unaccounted_for": Assignment.objects.exclude(status__in=statuses.values).count(),
        "rankings": Ranking.objects.count(),
        "submitted_assignments": len(submitted_ids),
        "rankings_eq_submitted": Ranking.objects.count() == len(submitted_ids),
        # Stricter bookkeeping (beyond the brief's list):
        "tasks_active_count_ne_live_plus_submitted": with_counts.exclude(active_count=F("holding")).count(),
        "tasks_completed_count_ne_rankings": with_counts.exclude(completed_count=F("ranked")).count(),
        "rankings_without_submitted_assignment": Ranking.objects.exclude(assignment__status=statuses.SUBMITTED).count(),
        "client_201_not_submitted_in_db": len(ok - submitted_ids),
        "db_submitted_without_client_201": len(submitted_ids - ok),
        "db_assignments_never_seen_by_a_client": len(all_ids - got),
        "live_leases_left": Assignment.objects.filter(status=statuses.LEASED).count(),
        "assignments_by_status": dict(Counter(Assignment.objects.values_list("status", flat=True))),
        "tasks_done": tasks.filter(status=RankingTask.Status.DONE).count(),
        "tasks_with_free_slot": tasks.filter(Q(status="open") & Q(active_count__lt=F("overlap"))).count(),
    }


def run_step(name: str, database: FreshDatabase, extra_args: list[str]) -> dict:
    """Run `load.py --_step name` in a child with the benchmark environment; parse its JSON line."""
    proc = subprocess.run(
        [PY, __file__, "--_step", name, *extra_args],
        env=database.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{name} step failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_report(before, after, seconds: float, groups: dict[str, set[int]], postgres_db: str | None, cycles: int):
    """Who used the CPU in the window (% of one core), and CPU ms per cycle for the app's parts.

    Other jobs on the machine take cores from the app; CPU per cycle is much less sensitive to them
    than wall-clock figures, so the projection "cores / CPU per cycle" is printed as well.
    """
    (busy0, _), snap0 = before
    (busy1, _), snap1 = after
    machine = 100 * (busy1 - busy0) / os.sysconf("SC_CLK_TCK") / seconds
    split = cpu_split(snap0, snap1, seconds, groups, postgres_db)
    split["other processes"] = max(0.0, machine - sum(split.values()))
    lines = [f"machine {machine:.0f}%: " + ", ".join(f"{label} {value:.0f}%" for label, value in split.items())]
    if cycles:
        per_cycle = {k: 10 * v * seconds / cycles for k, v in split.items() if k != "other processes"}
        total = sum(per_cycle.values())
        cores = os.cpu_count() or 1
        lines.append(
            "CPU per cycle:       "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in per_cycle.items())
            + f" = {total:.1f} ms → at most ~{1000 * cores / total:.0f} cycles/s on {cores} idle cores"
        )
    return "\n".join(lines)


def round_trips_report(counted: dict[str, int], cycles: int) -> str:
    """Round trips per next → submit cycle, over the whole run (warm-up included), from the workers' own counts."""
    if not cycles or not counted:
        return "not counted (no cycle, or the workers wrote no counts)"
    kinds = ("statements", "transactions", "health_checks")
    total = sum(counted.get(kind, 0) for kind in kinds)
    parts = " + ".join(f"{counted.get(kind, 0) / cycles:.2f} {kind.replace('_', ' ')}" for kind in kinds)
    requests = counted.get("requests", 0)
    return (
        f"{total / cycles:.2f} per cycle ({parts}); {requests} requests served for {cycles} cycles "
        f"({total / requests if requests else float('nan'):.2f} per request)"
    )


def background_cpu(seconds: float = 1.0) -> float:
    """% of one core the machine is busy before we start (other jobs skew every figure)."""
    busy0, _ = cpu_busy_ticks()
    time.sleep(seconds)
    busy1, _ = cpu_busy_ticks()
    return 100 * (busy1 - busy0) / os.sysconf("SC_CLK_TCK") / seconds


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return "  ".join(f"p{p}={percentile(ordered, p):7.1f}" for p in (50, 95, 99)) + (
        f"  max={ordered[-1]:7.1f}" if ordered else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20, help="measured window")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before the window (not measured)")
    parser.add_argument("--prompts", type=int, default=2000, help="prompts × 4 rollouts → one task each")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--sets", type=int, default=1, help="prompt sets the prompts are split over")
    parser.add_argument("--across-sets", action="store_true", help="annotators ask for no set (default: the first)")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--worker-class", default=None, help="default: gunicorn.conf.py's (gthread)")
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=None,
        help="gunicorn keep-alive seconds (default: gunicorn.conf.py's, 0: close after each response; a gthread "
        "connection stays on the worker that accepted it while kept alive)",
    )
    parser.add_argument("--preload", action="store_true", help="gunicorn --preload")
    parser.add_argument("--think-ms", type=float, default=0, help="pause between next and submit (closed loop: 0)")
    parser.add_argument("--pg-url", default=os.environ.get("PREFLOOP_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (gunicorn log, sqlite file)")
    parser.add_argument("--_step", choices=["setup", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--client-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step:
        django_setup(dict(os.environ))
        result = step_setup(args) if args._step == "setup" else step_check(args)
        print(json.dumps(result))
        return

    cores = os.cpu_count() or 1
    shipped = shipped_settings()
    effective = {
        "worker class": args.worker_class or shipped["worker_class"],
        "workers": args.workers or shipped["workers"],
        "threads": args.threads or shipped["threads"],
        "keep-alive": f"{shipped['keepalive'] if args.keep_alive is None else args.keep_alive}s",
    }
    print(
        f"load benchmark: db={args.db} annotators={args.annotators} window={args.seconds:g}s "
        f"(+{args.warmup:g}s warm-up) prompts={args.prompts} rollouts/task=4 overlap={args.overlap}"
    )
    overridden = [
        flag for flag in ("worker_class", "workers", "threads", "keep_alive") if getattr(args, flag) is not None
    ]
    print(
        "server: gunicorn "
        + " ".join(f"{k}={v}" for k, v in effective.items())
        + f" (gunicorn.conf.py{', overridden: ' + ', '.join(overridden) if overridden else ''}; "
        f"machine: {cores} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        "load generator shares them)"
    )

    print(f"background CPU before start: {background_cpu():.0f}% of one core")
    database = FreshDatabase(args.db, pg_url=args.pg_url, keep=args.keep)
    server = None
    try:
        print(f"migrate: {migrate(database.env()):.1f}s")
        setup = run_step(
            "setup",
            database,
            [
                *("--prompts", str(args.prompts), "--overlap", str(args.overlap)),
                *("--annotators", str(args.annotators), "--sets", str(args.sets)),
            ],
        )
        asked = None if args.across_sets else setup["prompt_set"]
        print(f"setup: {args.sets} prompt set(s): {setup['import']} (import {setup['import_s']:.2f}s)")
        print("annotators ask for " + ("no set (the queue across all sets)" if asked is None else f"set {asked}"))
        tasks = setup["tasks"] if asked is None else setup["first_set_tasks"]
        print(f"capacity: {tasks * args.overlap} slots, at most {tasks} cycles per annotator")

        server = Gunicorn(database, args)
        server.wait_ready()

        annotators = [Annotator(token, seed=i) for i, token in enumerate(setup["tokens"])]
        go = threading.Event()
        stop_at = [float("inf")]
        threads = [
            threading.Thread(
                target=annotate,
                args=(a, server.url, asked, go, stop_at, args.think_ms / 1000),
                daemon=True,
            )
            for a in annotators
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # let every client be created before the clock starts

        t_start = time.perf_counter()
        window_start = t_start + args.warmup
        stop_at[0] = window_start + args.seconds
        go.set()
        time.sleep(max(0.0, window_start - time.perf_counter()))
        cpu0 = (cpu_busy_ticks(), cpu_snapshot())
        time.sleep(max(0.0, stop_at[0] - time.perf_counter()))
        cpu1 = (cpu_busy_ticks(), cpu_snapshot())
        cpu_groups = {"gunicorn": {server.proc.pid, *server.workers()}, "load generator": {os.getpid()}}
        window_end = stop_at[0]
        for thread in threads:
            thread.join(timeout=60)
        stuck = sum(thread.is_alive() for thread in threads)
        code = server.stop()
        server_log = server.tail(10)
        counted = server.round_trips()
        server = None
        print(f"gunicorn stopped (exit {code})" + (f"; {stuck} annotator threads still running" if stuck else ""))

        # ---- figures ----
        in_window = [c for a in annotators for c in a.cycles if window_start <= c[0] <= window_end]
        all_cycles = sum(len(a.cycles) for a in annotators)
        errors = sum((a.errors for a in annotators), Counter())
        elapsed = window_end - window_start
        print()
        print(f"== {args.db}, {args.annotators} annotators, {elapsed:.1f}s window ==")
        print(
            f"cycles/s:            {len(in_window) / elapsed:8.1f}   ({len(in_window)} cycles in window, "
            f"{all_cycles} in all)"
        )
        print(f"next   latency ms:   {ms([c[1] for c in in_window])}")
        print(f"submit latency ms:   {ms([c[2] for c in in_window])}")
        print(f"cycle  latency ms:   {ms([c[1] + c[2] for c in in_window])}")
        per_annotator = sorted(sum(1 for c in a.cycles if window_start <= c[0] <= window_end) for a in annotators)
        spread = f"{per_annotator[-1] / per_annotator[0]:.2f}" if per_annotator[0] else "inf"
        print(
            f"cycles per annotator: min {per_annotator[0]}, median {per_annotator[len(per_annotator) // 2]}, "
            f"max {per_annotator[-1]}; max/min {spread} (fairness; target ≤ 1.5)"
        )
        print("SQL round trips:     " + round_trips_report(counted, all_cycles))
        print("HTTP errors:         " + (", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"))
        print(f"submits answered 200 (retry) on a first submit: {sum(a.retried_200 for a in annotators)}")
        print(f"annotators that got 204 (queue drained for them): {sum(a.drained for a in annotators)}")
        print(
            f"CPU in window (% of one core, {cores} cores = {100 * cores}%): "
            + cpu_report(cpu0, cpu1, elapsed, cpu_groups, database.pg_name, len(in_window))
        )

        client_file = database.tmp / "client.json"
        client_file.write_text(
            json.dumps(
                {
                    "received": [i for a in annotators for i in a.received],
                    "submitted_ok": [i for a in annotators for i in a.submitted_ok],
                }
            )
        )
        check = run_step("check", database, ["--client-file", str(client_file)])
        print()
        print("correctness (read back from the database):")
        brief = [
            "tasks_with_more_rankings_than_overlap",
            "tasks_active_count_over_overlap",
            "task_annotator_pairs_handed_out_twice",
            "assignments_unaccounted_for",
        ]
        for key in brief:
            print(f"  {key:48s} {check[key]}")
        print(
            f"  {'rankings == submitted assignments':48s} {check['rankings_eq_submitted']} "
            f"({check['rankings']} rankings, {check['submitted_assignments']} submitted)"
        )
        for key in [
            "tasks_active_count_ne_live_plus_submitted",
            "tasks_completed_count_ne_rankings",
            "rankings_without_submitted_assignment",
            "client_201_not_submitted_in_db",
            "db_submitted_without_client_201",
            "db_assignments_never_seen_by_a_client",
            "live_leases_left",
        ]:
            print(f"  {key:48s} {check[key]}")
        print(
            f"  assignments by status: {check['assignments_by_status']}; tasks done: {check['tasks_done']}, "
            f"tasks with a free slot: {check['tasks_with_free_slot']}"
        )
        if errors and server_log:
            print("\nlast lines of the gunicorn log:\n" + server_log)
    finally:
        if server is not None:
            server.stop()
        database.close()


if __name__ == "__main__":
    main()
