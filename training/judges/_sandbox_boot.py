"""The first code a sandboxed run executes (`python -I _sandbox_boot.py CONFIG`), before any untrusted code.

Trusted, standard library only, single-threaded. In order:
1. resource limits (CPU seconds, address space, file size, processes, no core files) — set here rather than in a
   `preexec_fn`, which is unsafe in a threaded parent (a Celery worker, a trainer);
2. where the kernel allows unprivileged user namespaces: new user + mount + network + PID namespaces. The network
   namespace holds only a loopback that is down, so every connection fails. In the mount namespace the scratch
   directory becomes a size-capped tmpfs and every other mount is remounted read-only. The process then forks:
   the child is PID 1 of the new PID namespace, so when it dies the kernel kills every process left in it
   (including any that called `setsid()` to leave the process group the parent kills on timeout). Finally the
   child enters a second, nested user namespace, which drops its capabilities over the first: the untrusted code
   cannot remount anything writable again (the kernel locks the read-only flag of mounts it inherits);
3. otherwise (namespaces refused): an audit hook that refuses sockets and writes outside the scratch directory.
   Audit hooks are NOT a security boundary (ctypes or a C extension can go around them); the first stderr line
   says which isolation was in force, and the judge records it in its details;
4. the untrusted entry file runs as `__main__` with the scratch directory as cwd and first on `sys.path`.

The first line written to stderr is `PREFLOOP-SANDBOX isolation=<namespaces|audit-hook> processes=<rlimit|
audit-hook>`; the parent strips it.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import runpy
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
# Per-mount flags the kernel locks when a mount is inherited into a less privileged namespace: a remount must
# repeat them or it is refused (EPERM).
_LOCKED_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
    "strictatime": 1 << 24,
}
_MARKER = "PREFLOOP-SANDBOX"


def _set_limits(limits: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # SIGXCPU at the limit (so the reason says "CPU time"), SIGKILL one CPU second later should it be caught: with
    # both equal, Linux sends SIGKILL at once and the reason reads like any other kill.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, its locked per-mount flags) from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            mount_point = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040 for a space
            flags = 0
            for option in fields[5].split(","):
                flags |= _LOCKED_OPTIONS.get(option, 0)
            out.append((mount_point, flags))
    return out


def _enter_namespaces(scratch: str, scratch_bytes: int) -> None:
    """Steps 2's namespaces; raises OSError when the kernel refuses them (the caller falls back)."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    files = {}
    for name in os.listdir(scratch):
        with open(os.path.join(scratch, name), "rb") as handle:
            files[name] = handle.read()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    child = os.fork()  # the child is PID 1 of the new PID namespace
    if child:
        _, status = os.waitpid(child, 0)
        os._exit(os.waitstatus_to_exitcode(status) % 256 if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    # A private, size-capped tmpfs: nothing the code writes reaches the host's disk, and the disk cannot fill.
    options = f"size={scratch_bytes},mode=0700".encode()
    _check(libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), "mount scratch tmpfs")
    for name, data in files.items():
        with open(os.path.join(scratch, name), "wb") as handle:
            handle.write(data)
    for mount_point, flags in _mount_points():
        if mount_point == scratch:
            continue
        result = libc.mount(None, mount_point.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)
        if result != 0 and mount_point == "/":
            _check(result, "remount / read-only")  # without it the sandbox would be writable: refuse
    # Nested user namespace: no capabilities over the mounts above, so nothing can be made writable again.
    _check(libc.unshare(CLONE_NEWUSER), "unshare (drop capabilities)")


# Every way Python starts a process (`_posixsubprocess` is what subprocess forks through).
_PROCESS_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen", "pty.spawn"}
)

_PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate"})


def _audit_hook(scratch: str, *, block_processes: bool, guard_io: bool):
    allowed = (scratch + os.sep, "/dev/null")

    def inside(path: object) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor
        try:
            real = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return real == scratch or real.startswith(allowed) or real == "/dev/null"

    def hook(event: str, args: tuple) -> None:
        if block_processes and (event in _PROCESS_EVENTS or (event == "import" and args[0] == "_posixsubprocess")):
            raise PermissionError(f"sandbox: starting processes ({event}) is not allowed")
        if not guard_io:
            return
        if event.startswith("socket.") or event == "ctypes.dlopen":
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and len(args) >= 2:
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
            )
            if writing and not inside(args[0]):
                raise PermissionError(f"sandbox: writing {args[0]!r} outside the scratch directory is not allowed")
        elif event in _PATH_EVENTS and not all(
            inside(arg) for arg in args[:2] if isinstance(arg, (str, bytes, os.PathLike))
        ):
            raise PermissionError(f"sandbox: {event} outside the scratch directory is not allowed")

    return hook


def main() -> None:
    config = json.loads(sys.argv[1])
    scratch, entry = config["scratch"], config["entry"]
    _set_limits(config["limits"])
    isolation = "audit-hook"
    if config.get("namespaces", True):
        try:
            _enter_namespaces(scratch, config["limits"]["scratch_bytes"])
            isolation = "namespaces"
        except OSError as error:
            isolation = f"audit-hook ({error.strerror or error})"
    block_processes = bool(config.get("block_processes"))
    processes = "audit-hook" if block_processes else "rlimit"
    sys.stderr.write(f"{_MARKER} isolation={isolation} processes={processes}\n")
    sys.stderr.flush()
    guard_io = bool(config.get("audit_hook", True))  # tests turn it off to check the kernel's layers alone
    if guard_io or block_processes:
        # The only guard in fallback mode, a second layer otherwise. Process blocking stays on whatever the tests
        # ask where the kernel would not bound processes (real uid 0).
        sys.addaudithook(_audit_hook(scratch, block_processes=block_processes, guard_io=guard_io))
    os.chdir(scratch)
    sys.path.insert(0, scratch)
    sys.argv = [entry]
    runpy.run_path(os.path.join(scratch, entry), run_name="__main__")


if __name__ == "__main__":
    main()
