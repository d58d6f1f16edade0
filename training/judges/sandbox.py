"""Run untrusted Python (a model's code against a prompt's tests) in a subprocess that cannot hurt the machine.

What bounds a run, and which mechanism keeps each bound:
- wall clock: `SandboxLimits.wall_seconds`, then SIGKILL to the whole process group (the run starts a new
  session), and, where namespaces are available, the death of the PID namespace's PID 1 kills any process that
  left the group with `setsid()`;
- CPU time, address space, file size, processes: RLIMIT_CPU / RLIMIT_AS / RLIMIT_FSIZE / RLIMIT_NPROC, set by the
  trusted boot script before the untrusted code starts. The kernel does not enforce RLIMIT_NPROC for real uid 0,
  so a worker running as root starts the sandbox as `nobody` (uid 65534) when nobody can run this interpreter;
  where it cannot (a Python under /root, as on the development machine) the run stays root and the audit hook
  refuses every way of starting a process (fork, spawn, exec, subprocess) instead — a weaker guard, recorded as
  `processes=audit-hook` in the result's `isolation`;
- network: a new network namespace with no interface up (fallback: an audit hook refusing `socket.*`);
- filesystem: the scratch directory is a private size-capped tmpfs and every other mount is read-only (fallback:
  an audit hook refusing writes outside the scratch directory, which ctypes or a C extension could get round —
  the result's `isolation` says which mode ran, and judges record it);
- environment: `python -I -B` (no PYTHON* variables, no user site, no script directory on sys.path, no bytecode
  written), a minimal environment, stdin from /dev/null, stdout/stderr to files whose size RLIMIT_FSIZE caps;
- cleanup: the scratch directory and the output files are removed after every run, whatever happened.

Pure Python, no Django: a worker, a trainer's reward callable and a test all call `run_python` alike. It never
raises for what the code does; only for bad arguments (a file name with a path in it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

_BOOT = str(Path(__file__).with_name("_sandbox_boot.py"))
_MARKER = "PREFLOOP-SANDBOX isolation="
_NOBODY = 65534
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds of one run. Defaults fit unit tests of short functions (~0.1 s of CPU each)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    # The interpreter alone maps ~30 MiB; numpy ~100 MiB more. A memory bomb gets MemoryError past this.
    memory_bytes: int = 512 * 1024 * 1024
    file_bytes: int = 8 * 1024 * 1024
    processes: int = 32
    scratch_bytes: int = 32 * 1024 * 1024
    # What comes back of stdout/stderr (their tails): enough for a traceback, never a flood.
    output_chars: int = 4000
    # False forces the audit-hook fallback (tests use it to check that mode too).
    namespaces: bool = True
    # False leaves the kernel's namespaces and limits alone in charge (tests use it to check them without the hook).
    audit_hook: bool = True
    # The interpreter to run (default: this one). A system Python that `nobody` can run lets a root worker drop to
    # `nobody`, so RLIMIT_NPROC holds (see the module docstring).
    interpreter: str = ""

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "file_bytes", "processes", "scratch_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, not {getattr(self, name)!r}.")


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed at the wall-clock limit
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    isolation: str  # "namespaces", or "audit-hook (why)"
    pid: int  # the run's process (and process group) id, for checks that nothing outlived it

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def reason(self) -> str:
        """One line saying how the run ended, for a judge's details."""
        if self.timed_out:
            return "timeout"
        if self.exit_code == 0:
            return "passed"
        # A signal shows as 128 + n through the namespace wrapper's shell, as -n when the child is ours directly.
        number = None
        if self.exit_code is not None and self.exit_code > 128:
            number = self.exit_code - 128
        elif self.exit_code is not None and self.exit_code < 0:
            number = -self.exit_code
        if number is not None:
            try:
                return f"killed by {signal.Signals(number).name}"
            except ValueError:
                pass
        return f"exit code {self.exit_code}"

    def to_details(self) -> dict:
        return asdict(self) | {"reason": self.reason}


def run_python(files: Mapping[str, str], entry: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Write `files` (name → source) into a fresh scratch directory and run `entry` among them."""
    limits = limits or SandboxLimits()
    for name in files:
        if not name or name != os.path.basename(name) or name.startswith("."):
            raise ValueError(f"Sandbox file name {name!r} must be a plain file name.")
    if entry not in files:
        raise ValueError(f"The entry file {entry!r} is not among the files.")
    scratch = tempfile.mkdtemp(prefix="prefloop-sandbox-")
    outputs = tempfile.mkdtemp(prefix="prefloop-sandbox-out-")
    try:
        return _run(files, entry, limits, scratch, outputs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)


def _run(files: Mapping[str, str], entry: str, limits: SandboxLimits, scratch: str, outputs: str) -> SandboxResult:
    interpreter = limits.interpreter or sys.executable
    as_root = os.geteuid() == 0 and _runnable_by_others(interpreter)
    for name, source in files.items():
        Path(scratch, name).write_text(source, encoding="utf-8")
    if as_root:  # `nobody` must be able to read the files and, in fallback mode, write beside them
        for path in [scratch, *(os.path.join(scratch, name) for name in files)]:
            os.chown(path, _NOBODY, _NOBODY)
    config = {
        "scratch": os.path.realpath(scratch),
        "entry": entry,
        "namespaces": limits.namespaces,
        "audit_hook": limits.audit_hook,
        # Real uid 0 escapes RLIMIT_NPROC: then the audit hook refuses process creation instead.
        "block_processes": os.geteuid() == 0 and not as_root,
        "limits": {
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "file_bytes": limits.file_bytes,
            "processes": limits.processes,
            "scratch_bytes": limits.scratch_bytes,
        },
    }
    stdout_path, stderr_path = os.path.join(outputs, "stdout"), os.path.join(outputs, "stderr")
    started = time.monotonic()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        if as_root:
            os.chown(stdout_path, _NOBODY, _NOBODY)
            os.chown(stderr_path, _NOBODY, _NOBODY)
        process = subprocess.Popen(
            [interpreter, "-I", "-B", _BOOT, json.dumps(config)],
            cwd=scratch,
            env=_ENV | {"HOME": scratch, "TMPDIR": scratch},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            user=_NOBODY if as_root else None,
            group=_NOBODY if as_root else None,
            extra_groups=[] if as_root else None,
        )
        timed_out = False
        try:
            process.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(process.pid)  # also after a normal exit: background children die with the run
            process.wait()
    seconds = time.monotonic() - started
    isolation = _isolation(stderr_path)
    stderr_text = _tail(stderr_path, limits.output_chars)
    if stderr_text.startswith(_MARKER):
        stderr_text = stderr_text.partition("\n")[2]
    return SandboxResult(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        stdout=_tail(stdout_path, limits.output_chars),
        stderr=stderr_text,
        seconds=seconds,
        isolation=isolation,
        pid=process.pid,
    )


def _runnable_by_others(executable: str) -> bool:
    """Whether `nobody` could run this interpreter on the boot script: every directory on their paths searchable,
    the interpreter executable, the boot script readable (and for our own interpreter, its standard library)."""
    interpreter, boot = Path(os.path.realpath(executable)), Path(_BOOT)
    directories = [*interpreter.parents, *boot.parents]
    if executable == sys.executable:
        stdlib = Path(os.path.realpath(sys.base_prefix)) / "lib"
        directories += [stdlib, *stdlib.parents]
    searchable = all(d.stat().st_mode & 0o001 for d in directories if d.exists())
    return searchable and bool(interpreter.stat().st_mode & 0o001) and bool(boot.stat().st_mode & 0o004)


def _kill_group(pgid: int, *, settle_seconds: float = 2.0) -> None:
    """SIGKILL the run's process group and wait (briefly) until it is gone.

    Killing is asynchronous: the PID namespace's teardown kills its processes after its PID 1 dies, so a caller
    that looks right away could still see them. Dead-but-unreaped processes (zombies) hold no resources but a
    table entry, and are not waited for past `settle_seconds`.
    """
    deadline = time.monotonic() + settle_seconds
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return  # gone
        if time.monotonic() > deadline or _only_zombies(pgid):
            return
        time.sleep(0.02)


def _only_zombies(pgid: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, ...
            return False
    return True


def _tail(path: str, chars: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 4 * chars))
        return handle.read().decode("utf-8", errors="replace")[-chars:]


def _isolation(stderr_path: str) -> str:
    """The boot's first stderr line names the isolation mode (the rest is the code's own stderr)."""
    with open(stderr_path, "rb") as handle:
        first = handle.readline(200).decode("utf-8", errors="replace").rstrip("\n")
    if first.startswith(_MARKER):
        return first[len(_MARKER) :]
    return "unknown (the run ended before the sandbox started)"
