"""A run whose worker died is resumed from its latest checkpoint on a real worker (Redis broker, Postgres)."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.factories import ResearcherFactory
from tests.training.test_worker import data_dir, dataset_version, fresh, tiny_base  # noqa: F401 - fixtures
from tests.training.worker import celery_worker, wait_for
from training.models import ModelVersion, TrainingRun
from training.services.checkpoints import checkpoint_dir_for, checkpoint_step
from training.services.runs import reap_stale_runs, start_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STEPS = 100


def test_a_run_whose_worker_died_resumes_from_its_checkpoint_and_registers_once(
    data_dir,  # noqa: F811
    dataset_version,  # noqa: F811
    tiny_base,  # noqa: F811
    settings,
    client,
):
    settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT = 3
    with celery_worker(data_dir=data_dir, heartbeat_timeout=3) as worker:
        run = start_run(
            kind="reward",
            dataset_version=dataset_version,
            base_model=str(tiny_base),
            config={"max_steps": STEPS, "save_steps": 5, "per_device_batch_size": 2, "logging_steps": 1},
        )
        wait_for(lambda: checkpoint_step(run) is not None, timeout=180, what="a first checkpoint")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert reap_stale_runs(now=timezone.now() + timedelta(seconds=10)) == 1
    run = fresh(run)
    assert run.status == TrainingRun.Status.FAILED and fresh(run).step < STEPS
    resumed_from = checkpoint_step(run)
    assert resumed_from is not None and resumed_from % 5 == 0

    client.force_login(ResearcherFactory())
    with celery_worker(data_dir=data_dir):  # a fresh worker (it starts on an empty broker, so before the resume)
        response = client.post(f"/api/runs/{run.pk}/resume/")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "queued"
        again = client.post(f"/api/runs/{run.pk}/resume/")  # no longer a failed run
        assert again.status_code == 400 and again.json()["code"] == "run_rejected"
        wait_for(lambda: fresh(run).status not in TrainingRun.ACTIVE, timeout=240, what="the resumed run to finish")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    assert f"resuming from the checkpoint of step {resumed_from}" in run.log_tail
    assert (run.step, run.total_steps) == (STEPS, STEPS)
    # One curve: the first attempt's points up to the checkpoint, then the resumed steps, none twice.
    steps = [point["step"] for point in run.history if "loss" in point]
    assert steps == list(range(1, STEPS + 1))
    assert "test_accuracy_before" in run.metrics and "test_accuracy_after" in run.metrics
    assert ModelVersion.objects.filter(run=run).count() == 1
    assert not checkpoint_dir_for(run).exists()
    assert not list(Path(data_dir, "models").glob(".staging-*"))


def test_a_run_without_checkpoints_cannot_be_resumed(client, dataset_version, tiny_base):  # noqa: F811
    run = start_run(
        kind="reward", dataset_version=dataset_version, base_model=str(tiny_base), config={}, dispatch=False
    )
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.FAILED)
    client.force_login(ResearcherFactory())
    response = client.post(f"/api/runs/{run.pk}/resume/")
    assert response.status_code == 400
    assert "no checkpoint" in response.json()["detail"]
    assert fresh(run).status == TrainingRun.Status.FAILED
