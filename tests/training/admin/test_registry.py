"""Model registry admin: lineage on a model's page, the key metric in the list, registering a base model."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.training.admin.helpers import make_run, make_version
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_the_registry_shows_lineage_from_dataset_to_run_to_model_to_parent(staff_client):
    """A trained policy's page links its run, its dataset and its parent, back to the hand-registered base."""
    base = ModelVersion.objects.create(name="base-gpt2", kind=ModelVersion.Kind.POLICY, path="gpt2")
    version = make_version(name="rankings-v1")
    run = make_run(version, base_model="", parent_model=base, status=TrainingRun.Status.SUCCEEDED)
    policy = ModelVersion.objects.create(
        name="policy-run1",
        kind=ModelVersion.Kind.POLICY,
        path="/models/p1",
        parent=base,
        dataset_version=version,
        run=run,
        metrics={"test_reward_accuracy_after": 0.875},
    )
    page = staff_client.get(reverse("admin:training_modelversion_change", args=[policy.pk])).content.decode()
    assert reverse("admin:training_trainingrun_live", args=[run.pk]) in page
    assert reverse("admin:training_datasetversion_change", args=[version.pk]) in page
    assert reverse("admin:training_modelversion_change", args=[base.pk]) in page
    assert "registered by hand" in page
    listing = staff_client.get(reverse("admin:training_modelversion_changelist")).content.decode()
    assert '<span title="held-out reward accuracy">0.875</span>' in listing
    base_page = staff_client.get(reverse("admin:training_modelversion_change", args=[base.pk])).content.decode()
    assert reverse("admin:training_modelversion_change", args=[policy.pk]) in base_page  # "trained from this"


def test_a_base_model_can_be_registered_by_hand(staff_client, tmp_path):
    """The add form takes name, kind and path; a missing local path is refused."""
    url = reverse("admin:training_modelversion_add")
    missing = staff_client.post(url, {"name": "local", "kind": "policy", "path": str(tmp_path / "missing" / "weights")})
    assert missing.status_code == 200 and "does not exist on this machine" in missing.content.decode()
    response = staff_client.post(url, {"name": "gpt2-base", "kind": "policy", "path": "org/gpt2"})
    assert response.status_code == 302
    model = ModelVersion.objects.get()
    assert (model.name, model.run, model.dataset_version) == ("gpt2-base", None, None)
