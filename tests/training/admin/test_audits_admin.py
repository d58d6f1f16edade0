"""The audits list: every audit of every run, linked to its run's page and its labeling queue; read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import PromptSet
from training.models import Audit, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def _audit(**fields) -> Audit:
    parent = ModelVersion.objects.create(name="policy-v0", kind=ModelVersion.Kind.POLICY, path="/models/v0")
    prompts = PromptSet.objects.create(name="math prompts", rollouts_per_task=2)
    run = TrainingRun.objects.create(
        kind=TrainingRun.Kind.GRPO, prompt_set=prompts, parent_model=parent, status=TrainingRun.Status.SUCCEEDED
    )
    queue = PromptSet.objects.create(name=f"Audit of run #{run.pk}", rollouts_per_task=2, overlap=3)
    defaults = {"run": run, "prompt_set": queue, "policy": "policy-run1", "parent": parent}
    return Audit.objects.create(**(defaults | fields))


def test_the_list_links_each_audit_to_its_run_page_and_its_queue(staff_client):
    audit = _audit(status=Audit.Status.READY, rollouts_audited=12, groups=[{"prompt": "2+2?", "why": "best"}])
    listing = staff_client.get(reverse("admin:training_audit_changelist")).content.decode()
    assert reverse("admin:training_trainingrun_live", args=[audit.run_id]) in listing
    assert reverse("admin:labeling_promptset_change", args=[audit.prompt_set_id]) in listing
    assert "policy-run1" in listing and "In the queue" in listing
    page = staff_client.get(reverse("admin:training_audit_change", args=[audit.pk])).content.decode()
    assert "2+2?" in page and "best" in page


def test_a_failed_audit_shows_its_error_escaped_and_nothing_can_be_changed_here(staff_client):
    audit = _audit(status=Audit.Status.FAILED, error="generation failed: <script>alert(1)</script>")
    page = staff_client.get(reverse("admin:training_audit_change", args=[audit.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert staff_client.get(reverse("admin:training_audit_add")).status_code == 403
    posted = staff_client.post(reverse("admin:training_audit_change", args=[audit.pk]), {"policy": "other"})
    assert posted.status_code == 403
    assert Audit.objects.get(pk=audit.pk).policy == "policy-run1"
    assert (
        staff_client.post(reverse("admin:training_audit_delete", args=[audit.pk]), {"post": "yes"}).status_code == 403
    )
    assert Audit.objects.filter(pk=audit.pk).exists()
