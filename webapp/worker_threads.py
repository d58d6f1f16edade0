"""How many threads torch uses in a worker: a setting, by default the cores this process is allowed to run on.

torch starts one intra-op thread per core of the *machine*. A worker given 2 cores of a 64-core box (a container's
CPU set, `taskset`, a shared CI runner) then runs 64 threads on 2 cores and every step slows down many times over.
The Celery signals in `webapp.celery` call `apply_torch_threads` once in each process that runs tasks; torch is
imported there and only there (the web process imports this module too and must stay light).
"""

from __future__ import annotations

import contextlib
import logging
import os

from django.conf import settings

log = logging.getLogger(__name__)


def cores_given() -> int:
    """The cores this process may run on (its CPU affinity), or the machine's count where affinity is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def torch_threads() -> int:
    """PREFLOOP_TORCH_THREADS when set above 0, else the cores given."""
    configured = int(settings.PREFLOOP_TORCH_THREADS)
    return configured if configured > 0 else cores_given()


def apply_torch_threads() -> int:
    """Set torch's intra-op (and, while still possible, inter-op) thread count; returns the count."""
    import torch

    threads = torch_threads()
    torch.set_num_threads(threads)
    # Inter-op threads are settable only before the first parallel work; intra-op is what matters for training.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    log.info("torch uses %d thread(s) (PREFLOOP_TORCH_THREADS=%s)", threads, settings.PREFLOOP_TORCH_THREADS)
    return threads
