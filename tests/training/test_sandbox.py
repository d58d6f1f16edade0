"""The unit-test sandbox: hostile code fails safely, the machine stays fine, and nothing outlives a run.

Each hostile case runs twice where the kernel allows namespaces: with the audit hook (the normal mode) and without
it, so the kernel's own layer (network namespace, read-only mounts, rlimits) is shown to hold on its own. Where the
sandbox must stay root (the kernel does not apply RLIMIT_NPROC to uid 0) the hook's refusal of new processes stays on
even in the kernel-only runs; with an interpreter that `nobody` can run, the fork bomb meets RLIMIT_NPROC alone.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

import pytest

from training.judges.sandbox import SandboxLimits, _runnable_by_others, run_python

FAST = SandboxLimits(wall_seconds=3, cpu_seconds=2)
KERNEL_ONLY = SandboxLimits(wall_seconds=3, cpu_seconds=2, audit_hook=False)
FALLBACK = SandboxLimits(wall_seconds=3, cpu_seconds=2, namespaces=False)
PRINT_CWD = "import os\nprint(os.getcwd(), flush=True)\n"


def _namespaces_available() -> bool:
    return run_python({"t.py": "pass"}, "t.py", FAST).isolation.startswith("namespaces")


needs_namespaces = pytest.mark.skipif(not _namespaces_available(), reason="the kernel refuses user namespaces here")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


def test_code_that_passes_its_tests_passes_and_a_failing_assertion_fails():
    """The negative control for everything below: good code passes, a wrong answer fails, in the same sandbox."""
    files = {"solution.py": "def double(x):\n    return 2 * x\n", "test.py": "import solution\n"}
    assert run_python({**files, "test.py": "import solution\nassert solution.double(3) == 6\n"}, "test.py", FAST).passed
    failed = run_python({**files, "test.py": "import solution\nassert solution.double(3) == 7\n"}, "test.py", FAST)
    assert not failed.passed and failed.reason == "exit code 1" and "AssertionError" in failed.stderr


@pytest.mark.parametrize("limits", [FAST, FALLBACK], ids=["namespaces", "fallback"])
def test_an_infinite_loop_is_killed_within_the_limits(limits):
    """CPU limit or wall clock, whichever comes first; never longer than the wall clock and a margin."""
    started = time.monotonic()
    result = run_python({"t.py": "while True:\n    pass\n"}, "t.py", limits)
    assert not result.passed
    assert result.timed_out or result.reason == "killed by SIGXCPU"
    assert time.monotonic() - started < limits.wall_seconds + 3


@pytest.mark.parametrize("limits", [FAST, FALLBACK], ids=["namespaces", "fallback"])
def test_a_fork_bomb_fails_and_leaves_no_process_behind(limits):
    """Forks are refused (RLIMIT_NPROC, or the audit hook where the worker is root) and the group is killed."""
    bomb = PRINT_CWD + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python({"t.py": bomb}, "t.py", limits)
    assert not result.passed
    scratch = result.stdout.split("\n")[0]
    assert scratch and _processes_mentioning(scratch) == []
    assert os.getloadavg()[0] < 200  # the machine is still fine


# A system Python (the boot script needs 3.9+), not this checkout's, which may live where nobody can reach it.
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3.11", "/usr/local/bin/python3.11") if os.path.exists(p)), "")
as_nobody = pytest.mark.skipif(
    not (os.geteuid() == 0 and SYSTEM_PYTHON and _runnable_by_others(SYSTEM_PYTHON)),
    reason="needs a root worker and a Python that nobody can run",
)


@as_nobody
def test_a_fork_bomb_is_bounded_by_rlimit_nproc_alone_when_the_sandbox_runs_as_nobody():
    """No audit hook: the kernel refuses the fifth process (boot + PID 1 + two children) and the run is killed."""
    counting = (
        "import os, time\nkids = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError as error:\n"
        "        print('refused after', kids, error.errno, flush=True)\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    kids += 1\n"
    )
    limits = SandboxLimits(wall_seconds=3, cpu_seconds=2, audit_hook=False, processes=4, interpreter=SYSTEM_PYTHON)
    result = run_python({"t.py": counting}, "t.py", limits)
    assert result.isolation.endswith("processes=rlimit")
    assert result.stdout.strip() == "refused after 2 11"  # EAGAIN
    bomb = PRINT_CWD + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    limits = SandboxLimits(wall_seconds=3, cpu_seconds=2, audit_hook=False, interpreter=SYSTEM_PYTHON)
    result = run_python({"t.py": bomb}, "t.py", limits)
    scratch = result.stdout.split("\n")[0]
    assert not result.passed and scratch and _processes_mentioning(scratch) == []


@pytest.mark.parametrize("limits", [FAST, KERNEL_ONLY, FALLBACK], ids=["namespaces", "kernel-only", "fallback"])
def test_a_memory_bomb_gets_memory_error(limits):
    bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n"
    # Filling 512 MiB takes a while on a loaded machine: the wall clock must not end it before the limit does.
    result = run_python({"t.py": bomb}, "t.py", dataclasses.replace(limits, wall_seconds=20))
    assert not result.passed and "MemoryError" in result.stderr


def _postgres_listens() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
        return True
    except OSError:
        return False


NETWORK = "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)\nprint('connected')\n"


@pytest.mark.parametrize(
    "limits",
    [FAST, pytest.param(KERNEL_ONLY, marks=needs_namespaces), FALLBACK],
    ids=["namespaces", "kernel-only", "fallback"],
)
def test_a_network_call_fails(limits):
    """The test process reaches Postgres on loopback (the control); the sandboxed code cannot."""
    assert _postgres_listens()
    result = run_python({"t.py": NETWORK}, "t.py", limits)
    assert not result.passed and "connected" not in result.stdout
    expected = "Network is unreachable" if limits is KERNEL_ONLY else "sandbox: socket"
    assert expected in result.stderr


@pytest.mark.parametrize(
    "limits",
    [FAST, pytest.param(KERNEL_ONLY, marks=needs_namespaces), FALLBACK],
    ids=["namespaces", "kernel-only", "fallback"],
)
def test_a_write_outside_the_scratch_directory_fails_and_a_write_inside_works(limits, tmp_path):
    target = tmp_path / "escaped.txt"
    outside = f"open({str(target)!r}, 'w').write('x')\n"
    result = run_python({"t.py": outside}, "t.py", limits)
    assert not result.passed and not target.exists()
    assert ("Read-only file system" if limits is KERNEL_ONLY else "outside the scratch directory") in result.stderr
    inside = "open('here.txt', 'w').write('kept')\nprint(open('here.txt').read())\n"
    assert run_python({"t.py": inside}, "t.py", limits).stdout.strip() == "kept"


@needs_namespaces
def test_the_sandbox_cannot_make_the_filesystem_writable_again(tmp_path):
    """Its capabilities were dropped after the mounts were made read-only: a remount is refused."""
    target = tmp_path / "escaped.txt"
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(None, b'/', None, 32 | 4096, None), ctypes.get_errno())\n"
        f"open({str(target)!r}, 'w').write('x')\n"
    )
    result = run_python({"t.py": code}, "t.py", KERNEL_ONLY)
    assert result.stdout.split() == ["-1", "1"]  # EPERM
    assert not result.passed and not target.exists()


def test_a_huge_file_is_refused():
    result = run_python({"t.py": "open('big', 'wb').write(b'x' * (20 * 1024 * 1024))\n"}, "t.py", FAST)
    assert not result.passed
    assert "File too large" in result.stderr or result.reason == "killed by SIGXFSZ"


@needs_namespaces
def test_a_child_that_left_the_process_group_dies_with_the_run():
    """setsid() escapes killpg; the PID namespace's end still takes the child down."""
    code = PRINT_CWD + "import time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    result = run_python({"t.py": code}, "t.py", KERNEL_ONLY)  # one fork, not a bomb: safe without the hook
    scratch = result.stdout.split("\n")[0]
    assert scratch and _processes_mentioning(scratch) == []


def test_the_scratch_directory_is_removed_after_the_run():
    result = run_python({"t.py": PRINT_CWD + "open('left.txt', 'w').write('x')\n"}, "t.py", FAST)
    scratch = result.stdout.strip()
    assert scratch.startswith("/") and not os.path.exists(scratch)


def test_output_is_bounded():
    result = run_python({"t.py": "print('y' * 10**6)\n"}, "t.py", SandboxLimits(output_chars=100))
    assert result.passed and len(result.stdout) == 100


def test_file_names_with_paths_are_refused():
    with pytest.raises(ValueError, match="plain file name"):
        run_python({"../t.py": "pass"}, "../t.py")
