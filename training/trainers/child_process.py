"""Work a worker hands to a process of its own: started so that it dies with the worker, stopped as one group.

Used by multi-process training (`distributed`) and by generation engines that must not live inside a Celery
prefork child (`generation_process`): a prefork child is a daemon process, which `multiprocessing` refuses to let
have children, and an engine such as vLLM keeps GPU memory until its process exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

#: How much of a child's output a failure message keeps.
OUTPUT_TAIL_CHARS = 20_000

#: Run before the child's own command: SIGTERM to it when the worker dies (Linux keeps the setting across exec), so a
#: killed worker leaves no orphan holding GPUs. A prelude rather than `preexec_fn`, which is unsafe with threads (a
#: run's heartbeat thread is running). Exits if the worker died before the setting took.
_DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 15)\n"
    "    if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


def python_command(*args: str, python: str = sys.executable) -> list[str]:
    """`python <args>` behind the die-with-the-worker prelude."""
    return [python, "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]


def start(command: list[str], *, log_path: Path, environment: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` in its own process group, its output (both streams) into `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment or child_environment(),
            start_new_session=True,  # one process group: a cancel or a failure takes all of it down at once
        )


def child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # The child imports `training` as the worker does, from the project root.
    root = str(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH", "")]))
    return environment


def kill_group(process: subprocess.Popen, *, grace_seconds: float = 10.0) -> None:
    """SIGTERM every process of the group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path) -> str:
    """The end of a child's output, whole lines only."""
    text = path.read_text(errors="replace") if path.exists() else ""
    if len(text) <= OUTPUT_TAIL_CHARS:
        return text
    cut = text[-OUTPUT_TAIL_CHARS:]
    return cut[cut.find("\n") + 1 :]
