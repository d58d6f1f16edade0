"""Helpers shared by the benchmark commands: a fresh database, the environment, a few figures.

Nothing here imports Django: the load generator stays a plain HTTP client, and the commands that
need the ORM set the environment first and call `django_setup()`.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/prefloop_bench"


class FreshDatabase:
    """A brand-new, empty database for one benchmark run.

    postgres: DROP + CREATE the database named in `pg_url` (default `prefloop_bench`), over a
    connection to the server's `postgres` maintenance database; it is left in place afterwards
    for inspection and dropped by the next run.
    sqlite: a file in a new temporary directory.
    The temporary directory also serves as PREFLOOP_VAR_DIR, so nothing is written under var/;
    `close()` removes it unless `keep`.
    """

    def __init__(self, db: str, *, pg_url: str = DEFAULT_PG_URL, keep: bool = False) -> None:
        self.db = db
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix=f"prefloop-bench-{db}-"))
        self.pg_name = None
        if db == "postgres":
            self.url = pg_url
            self.pg_name = urlparse(pg_url).path.lstrip("/")
            self._recreate_postgres(pg_url)
        elif db == "sqlite":
            path = self.tmp / "bench.sqlite3"
            self.url = f"sqlite:///{path}"  # absolute path: sqlite:////tmp/...
        else:
            raise SystemExit(f"--db must be postgres or sqlite, not {db!r}")

    @staticmethod
    def _recreate_postgres(url: str) -> None:
        import psycopg

        parsed = urlparse(url)
        name = parsed.path.lstrip("/")
        if not name or not name.replace("_", "").isalnum():
            raise SystemExit(f"refusing to drop database {name!r}: use a plain name like prefloop_bench")
        admin = urlunparse(parsed._replace(path="/postgres", scheme="postgresql", query=""))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def env(self, **extra: str) -> dict[str, str]:
        """The environment the app (migrate, gunicorn, setup steps) runs under."""
        env = dict(os.environ)
        # Production mode (DEBUG off) needs a key; a throwaway one per run unless the caller set one.
        env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
        env.update(
            DATABASE_URL=self.url,
            DJANGO_SETTINGS_MODULE="webapp.settings",
            DJANGO_DEBUG="0",
            PREFLOOP_VAR_DIR=str(self.tmp / "var"),
            LOG_LEVEL=env.get("LOG_LEVEL", "WARNING"),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        )
        env.update(extra)
        return env

    def close(self) -> None:
        if self.keep:
            print(f"(kept {self.tmp}{'' if self.db == 'sqlite' else ' and database ' + self.url})")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


def migrate(env: dict[str, str]) -> float:
    """`manage.py migrate` in a child process with `env`; its seconds. Exits with Django's output if it fails."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("migrate failed")
    return time.perf_counter() - started


def django_setup(env: dict[str, str]) -> None:
    """Configure Django in this process from `env` (call before importing any app module)."""
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (Linux); (0, 0) elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def children_of(pid: int) -> list[int]:
    """Direct child pids of `pid` (Linux /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def cpu_snapshot() -> dict[int, tuple[str, int, float]]:
    """{pid: (name, parent pid, cpu seconds)} of every process (Linux /proc).

    For postgres backends the name is the process title ("postgres: 15/main: user db host ..."),
    so a database's own backends can be told apart from other clients' ones.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    snapshot = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            head, tail = stat.rsplit(")", 1)
            name = head.split("(", 1)[1]
            if name == "postgres":
                name = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = tail.split()
        snapshot[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return snapshot


def cpu_split(
    before: dict, after: dict, seconds: float, groups: dict[str, set[int]], postgres_db: str | None = None
) -> dict[str, float]:
    """CPU used in the interval, in % of one core, per group of pids (+ the bench database's backends).

    `groups` maps a label to pids. With `postgres_db`, the postgres backends serving that database
    form the group "postgres"; the caller derives "other" (other jobs on the box) from the machine
    total.
    """
    used = {pid: after[pid][2] - before.get(pid, (None, None, after[pid][2]))[2] for pid in after}
    result = {}
    for label, pids in groups.items():
        result[label] = 100 * sum(used.get(pid, 0.0) for pid in pids) / seconds
    if postgres_db:
        backends = {
            pid
            for pid, (name, _, _) in after.items()
            if name.startswith("postgres:") and f" {postgres_db} " in f"{name} "
        }
        result["postgres"] = 100 * sum(used[pid] for pid in backends) / seconds
    return result
