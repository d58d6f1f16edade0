"""Registering a run's weights: all or nothing, never over another model's files, never for a run no longer ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.models import DatasetVersion, ModelVersion, TrainingRun
from training.services.registry import (
    RegistrationError,
    model_name_for,
    models_dir,
    register_model,
    staging_dir_for,
)
from training.services.runs import execute_run, start_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    return settings.PREFLOOP_DATA_DIR


@pytest.fixture
def dataset_version(db) -> DatasetVersion:
    return DatasetVersion.objects.create(
        name="v1", content_hash="0" * 64, options={}, path="/nowhere", n_rankings=4, n_train=4, n_test=2
    )


def running_run(dataset_version: DatasetVersion, status: str = TrainingRun.Status.RUNNING) -> TrainingRun:
    return TrainingRun.objects.create(
        kind=TrainingRun.Kind.DPO, dataset_version=dataset_version, base_model="org/base", status=status
    )


def trained_weights(run: TrainingRun) -> Path:
    """What a trainer leaves in the run's staging directory."""
    staging = staging_dir_for(run)
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"weights of run %d" % run.pk)
    return staging


def test_a_running_runs_weights_are_moved_into_place_and_registered(data_dir, dataset_version):
    """The staging directory becomes the model's directory, and the run succeeds with the model's metrics."""
    run = running_run(dataset_version)
    staging = trained_weights(run)
    model = register_model(run=run, staging=staging, metrics={"test_accuracy_after": 0.9})
    assert Path(model.path) == models_dir() / model_name_for(run)
    assert (Path(model.path) / "model.safetensors").read_bytes() == b"weights of run %d" % run.pk
    assert not staging.exists()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.metrics == {"test_accuracy_after": 0.9}


@pytest.mark.parametrize("status", [TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED])
def test_a_run_that_is_no_longer_running_registers_nothing_and_leaves_no_files(data_dir, dataset_version, status):
    """The reaper (or a cancel) got there first: refused, no row, and neither staging nor final directory remains."""
    run = running_run(dataset_version)
    staging = trained_weights(run)
    TrainingRun.objects.filter(pk=run.pk).update(status=status)
    with pytest.raises(RegistrationError, match=rf"Run {run.pk} is {status}, not running"):
        register_model(run=run, staging=staging, metrics={})
    assert not ModelVersion.objects.exists()
    assert not staging.exists() and not (models_dir() / model_name_for(run)).exists()
    run.refresh_from_db()
    assert run.status == status


def test_weights_already_at_the_target_are_never_overwritten(data_dir, dataset_version):
    """Another model's files at the run's target name are left byte for byte; the run's own stay in staging."""
    run = running_run(dataset_version)
    staging = trained_weights(run)
    occupant = models_dir() / model_name_for(run)
    occupant.mkdir()
    (occupant / "model.safetensors").write_bytes(b"someone else's weights")
    with pytest.raises(RegistrationError, match="already exists; refusing to overwrite"):
        register_model(run=run, staging=staging, metrics={})
    assert (occupant / "model.safetensors").read_bytes() == b"someone else's weights"
    assert not ModelVersion.objects.exists()
    assert staging.exists()  # the caller (execute_run) removes it; see the next test
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING


@pytest.mark.slow
def test_a_trained_run_whose_target_is_taken_fails_and_cleans_its_staging(data_dir, tiny_base_model, standard_dataset):
    """End to end in-process: real training, registration refused, the run FAILED with why, no stray directories."""
    version = DatasetVersion.objects.create(
        name="polite",
        content_hash="1" * 64,
        options={},
        path=str(standard_dataset),
        n_rankings=0,
        n_train=96,
        n_test=32,
    )
    run = start_run(
        kind=TrainingRun.Kind.REWARD,
        dataset_version=version,
        base_model=str(tiny_base_model),
        config={"max_steps": 1, "per_device_batch_size": 4, "eval": False},
        dispatch=False,
    )
    occupant = models_dir() / model_name_for(run)
    occupant.mkdir()
    (occupant / "config.json").write_text("{}")

    run = execute_run(run.pk)

    assert run.status == TrainingRun.Status.FAILED
    assert run.error.startswith("RegistrationError: ") and "refusing to overwrite" in run.error
    assert not ModelVersion.objects.exists()
    assert sorted(path.name for path in models_dir().iterdir()) == [occupant.name]
    assert (occupant / "config.json").read_text() == "{}"
