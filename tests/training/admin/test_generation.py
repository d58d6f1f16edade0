"""Generation runs admin: refreshing a prompt set by hand."""

from __future__ import annotations

import pytest

from training.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_a_prompt_set_is_refreshed_by_hand_from_the_admin(staff_client):
    """The generation form queues a run for a policy; bad settings are a 400 and queue nothing."""
    from tests.factories import PromptSetFactory
    from training.models import GenerationRun

    prompt_set = PromptSetFactory()
    policy = ModelVersion.objects.create(name="pol", kind=ModelVersion.Kind.POLICY, path="org/model")
    form = {
        "policy": policy.pk,
        "prompt_set": prompt_set.pk,
        "n_samples": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 16,
        "seed": 3,
        "compare_with": "",
    }
    bad = staff_client.post("/admin/training/generationrun/add/", {**form, "n_samples": 0})
    assert bad.status_code == 400 and not GenerationRun.objects.exists()
    response = staff_client.post("/admin/training/generationrun/add/", form)
    assert response.status_code == 302
    run = GenerationRun.objects.get()
    assert (run.status, run.settings["n_samples"], run.settings["temperature"]) == ("queued", 2, 0.7)
    assert "pol" in staff_client.get("/admin/training/generationrun/").content.decode()
