"""Workers set torch's thread count from PREFLOOP_TORCH_THREADS, by default the cores they are given."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from celery.signals import worker_init, worker_process_init

from webapp import celery as celery_module
from webapp.worker_threads import apply_torch_threads, cores_given, torch_threads


@pytest.fixture
def restore_torch_threads():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_the_default_is_the_cores_this_process_may_run_on(settings):
    """Not the machine's core count: a worker pinned to 2 cores of 64 gets 2 threads."""
    settings.PREFLOOP_TORCH_THREADS = 0
    assert torch_threads() == cores_given() == len(os.sched_getaffinity(0))


def test_the_setting_overrides_the_default(settings, restore_torch_threads):
    settings.PREFLOOP_TORCH_THREADS = 1
    assert apply_torch_threads() == 1
    assert restore_torch_threads.get_num_threads() == 1


def test_both_kinds_of_worker_apply_it_at_start(settings, restore_torch_threads):
    """Prefork children through worker_process_init; a solo worker (make run's) through worker_init."""
    torch = restore_torch_threads
    settings.PREFLOOP_TORCH_THREADS = 1
    receivers = [ref() for _, ref in worker_process_init.receivers] + [ref() for _, ref in worker_init.receivers]
    assert celery_module._torch_threads_in_pool_process in receivers
    assert celery_module._torch_threads_in_solo_worker in receivers

    from celery.concurrency.prefork import TaskPool
    from celery.concurrency.solo import TaskPool as SoloPool

    torch.set_num_threads(2)
    celery_module._torch_threads_in_solo_worker(sender=SimpleNamespace(pool_cls=TaskPool))
    assert torch.get_num_threads() == 2, "a prefork parent leaves it to its children"
    celery_module._torch_threads_in_solo_worker(sender=SimpleNamespace(pool_cls=SoloPool))
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    celery_module._torch_threads_in_pool_process()
    assert torch.get_num_threads() == 1
