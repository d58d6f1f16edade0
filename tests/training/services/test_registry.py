"""Registering a run's weights: all or nothing, never over another model's files, never for a run no longer ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.admin.helpers import make_run, make_version
from training.models import DatasetVersion, ModelVersion, TrainingRun
from training.services.registry import (
    RegistrationError,
    lineage_of,
    looks_like_local_path,
    model_name_for,
    models_dir,
    predecessor_of,
    register_model,
    staging_dir_for,
    validate_base_model_path,
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
    assert run.failure_reason.startswith("RegistrationError: ") and "refusing to overwrite" in run.failure_reason
    assert run.error.startswith("Traceback (most recent call last):")
    assert not ModelVersion.objects.exists()
    assert sorted(path.name for path in models_dir().iterdir()) == [occupant.name]
    assert (occupant / "config.json").read_text() == "{}"


def base_model(name: str = "base", kind: str = ModelVersion.Kind.POLICY) -> ModelVersion:
    return ModelVersion.objects.create(name=name, kind=kind, path=f"org/{name}")


@pytest.mark.django_db
def test_a_policy_was_trained_from_its_parent():
    """A DPO policy's predecessor is the parent it was registered with."""
    base = base_model()
    policy = ModelVersion.objects.create(name="p1", kind=ModelVersion.Kind.POLICY, path="/m/p1", parent=base)
    assert predecessor_of(policy) == base


@pytest.mark.django_db
def test_a_reward_model_was_trained_from_its_runs_starting_model():
    """A reward model has no parent, so its predecessor is the registered model its run started from."""
    base = base_model()
    run = make_run(kind=TrainingRun.Kind.REWARD, base_model="", parent_model=base)
    reward = ModelVersion.objects.create(name="r1", kind=ModelVersion.Kind.REWARD, path="/m/r1", run=run)
    assert predecessor_of(reward) == base


@pytest.mark.django_db
def test_hand_registered_and_hub_started_models_have_no_predecessor():
    """A base registered by hand, or a model whose run started from a hub id, ends the chain."""
    run = make_run(kind=TrainingRun.Kind.REWARD, base_model="org/gpt2")
    from_hub = ModelVersion.objects.create(name="r1", kind=ModelVersion.Kind.REWARD, path="/m/r1", run=run)
    assert predecessor_of(base_model()) is None
    assert predecessor_of(from_hub) is None


@pytest.mark.django_db
def test_lineage_runs_from_the_model_back_to_its_base():
    """Newest first: policy 2 → policy 1 → the hand-registered base."""
    base = base_model()
    first = ModelVersion.objects.create(name="p1", kind=ModelVersion.Kind.POLICY, path="/m/p1", parent=base)
    run = make_run(make_version(), base_model="", parent_model=first)
    second = ModelVersion.objects.create(name="p2", kind=ModelVersion.Kind.POLICY, path="/m/p2", parent=first, run=run)
    assert lineage_of(second) == [second, first, base]
    assert lineage_of(base) == [base]


@pytest.mark.django_db
def test_a_parent_cycle_made_by_hand_does_not_loop_forever():
    """Each model appears once even if the database says two models are each other's parent."""
    first = base_model("a")
    second = ModelVersion.objects.create(name="b", kind=ModelVersion.Kind.POLICY, path="/m/b", parent=first)
    ModelVersion.objects.filter(pk=first.pk).update(parent=second)
    assert lineage_of(second) == [second, first]


def test_a_hub_id_has_at_most_one_slash_and_anything_else_is_local():
    """The rule that decides whether a path is checked on this machine."""
    assert not looks_like_local_path("gpt2") and not looks_like_local_path("org/gpt2")
    for local in ("/models/gpt2", "./gpt2", "~/gpt2", "models/org/gpt2"):
        assert looks_like_local_path(local), local


def test_a_base_model_path_must_exist_when_it_is_local(tmp_path, monkeypatch):
    """Missing local folders are refused; existing ones (also under ~) and hub ids pass, stripped."""
    with pytest.raises(RegistrationError, match="does not exist on this machine"):
        validate_base_model_path(str(tmp_path / "missing" / "weights"))
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validate_base_model_path(f" {tmp_path / 'weights'} ") == str(tmp_path / "weights")
    assert validate_base_model_path("~/weights") == "~/weights"
    assert validate_base_model_path(" org/gpt2 ") == "org/gpt2"
