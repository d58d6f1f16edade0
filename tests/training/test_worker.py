"""Runs on a real Celery worker (Redis broker, Postgres): success registers a model; SIGKILL leaves a FAILED run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.training.factories import ranked_prompt_set
from tests.training.worker import celery_worker, wait_for
from training.models import ModelVersion, TrainingRun
from training.services.export import ExportOptions, export_dataset
from training.services.runs import reap_stale_runs, start_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from training.trainers.tiny import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    return settings.PREFLOOP_DATA_DIR


@pytest.fixture
def dataset_version(data_dir):
    prompt_set = ranked_prompt_set(n_prompts=10, k=3, overlap=1)
    return export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)).version


def fresh(run: TrainingRun) -> TrainingRun:
    run.refresh_from_db()
    return run


def test_a_run_started_from_the_admin_form_runs_on_a_real_worker_and_registers_its_model(
    data_dir, dataset_version, tiny_base, client
):
    """Admin form → queued → running on the worker → succeeded, with progress, metrics and one ModelVersion."""
    from tests.factories import AdminFactory

    client.force_login(AdminFactory())
    form = {
        "kind": "dpo",
        "config_kind": "dpo",
        "dataset_version": dataset_version.pk,
        "base_model": str(tiny_base),
        "parent_model": "",
        "learning_rate": "0.001",
        "max_steps": "6",
        "num_train_epochs": "1",
        "per_device_batch_size": "4",
        "max_length": "256",
        "seed": "1",
        "beta": "0.1",
        "advanced_config": "",
    }
    with celery_worker(data_dir=data_dir):
        response = client.post("/admin/training/trainingrun/add/", form)
        assert response.status_code == 302, response.content.decode()[-2000:]
        run = TrainingRun.objects.get()
        wait_for(lambda: fresh(run).status not in TrainingRun.ACTIVE, timeout=180, what="the run to finish")
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    assert run.queue == "cpu" and run.celery_task_id
    assert (run.step, run.total_steps) == (6, 6)
    assert run.history and "test_logp_margin_after" in run.metrics
    model = ModelVersion.objects.get(run=run)
    assert model.kind == ModelVersion.Kind.POLICY and model.dataset_version == dataset_version
    assert (Path(model.path) / "config.json").exists()
    assert not list(Path(data_dir, "models").glob(".staging-*"))
    live = client.get(f"/admin/training/trainingrun/{run.pk}/live/").content.decode()
    assert "succeeded" in live.lower() and "<svg" in live


def test_a_worker_killed_mid_run_leaves_a_failed_run_and_no_model(data_dir, dataset_version, tiny_base, settings):
    """SIGKILL the worker while it trains: heartbeats stop, the reaper fails the run, nothing is registered."""
    settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT = 3
    with celery_worker(data_dir=data_dir, heartbeat_timeout=3) as worker:
        run = start_run(
            kind="dpo",
            dataset_version=dataset_version,
            base_model=str(tiny_base),
            config={"max_steps": 100000, "per_device_batch_size": 2},
        )
        wait_for(
            lambda: fresh(run).status == TrainingRun.Status.RUNNING and run.step > 0, timeout=120, what="training steps"
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    from datetime import timedelta

    from django.utils import timezone

    last_beat = fresh(run).heartbeat_at
    assert reap_stale_runs(now=last_beat + timedelta(seconds=1)) == 0  # within the timeout: alive
    assert reap_stale_runs(now=timezone.now() + timedelta(seconds=10)) == 1
    run = fresh(run)
    assert run.status == TrainingRun.Status.FAILED
    assert "stopped sending heartbeats" in run.error
    assert not ModelVersion.objects.exists()
    assert not list(Path(data_dir, "models").glob("*"))


def test_cancelling_a_running_run_stops_it_without_a_model(data_dir, dataset_version, tiny_base):
    """Cancel asks the trainer to stop at its next step; the run ends CANCELLED with nothing registered."""
    from training.services.runs import cancel_run

    with celery_worker(data_dir=data_dir):
        run = start_run(
            kind="reward",
            dataset_version=dataset_version,
            base_model=str(tiny_base),
            config={"max_steps": 100000, "per_device_batch_size": 2},
        )
        wait_for(lambda: fresh(run).step > 0, timeout=120, what="training steps")
        cancel_run(run)
        wait_for(lambda: fresh(run).status not in TrainingRun.ACTIVE, timeout=60, what="the run to stop")
    assert run.status == TrainingRun.Status.CANCELLED
    assert not ModelVersion.objects.exists()
