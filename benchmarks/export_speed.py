#!/usr/bin/env python
"""Export benchmark: rankings → pairwise comparisons → a DatasetVersion (Parquet + JSONL), on a fresh database.

    python benchmarks/export_speed.py [--db postgres|sqlite] [--comparisons 1000000] [--k 4]

Rankings are inserted in bulk (not through the queue: that is the load benchmark's job), enough for
`--comparisons` pairs: each ranking of k rollouts yields k(k-1)/2 pairs. Then a fresh child process runs
the export as a worker does (`export_worker.export_dataset`: streamed to Parquet + JSONL) once cold and
once more on the same data (answered with the same version, writing nothing). Prints the set-up time,
the export's wall time and comparisons/s, CPU seconds per 1M comparisons (the export process and its
Postgres backends: less sensitive to other load than the wall time), the seconds per stage of the
writer, the load average, the files' sizes, the content hash and the export process's peak RSS.
`--reuse` exports again from the database the previous run left (for comparing code changes A/B).
It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DEFAULT_PG_URL, ROOT, FreshDatabase, cpu_snapshot, django_setup, migrate

WORDS = "the answer explains each step with one example and a summary of what matters most here".split()


def populate(*, comparisons: int, k: int, annotators: int) -> int:
    """Insert prompts, rollouts, tasks, assignments and rankings in bulk; returns the ranking count."""
    import random

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from labeling.models import Assignment, Prompt, PromptSet, Ranking, RankingTask, Rollout, TaskRollout
    from labeling.services.parsing import PromptRecord, sha256_text
    from labeling.services.task_builder import rollout_key

    rng = random.Random(0)
    pairs_per_ranking = k * (k - 1) // 2
    n_rankings = -(-comparisons // pairs_per_ranking)
    n_tasks = -(-n_rankings // annotators)
    users = [get_user_model().objects.create(username=f"bench-{i}") for i in range(annotators)]
    prompt_set = PromptSet.objects.create(name="export bench", rollouts_per_task=k, overlap=annotators)
    now = timezone.now()
    batch = 5000
    for start in range(0, n_tasks, batch):
        count = min(batch, n_tasks - start)
        prompts = Prompt.objects.bulk_create(
            [
                Prompt(
                    prompt_set=prompt_set,
                    text=(text := f"Prompt {start + i}: " + " ".join(rng.choices(WORDS, k=20))),
                    content_hash=PromptRecord(line=0, text=text).content_hash,
                )
                for i in range(count)
            ]
        )
        rollouts = Rollout.objects.bulk_create(
            [
                Rollout(
                    prompt=p,
                    policy=f"policy-{r % 2}",
                    text=(text := f"Answer {r} to {p.pk}. " + " ".join(rng.choices(WORDS, k=50))),
                    content_hash=sha256_text(text),
                )
                for p in prompts
                for r in range(k)
            ]
        )
        groups = [rollouts[i * k : (i + 1) * k] for i in range(count)]
        tasks = RankingTask.objects.bulk_create(
            [
                RankingTask(
                    prompt_set=prompt_set,
                    prompt=p,
                    rollout_key=rollout_key(r.pk for r in g),
                    overlap=annotators,
                    active_count=annotators,
                    completed_count=annotators,
                    status="done",
                )
                for p, g in zip(prompts, groups, strict=True)
            ]
        )
        TaskRollout.objects.bulk_create(
            [TaskRollout(task=t, rollout=r) for t, g in zip(tasks, groups, strict=True) for r in g]
        )
        assignments = Assignment.objects.bulk_create(
            [
                Assignment(
                    task=t,
                    annotator=u,
                    status="submitted",
                    display_order=[r.pk for r in g],
                    leased_at=now,
                    leased_until=now,
                    finished_at=now,
                )
                for t, g in zip(tasks, groups, strict=True)
                for u in users
            ]
        )
        Ranking.objects.bulk_create(
            [
                Ranking(
                    assignment=a,
                    task_id=a.task_id,
                    annotator_id=a.annotator_id,
                    tiers=[[rid] for rid in rng.sample(a.display_order, k)],
                    display_order=a.display_order,
                    time_spent_ms=5000,
                )
                for a in assignments
            ]
        )
    return Ranking.objects.count()


def populate_postgres(*, comparisons: int, k: int, annotators: int) -> int:
    """The same shape of data as `populate`, generated inside Postgres (minutes become seconds at 5M comparisons).

    Texts are about as long as `populate`'s (a prompt ~100 characters, a response ~300) and each ranking is a
    deterministic shuffle of its task's rollouts, one per tier.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from labeling.models import PromptSet

    pairs_per_ranking = k * (k - 1) // 2
    n_rankings = -(-comparisons // pairs_per_ranking)
    n_tasks = -(-n_rankings // annotators)
    users = [get_user_model().objects.create(username=f"bench-{i}").pk for i in range(annotators)]
    prompt_set = PromptSet.objects.create(name="export bench", rollouts_per_task=k, overlap=annotators)
    params = {"set": prompt_set.pk, "n": n_tasks, "k": k, "a": annotators, "users": users}
    statements = [
        """INSERT INTO labeling_prompt (text, messages, content_hash, external_id, metadata, created_at, prompt_set_id)
           SELECT 'Prompt ' || i || ': ' || repeat(md5(i::text) || ' ', 3), NULL,
                  encode(sha256(('p' || i)::bytea), 'hex'), '', '{}'::jsonb, now(), %(set)s
           FROM generate_series(0, %(n)s - 1) AS i""",
        """INSERT INTO labeling_rollout (text, policy, content_hash, generation, created_at, prompt_id)
           SELECT 'Answer ' || r || ' to ' || p.id || '. ' || repeat(md5((p.id * 16 + r)::text) || ' ', 9),
                  'policy-' || (r %% 2), encode(sha256(('r' || p.id || '-' || r)::bytea), 'hex'), '{}'::jsonb,
                  now(), p.id
           FROM labeling_prompt p, generate_series(0, %(k)s - 1) AS r WHERE p.prompt_set_id = %(set)s""",
        """INSERT INTO labeling_rankingtask
               (rollout_key, overlap, active_count, completed_count, status, round, created_at, prompt_id,
                prompt_set_id)
           SELECT md5(p.id::text), %(a)s, %(a)s, %(a)s, 'done', 0, now(), p.id, %(set)s
           FROM labeling_prompt p WHERE p.prompt_set_id = %(set)s""",
        """INSERT INTO labeling_taskrollout (rollout_id, task_id)
           SELECT r.id, t.id FROM labeling_rankingtask t JOIN labeling_rollout r ON r.prompt_id = t.prompt_id
           WHERE t.prompt_set_id = %(set)s""",
        """INSERT INTO labeling_assignment
               (status, display_order, leased_at, leased_until, finished_at, annotator_id, task_id)
           SELECT 'submitted', ro.ids, now(), now(), now(), u.id, t.id
           FROM labeling_rankingtask t
           JOIN (SELECT prompt_id, jsonb_agg(id ORDER BY id) AS ids FROM labeling_rollout GROUP BY prompt_id) ro
             ON ro.prompt_id = t.prompt_id
           CROSS JOIN unnest(%(users)s::int[]) AS u(id)
           WHERE t.prompt_set_id = %(set)s""",
        """INSERT INTO labeling_ranking
               (tiers, all_bad, flags, display_order, time_spent_ms, created_at, annotator_id, assignment_id, task_id)
           SELECT (SELECT jsonb_agg(jsonb_build_array(x::bigint) ORDER BY md5(a.id || '-' || x))
                   FROM jsonb_array_elements_text(a.display_order) AS x),
                  false, '{}'::jsonb, a.display_order, 5000, now(), a.annotator_id, a.id, a.task_id
           FROM labeling_assignment a JOIN labeling_rankingtask t ON t.id = a.task_id
           WHERE t.prompt_set_id = %(set)s""",
    ]
    with connection.cursor() as cursor:
        filled = _zero_defaults(cursor, [statement.split()[2] for statement in statements])
        try:
            with transaction.atomic():
                for statement in statements:
                    cursor.execute(statement, params)
        finally:  # the schema as the migrations left it
            for table, column in filled:
                cursor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" DROP DEFAULT')
        cursor.execute("ANALYZE")
    from labeling.models import Ranking

    return Ranking.objects.count()


# A blank value per column type, for NOT NULL columns the INSERTs above do not name and whose field has no default.
_ZERO = {
    "text": "''",
    "character varying": "''",
    "boolean": "false",
    "integer": "0",
    "bigint": "0",
    "smallint": "0",
    "double precision": "0",
    "jsonb": "'{}'::jsonb",
}


def _zero_defaults(cursor: Any, tables: list[str]) -> list[tuple[str, str]]:
    """Give NOT NULL columns without a database default their field's default (or a blank) for the bulk INSERTs.

    Returns the columns changed, for the caller to drop the default again. Columns added by later migrations then
    need no change here.
    """
    import json

    from django.apps import apps

    fields = {
        (model._meta.db_table, field.column): field
        for model in apps.get_models()
        for field in model._meta.concrete_fields
    }
    cursor.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = ANY(%s) AND is_nullable = 'NO' AND column_default IS NULL"
        " AND is_identity = 'NO'",
        [tables],
    )
    filled = []
    for table, column, data_type in cursor.fetchall():
        field = fields.get((table, column))
        default = field.get_default() if field is not None and field.has_default() else None
        if isinstance(default, bool | int | float) or (isinstance(default, str) and "'" not in default):
            literal = f"'{json.dumps(default) if isinstance(default, bool) else default}'"
        elif data_type in _ZERO:
            literal = _ZERO[data_type]
        else:
            continue
        cursor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET DEFAULT {literal}')
        filled.append((table, column))
    return filled


def _backend_cpu_seconds(database: str) -> float:
    """CPU seconds used so far by the postgres backends serving `database` (Linux /proc; 0 elsewhere)."""
    return sum(
        seconds
        for name, _, seconds in cpu_snapshot().values()
        if name.startswith("postgres:") and f" {database} " in f"{name} "
    )


def export_step() -> None:
    """Child process: export the one prompt set in-process (as a worker does) and print figures as JSON.

    A fresh process, so its peak RSS is the export's alone, not the bulk insert's that came before.
    """
    import json
    import logging
    import os

    django_setup(dict(os.environ))
    from django.db import connection

    from labeling.models import PromptSet
    from training.services.export import ExportOptions
    from training.services.export_worker import export_dataset

    stages: dict[str, float] = {}
    stages_cpu: dict[str, float] = {}

    class StageHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stages.update(getattr(record, "stage_seconds", {}))
            stages_cpu.update(getattr(record, "stage_cpu_seconds", {}))

    worker_log = logging.getLogger("training.services.export_worker")
    worker_log.addHandler(StageHandler(logging.INFO))
    worker_log.setLevel(logging.INFO)
    options = ExportOptions(
        prompt_set_ids=(PromptSet.objects.get().pk,),
        format=os.environ["BENCH_FORMAT"],
        rationale=os.environ.get("BENCH_RATIONALE", "omit"),
    )
    database = connection.settings_dict["NAME"]
    cpu_before, backend_before = resource.getrusage(resource.RUSAGE_SELF), _backend_cpu_seconds(database)
    started = time.perf_counter()
    result = export_dataset(options=options)
    export_s = time.perf_counter() - started
    cpu_after, backend_after = resource.getrusage(resource.RUSAGE_SELF), _backend_cpu_seconds(database)
    started = time.perf_counter()
    again = export_dataset(options=options)
    again_s = time.perf_counter() - started
    version = result.version
    figures = {
        "export_s": export_s,
        "again_s": again_s,
        "same_version": again.version.pk == version.pk and not again.created,
        "content_hash": version.content_hash,
        "n_train": version.n_train,
        "n_test": version.n_test,
        "sizes": {p.name: p.stat().st_size for p in sorted(Path(version.path).iterdir())},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_user_s": cpu_after.ru_utime - cpu_before.ru_utime,
        "cpu_sys_s": cpu_after.ru_stime - cpu_before.ru_stime,
        "postgres_cpu_s": backend_after - backend_before,
        "stages": stages,
        "stages_cpu": stages_cpu,
    }
    print(json.dumps(figures))


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL.replace("prefloop_bench", "prefloop_bench_export"))
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--annotators", type=int, default=2)
    parser.add_argument("--format", choices=["standard", "conversational"], default="standard")
    parser.add_argument(
        "--rationale", choices=["omit", "include"], default="omit", help="export option: a rationale column per pair"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database a previous run filled (same --comparisons, --k, --annotators): export only",
    )
    parser.add_argument("--export-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_step:
        export_step()
        return

    database = _ReusedDatabase(args.pg_url) if args.reuse else FreshDatabase(args.db, pg_url=args.pg_url)
    try:
        env = database.env(PREFLOOP_DATA_DIR=str(database.tmp / "data"))
        migrate(env)
        django_setup(env)
        started = time.perf_counter()
        if args.reuse:
            n_rankings = _forget_exports()
        else:
            fill = populate_postgres if args.db == "postgres" else populate
            n_rankings = fill(comparisons=args.comparisons, k=args.k, annotators=args.annotators)
        setup_s = time.perf_counter() - started

        load_before = os.getloadavg()
        child = subprocess.run(
            [sys.executable, __file__, "--export-step"],
            env={**env, "BENCH_FORMAT": args.format, "BENCH_RATIONALE": args.rationale},
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        load_after = os.getloadavg()
        if child.returncode != 0:
            sys.exit(child.stdout + child.stderr)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        pairs = figures["n_train"] + figures["n_test"]
        per_million = 1e6 / pairs
        print(f"database          {args.db}")
        print(
            f"rankings          {n_rankings:,} (k={args.k}, {args.annotators} annotators per task),"
            + (" reused" if args.reuse else f" inserted in {setup_s:.1f} s")
        )
        print(
            f"comparisons       {pairs:,} ({figures['n_train']:,} train / {figures['n_test']:,} test),"
            f" format {args.format}"
        )
        print(f"export wall time  {figures['export_s']:.1f} s  ->  {pairs / figures['export_s']:,.0f} comparisons/s")
        print(
            f"CPU per 1M        {(figures['cpu_user_s'] + figures['cpu_sys_s']) * per_million:.1f} s export process"
            f" (user {figures['cpu_user_s'] * per_million:.1f} + sys {figures['cpu_sys_s'] * per_million:.1f})"
            f" + {figures['postgres_cpu_s'] * per_million:.1f} s postgres backends"
        )
        stages, stages_cpu = figures["stages"], figures["stages_cpu"]
        print(
            "stages wall/CPU s "
            + ", ".join(f"{name} {seconds:.1f}/{stages_cpu.get(name, 0.0):.1f}" for name, seconds in stages.items())
            + f" (sum {sum(stages.values()):.1f}/{sum(stages_cpu.values()):.1f})"
        )
        print(f"load average      {load_before[0]:.2f} before, {load_after[0]:.2f} after (1-minute)")
        print(f"re-export         {figures['again_s']:.2f} s, same version: {figures['same_version']}")
        sizes = figures["sizes"]
        print("files             " + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sizes.items()))
        print(f"content hash      {figures['content_hash']}")
        print(f"peak RSS          {figures['peak_rss_mib']:,.0f} MiB (the export process alone)")
    finally:
        database.close()


class _ReusedDatabase(FreshDatabase):
    """The database a previous run filled and left in place: nothing is dropped or inserted."""

    def __init__(self, pg_url: str) -> None:
        super().__init__("postgres", pg_url=pg_url)

    @staticmethod
    def _recreate_postgres(url: str) -> None:
        pass


def _forget_exports() -> int:
    """Delete earlier exports and versions so the export runs again rather than answering with the old version."""
    from labeling.models import Ranking
    from training.models import DatasetExport, DatasetVersion

    DatasetExport.objects.all().delete()
    DatasetVersion.objects.all().delete()
    if not Ranking.objects.exists():
        sys.exit("--reuse: the database holds no rankings; run once without --reuse first.")
    return Ranking.objects.count()


if __name__ == "__main__":
    main()
