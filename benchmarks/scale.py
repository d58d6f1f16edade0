#!/usr/bin/env python
"""Scale benchmark: the queue, the admin's progress counts and the lease statement on big tables (issue 13, item 3).

    python benchmarks/scale.py [--tasks 1000000] [--sets 4] [--annotators 10000] [--seconds 20]
                               [--settle 30] [--reuse] [--keep] [--skip-load] [--explain]

Steps: a fresh PostgreSQL database (`prefloop_scale` unless --pg-url; --reuse keeps the one the last --keep run
left) → `manage.py migrate` → a fill inside Postgres (INSERT … SELECT generate_series, no ORM rows): `--sets`
prompt sets of overlap 3 sharing `--tasks` tasks of 4 rollouts each (one prompt per task), `--annotators`
annotators, and a history of submitted assignments with their rankings — per set, the first 40% of the tasks
done (3 rankings), the next 15% started (1 or 2), the rest untouched (every 10th with a skipped or
expired assignment); ranking k of task t is by annotator (3t + k) mod annotators, so each holds ~140 rankings
spread over every set → VACUUM ANALYZE → figures:
- the admin's prompt-set list and one set's change page (its progress line), through Django's test client in
  a child process with DEBUG off, several repeats, median and max ms and the SQL statements per page;
- the API's prompt-set list (`GET /api/prompt-sets/`, the same counts) likewise;
- EXPLAIN (ANALYZE, BUFFERS) of the lease statement for an annotator with history (--explain), rolled back;
- the load benchmark's machinery (gunicorn with the shipped settings, closed-loop httpx annotators) on the
  first set: 1 annotator, then 32, each `--seconds` long, annotators drawn from those with history; then 1
  annotator asking for no set (the queue across all sets).
The small-table baseline is `benchmarks/load.py` itself, run back to back on the same box (see benchmarks/README).
The database is dropped at the end unless --keep. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, FreshDatabase, cpu_busy_ticks, cpu_snapshot, django_setup, migrate
from benchmarks._load_clients import Annotator, annotate
from benchmarks._load_server import Gunicorn
from benchmarks.load import cpu_report, ms, round_trips_report

PY = sys.executable
DEFAULT_SCALE_URL = "postgres://postgres@127.0.0.1:5432/prefloop_scale"
# Share of each set's tasks (in id order) that the history leaves done, and started (1 or 2 rankings of 3).
DONE_SHARE, STARTED_SHARE = 0.40, 0.15


class ExistingDatabase(FreshDatabase):
    """The database a previous `--keep` run left: same environment, nothing dropped or created."""

    def __init__(self, pg_url: str, keep: bool) -> None:
        import tempfile

        self.db, self.keep, self.url = "postgres", keep, pg_url
        self.tmp = Path(tempfile.mkdtemp(prefix="prefloop-scale-"))
        self.pg_name = urlparse(pg_url).path.lstrip("/")


def drop_database(pg_url: str) -> None:
    import psycopg

    parsed = urlparse(pg_url)
    admin = urlunparse(parsed._replace(path="/postgres", scheme="postgresql", query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------
# Steps that need Django: run in a child process with the benchmark's DATABASE_URL.
# --------------------------------------------------------------------------------------------


def step_fill(args: argparse.Namespace) -> dict:
    """Sets, users, prompts, rollouts, tasks and the history, generated inside Postgres."""
    from django.contrib.auth.models import Group
    from django.db import connection

    from labeling import roles
    from labeling.models import Assignment, Prompt, PromptSet, Ranking, RankingTask, Rollout, TaskRollout

    roles.ensure_groups()
    group = Group.objects.get(name=roles.ANNOTATORS)
    set_ids = [
        PromptSet.objects.create(
            name=f"Scale {i}", rollouts_per_task=4, overlap=3, description="benchmarks/scale.py"
        ).pk
        for i in range(args.sets)
    ]
    n, per = args.tasks, -(-args.tasks // args.sets)
    tables = {
        "prompt": Prompt._meta.db_table,
        "rollout": Rollout._meta.db_table,
        "task": RankingTask._meta.db_table,
        "task_rollout": TaskRollout._meta.db_table,
        "assignment": Assignment._meta.db_table,
        "ranking": Ranking._meta.db_table,
    }
    params = {
        "n": n,
        "per": per,
        "sets": set_ids,
        "annotators": args.annotators,
        "group": group.pk,
        "done": int(per * DONE_SHARE),
        "started": int(per * (DONE_SHARE + STARTED_SHARE)),
    }
    # Task g (0-based) is prompt g + 1 in set g // per, with rollouts 4g + 1 … 4g + 4; j is its place in its set.
    statements = [
        (
            "annotators",
            """INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,
                                      is_active, date_joined)
               SELECT '!', false, 'scale-annotator-' || lpad(g::text, 5, '0'), '', '', '', false, true, now()
               FROM generate_series(0, %(annotators)s - 1) g""",
        ),
        (
            "annotator groups",
            """INSERT INTO auth_user_groups (user_id, group_id)
               SELECT id, %(group)s FROM auth_user WHERE username LIKE 'scale-annotator-%%'""",
        ),
        (
            "prompts",
            """INSERT INTO {prompt} (id, prompt_set_id, text, messages, content_hash, external_id, metadata,
                                     reference_answer, reference_tests, created_at)
               SELECT g + 1, (%(sets)s::bigint[])[g / %(per)s + 1],
                      'Prompt ' || g || ': explain the idea in two sentences.', NULL, md5(g::text), 'p' || g,
                      '{{}}', '', '', now()
               FROM generate_series(0, %(n)s - 1) g""",
        ),
        (
            "rollouts",
            """INSERT INTO {rollout} (id, prompt_id, text, policy, content_hash, generation, created_at)
               SELECT 4 * g + r + 1, g + 1, 'Response ' || r || ' to prompt ' || g || '. A short answer.',
                      'policy-' || (r %% 2), md5(g || '/' || r), '{{}}', now()
               FROM generate_series(0, %(n)s - 1) g, generate_series(0, 3) r""",
        ),
        (
            "tasks",
            """INSERT INTO {task} (id, prompt_set_id, prompt_id, rollout_key, overlap, active_count, completed_count,
                                   status, round, gold, created_at)
               SELECT g + 1, (%(sets)s::bigint[])[g / %(per)s + 1], g + 1, md5('k' || g), 3, c, c,
                      CASE WHEN c = 3 THEN 'done' ELSE 'open' END, 0, NULL, now()
               FROM (SELECT g, CASE WHEN g %% %(per)s < %(done)s THEN 3
                                    WHEN g %% %(per)s < %(started)s THEN 1 + g %% 2 ELSE 0 END AS c
                     FROM generate_series(0, %(n)s - 1) g) s""",
        ),
        (
            "task rollouts",
            """INSERT INTO {task_rollout} (task_id, rollout_id)
               SELECT g + 1, 4 * g + r + 1 FROM generate_series(0, %(n)s - 1) g, generate_series(0, 3) r""",
        ),
        (
            "assignments",
            """INSERT INTO {assignment} (task_id, annotator_id, status, display_order, leased_at, leased_until,
                                         finished_at)
               SELECT t.id, u.first + ((t.id - 1) * 3 + k) %% %(annotators)s, 'submitted',
                      jsonb_build_array(4 * t.id - 1, 4 * t.id - 3, 4 * t.id, 4 * t.id - 2),
                      t0, t0 + interval '15 minutes', t0 + interval '40 seconds'
               FROM {task} t, generate_series(0, 2) k,
                    (SELECT min(id) AS first FROM auth_user WHERE username LIKE 'scale-annotator-%%') u,
                    LATERAL (SELECT now() - (t.id %% 365) * interval '1 day' - k * interval '1 hour' AS t0) w
               WHERE k < t.completed_count""",
        ),
        (
            "rankings",
            """INSERT INTO {ranking} (assignment_id, source, task_id, annotator_id, tiers, all_bad, flags,
                                      display_order, time_spent_ms, rationale, created_at)
               SELECT a.id, 'human', a.task_id, a.annotator_id,
                      jsonb_build_array(jsonb_build_array(a.display_order->1), jsonb_build_array(a.display_order->0),
                                        jsonb_build_array(a.display_order->3), jsonb_build_array(a.display_order->2)),
                      false, '{{}}', a.display_order, 40000, '', a.finished_at
               FROM {assignment} a""",
        ),
        (
            # Annotators also skip tasks and let leases lapse: every 10th untouched task has one of each kind,
            # by an annotator who may meet it again (an expired lease is re-let to them).
            "skipped and expired assignments",
            """INSERT INTO {assignment} (task_id, annotator_id, status, display_order, leased_at, leased_until,
                                         finished_at)
               SELECT t.id, u.first + ((t.id - 1) * 3 + 7) %% %(annotators)s,
                      CASE WHEN t.id %% 20 = 0 THEN 'skipped' ELSE 'expired' END,
                      jsonb_build_array(4 * t.id - 3, 4 * t.id - 2, 4 * t.id - 1, 4 * t.id),
                      now() - interval '2 days', now() - interval '2 days' + interval '15 minutes',
                      now() - interval '2 days'
               FROM {task} t, (SELECT min(id) AS first FROM auth_user WHERE username LIKE 'scale-annotator-%%') u
               WHERE t.active_count = 0 AND t.id %% 10 = 0""",
        ),
    ]
    timings = {}
    with connection.cursor() as cursor:
        # Columns the statements do not name (other features add them) get their model default as a column
        # default in this throwaway database, so the fill keeps working as the schema grows.
        for model in (Prompt, Rollout, RankingTask, Assignment, Ranking, TaskRollout):
            for field in model._meta.concrete_fields:
                if field.has_default() and not field.primary_key:
                    value = field.get_db_prep_save(field.get_default(), connection)
                    cursor.execute(
                        f'ALTER TABLE "{model._meta.db_table}" ALTER COLUMN "{field.column}" SET DEFAULT %s', [value]
                    )
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for name, sql in statements:
            started = time.perf_counter()
            cursor.execute(sql.format(**tables), params)
            timings[name] = (cursor.rowcount, round(time.perf_counter() - started, 1))
        for table in ("prompt", "rollout", "task"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{tables[table]}', 'id'), (SELECT max(id) FROM {tables[table]}))"
            )
    started = time.perf_counter()
    connection.close()
    vacuum_analyze()
    timings["vacuum analyze"] = (0, round(time.perf_counter() - started, 1))
    return {"sets": set_ids, "timings": timings, "size": database_size()}


def vacuum_analyze() -> None:
    from django.db import connection

    connection.ensure_connection()
    connection.connection.autocommit = True  # VACUUM refuses to run in a transaction block
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def database_size() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return cursor.fetchone()[0]


def step_tokens(args: argparse.Namespace) -> dict:
    """DRF tokens for the first `--measured` + 1 annotators (those with history), and the first set's id."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import PromptSet

    users = get_user_model().objects.filter(username__startswith="scale-annotator-").order_by("id")
    tokens = [Token.objects.get_or_create(user=user)[0].key for user in users[: args.measured + 1]]
    return {"tokens": tokens, "prompt_set": PromptSet.objects.order_by("id").values_list("id", flat=True)[0]}


def step_pages(args: argparse.Namespace) -> dict:
    """The admin's prompt-set list, a set's change page and the API's set list: ms per page and statements."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from labeling.models import PromptSet

    User = get_user_model()
    admin = User.objects.filter(username="scale-admin").first() or User.objects.create_superuser(
        "scale-admin", "admin@example.com", None
    )
    annotator = User.objects.filter(username__startswith="scale-annotator-").order_by("id").first()
    first_set = PromptSet.objects.order_by("id").values_list("id", flat=True)[0]
    pages = {
        "admin prompt-set list": (admin, "/admin/labeling/promptset/"),
        "admin prompt-set change page": (admin, f"/admin/labeling/promptset/{first_set}/change/"),
        "api prompt-set list": (annotator, "/api/prompt-sets/"),
        "annotator home": (annotator, "/label/"),
        "annotator's own numbers": (annotator, "/label/me/"),
    }
    results = {}
    for name, (user, url) in pages.items():
        client = Client()
        client.force_login(user)
        # secure: with DEBUG off the session cookie is Secure, and the test client sends it only over "https".
        client.get(url, secure=True)  # warm: templates, connection, caches
        times, statements, status = [], 0, None
        for _ in range(args.repeats):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url, secure=True)
                times.append(1000 * (time.perf_counter() - started))
            statements, status = len(captured), response.status_code
        slowest = max(captured.captured_queries, key=lambda q: float(q["time"]), default={"time": 0, "sql": ""})
        results[name] = {
            "status": status,
            "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1),
            "statements": statements,
            "slowest_sql_ms": round(1000 * float(slowest["time"]), 1),
            "slowest_sql": slowest["sql"][:300],
        }
    return results


def step_explain(args: argparse.Namespace) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of the lease statement for an annotator with history, rolled back."""
    import random

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from labeling.models import MAX_ROLLOUTS_PER_TASK, PromptSet
    from labeling.services import queue
    from webapp import clock

    annotator = get_user_model().objects.filter(username__startswith="scale-annotator-").order_by("id")[40]
    first_set = PromptSet.objects.order_by("id").values_list("id", flat=True)[0]
    rng = random.Random(0)
    now = clock.now()
    params = {
        "annotator": annotator.pk,
        "prompt_set": first_set,
        "now": now,
        "until": now + queue.lease_duration(),
        "keys": [rng.random() for _ in range(MAX_ROLLOUTS_PER_TASK)],
        "draw": rng.random(),
    }
    plans = {}
    for label, sql in (("in set", queue._LEASE_SQL_IN_SET), ("any set", queue._LEASE_SQL_ANY_SET)):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plans[label] = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True)
    return plans


def run_step(name: str, database: FreshDatabase, extra_args: list[str]) -> dict:
    proc = subprocess.run(
        [PY, __file__, "--_step", name, *extra_args], env=database.env(), cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{name} step failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The load runs: load.py's server and clients on the big database.
# --------------------------------------------------------------------------------------------


def run_load(database: FreshDatabase, tokens: list[str], prompt_set: int | None, seconds: float, warmup: float) -> None:
    server_args = argparse.Namespace(worker_class=None, workers=None, threads=None, keep_alive=None, preload=False)
    for stale in (database.tmp / "counts").glob("*.json"):
        stale.unlink()  # the previous run's workers' counts: each run reports its own round trips
    server = Gunicorn(database, server_args)
    try:
        server.wait_ready()
        annotators = [Annotator(token, seed=i) for i, token in enumerate(tokens)]
        go, stop_at = threading.Event(), [float("inf")]
        threads = [
            threading.Thread(target=annotate, args=(a, server.url, prompt_set, go, stop_at, 0.0), daemon=True)
            for a in annotators
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        window_start = time.perf_counter() + warmup
        stop_at[0] = window_start + seconds
        go.set()
        time.sleep(max(0.0, window_start - time.perf_counter()))
        cpu0 = (cpu_busy_ticks(), cpu_snapshot())
        time.sleep(max(0.0, stop_at[0] - time.perf_counter()))
        cpu1 = (cpu_busy_ticks(), cpu_snapshot())
        groups = {"gunicorn": {server.proc.pid, *server.workers()}, "load generator": {os.getpid()}}
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.stop()
    counted = server.round_trips()
    in_window = [c for a in annotators for c in a.cycles if window_start <= c[0] <= stop_at[0]]
    errors = sum((a.errors for a in annotators), Counter())
    print(
        f"\n== big tables, {len(tokens)} annotator(s), {'one set' if prompt_set is not None else 'across all sets'},"
        f" {seconds:g}s window (load average {os.getloadavg()[0]:.2f}) =="
    )
    print(f"cycles/s:            {len(in_window) / seconds:8.1f}   ({len(in_window)} cycles in window)")
    print(f"next   latency ms:   {ms([c[1] for c in in_window])}")
    print(f"submit latency ms:   {ms([c[2] for c in in_window])}")
    print(f"cycle  latency ms:   {ms([c[1] + c[2] for c in in_window])}")
    print("SQL round trips:     " + round_trips_report(counted, sum(len(a.cycles) for a in annotators)))
    print("HTTP errors:         " + (", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"))
    print("CPU in window:       " + cpu_report(cpu0, cpu1, seconds, groups, database.pg_name, len(in_window)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--annotators", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--measured", type=int, default=32, help="annotators in the throughput run")
    parser.add_argument("--settle", type=float, default=30, help="seconds of rest between the load runs")
    parser.add_argument("--repeats", type=int, default=7, help="requests per page timed")
    parser.add_argument("--pg-url", default=os.environ.get("PREFLOOP_SCALE_PG_URL", DEFAULT_SCALE_URL))
    parser.add_argument("--reuse", action="store_true", help="measure the database a --keep run left (no fill)")
    parser.add_argument("--keep", action="store_true", help="leave the database for --reuse")
    parser.add_argument("--skip-load", action="store_true", help="pages (and --explain) only")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the lease statement")
    parser.add_argument("--_step", choices=["fill", "tokens", "pages", "explain"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step:
        django_setup(dict(os.environ))
        step = {"fill": step_fill, "tokens": step_tokens, "pages": step_pages, "explain": step_explain}[args._step]
        print(json.dumps(step(args)))
        return

    print(
        f"scale benchmark: {args.tasks} tasks in {args.sets} sets, {args.annotators} annotators; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    database = ExistingDatabase(args.pg_url, args.keep) if args.reuse else FreshDatabase("postgres", pg_url=args.pg_url)
    try:
        print(f"migrate: {migrate(database.env()):.1f}s")
        if not args.reuse:
            fill = run_step("fill", database, [f"--{k}={getattr(args, k)}" for k in ("tasks", "sets", "annotators")])
            print("fill (rows, seconds): " + ", ".join(f"{k} {v[0]:,} {v[1]}s" for k, v in fill["timings"].items()))
            print(f"database size: {fill['size']}")
        pages = run_step("pages", database, ["--repeats", str(args.repeats)])
        print(f"\npages ({args.repeats} requests each, test client, DEBUG off; load average {os.getloadavg()[0]:.2f}):")
        for name, page in pages.items():
            print(
                f"  {name:30s} HTTP {page['status']}  median {page['median_ms']:7.1f} ms  max {page['max_ms']:7.1f} ms"
                f"  {page['statements']} statements; slowest {page['slowest_sql_ms']} ms: {page['slowest_sql'][:120]}"
            )
        if args.explain:
            for label, plan in run_step("explain", database, []).items():
                print(f"\n== EXPLAIN ANALYZE of the lease statement ({label}) ==\n{plan}")
        if not args.skip_load:
            got = run_step("tokens", database, ["--measured", str(args.measured)])
            # The last: a lease asked for no set (each set's queue index probed, the first set's walked), by an
            # annotator the runs before did not use, so that it starts from the fill's history as the first did.
            tokens = got["tokens"]
            runs = ((tokens[:1], got["prompt_set"]), (tokens[: args.measured], got["prompt_set"]), (tokens[-1:], None))
            for index, (annotators, prompt_set) in enumerate(runs):
                if index:
                    time.sleep(args.settle)  # let the previous run's load die down: the next one is measured alone
                run_load(database, annotators, prompt_set, args.seconds, args.warmup)
    finally:
        if args.keep:
            print(f"(kept database {args.pg_url}: --reuse measures it again)")
        else:
            drop_database(args.pg_url)
            print("database dropped")
        database.close()


if __name__ == "__main__":
    main()
