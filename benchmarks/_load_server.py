"""The server side of the load benchmark: gunicorn on a free loopback port, started and stopped cleanly."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, FreshDatabase, children_of

PY = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    def __init__(self, database: FreshDatabase, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = database.tmp / "gunicorn.log"
        self.cmd = [
            str(Path(PY).with_name("gunicorn")) if Path(PY).with_name("gunicorn").exists() else "gunicorn",
            "webapp.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--worker-class",
            args.worker_class,
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--keep-alive",
            str(args.keep_alive),
            "--timeout",
            "60",
            "--graceful-timeout",
            "15",
            "--backlog",
            "2048",
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.log),
            "--chdir",
            str(ROOT),
        ]
        if args.preload:
            self.cmd.append("--preload")
        self.proc = subprocess.Popen(
            self.cmd, env=database.env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
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

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""
