"""The server side of the load benchmark: gunicorn on a free loopback port, started and stopped cleanly."""

from __future__ import annotations

import argparse
import json
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, FreshDatabase, children_of

PY = sys.executable
COUNTING_CONFIG = Path(__file__).resolve().with_name("_gunicorn_counting.py")
SHIPPED_CONFIG = ROOT / "gunicorn.conf.py"


def shipped_settings() -> dict:
    """The settings gunicorn.conf.py gives on this machine (what scripts/run, the Dockerfile and compose start)."""
    return {k: v for k, v in runpy.run_path(str(SHIPPED_CONFIG)).items() if not k.startswith("_")}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    def __init__(self, database: FreshDatabase, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = database.tmp / "gunicorn.log"
        # The shipped gunicorn.conf.py (through the counting config); only what the command line varies is overridden.
        self.counts = database.tmp / "counts"
        self.counts.mkdir(exist_ok=True)
        self.cmd = [
            str(Path(PY).with_name("gunicorn")) if Path(PY).with_name("gunicorn").exists() else "gunicorn",
            "--config",
            str(COUNTING_CONFIG),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.log),
            "--access-logfile",
            str(database.tmp / "access.log"),
            "--chdir",
            str(ROOT),
        ]
        overrides = {"--worker-class": args.worker_class, "--workers": args.workers, "--threads": args.threads}
        overrides["--keep-alive"] = args.keep_alive
        for flag, value in overrides.items():
            if value is not None:
                self.cmd += [flag, str(value)]
        if args.preload:
            self.cmd.append("--preload")
        self.proc = subprocess.Popen(
            self.cmd,
            env=database.env(PREFLOOP_BENCH_COUNT_DIR=str(self.counts)),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited with {self.proc.returncode}; see {self.log}:\n{self.tail()}")
            try:
                # Unauthenticated: any HTTP answer (401) means the app is loaded and routing.
                httpx.post(f"{self.url}/api/tasks/next/", json={}, timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer within {timeout:.0f}s:\n{self.tail()}")

    def workers(self) -> list[int]:
        return children_of(self.proc.pid)

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM to the master, which drains its workers); SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def round_trips(self) -> dict[str, int]:
        """What the workers counted (requests, statements, transactions, health checks), once they have exited."""
        total: dict[str, int] = {}
        for path in self.counts.glob("*.json"):
            for kind, n in json.loads(path.read_text()).items():
                total[kind] = total.get(kind, 0) + n
        return total

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""
