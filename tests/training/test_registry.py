"""The registry service's reads and checks: a model's lineage, and where a hand-registered base model may point."""

from __future__ import annotations

import pytest

from tests.training.admin.helpers import make_run, make_version
from training.models import ModelVersion, TrainingRun
from training.services.registry import (
    RegistrationError,
    lineage_of,
    looks_like_local_path,
    predecessor_of,
    validate_base_model_path,
)


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
