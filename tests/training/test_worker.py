"""Runs on a real Celery worker (Redis broker, Postgres): success registers a model; SIGKILL leaves a FAILED run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.training.factories import ranked_prompt_set
from tests.training.worker import celery_worker, wait_for
from training.models import ModelVersion, TrainingRun
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
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


def test_an_export_requested_through_the_api_is_built_by_a_real_worker(data_dir, client):
    """POST answers 202 at once with the export queued; the worker streams it into a version; GET shows it ready."""
    from tests.factories import ResearcherFactory
    from training.models import DatasetExport, DatasetVersion

    prompt_set = ranked_prompt_set(n_prompts=10, k=3, overlap=1)
    client.force_login(ResearcherFactory())
    with celery_worker(data_dir=data_dir):
        response = client.post(
            "/api/dataset-versions/", {"prompt_sets": [prompt_set.pk], "name": "async"}, content_type="application/json"
        )
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["status"] in {"queued", "running"} and body["dataset_version"] is None
        export = DatasetExport.objects.get(pk=body["id"])
        wait_for(
            lambda: DatasetExport.objects.get(pk=export.pk).status in {"succeeded", "failed"},
            timeout=120,
            what="the export to finish",
        )
    ready = client.get(f"/api/dataset-exports/{export.pk}/").json()
    assert ready["status"] == "succeeded", ready["error"]
    version = DatasetVersion.objects.get(pk=ready["dataset_version"]["id"])
    assert version.name == "async" and version.n_train + version.n_test == 30
    assert not list((data_dir / "datasets").glob(".staging-*"))
    again = client.post("/api/dataset-versions/", {"prompt_sets": [prompt_set.pk]}, content_type="application/json")
    assert again.status_code == 200 and again.json()["dataset_version"]["id"] == version.pk
