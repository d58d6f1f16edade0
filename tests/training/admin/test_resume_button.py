"""The run page's Resume button: shown for a failed run with a complete checkpoint, and it queues the run again.

That the resumed worker really continues from the checkpoint and registers once is tests/training/test_resume.py
(a real worker killed mid-run); here is the page's part of it.
"""

from __future__ import annotations

from django.urls import reverse

from tests.training.admin.helpers import make_run
from training.models import TrainingRun
from training.services.checkpoints import checkpoint_dir_for


def _checkpoint(run: TrainingRun, step: int, *, complete: bool = True) -> None:
    folder = checkpoint_dir_for(run) / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"log_history": []}')
    if complete:
        (folder / "model.safetensors").write_bytes(b"weights")


def _page(client, run: TrainingRun) -> str:
    return client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).content.decode()


def test_a_failed_run_with_a_checkpoint_offers_resume_from_its_step(staff_client):
    run = make_run(status=TrainingRun.Status.FAILED, error="worker lost")
    _checkpoint(run, 2)
    _checkpoint(run, 4)
    _checkpoint(run, 6, complete=False)  # the dying worker was still writing it
    page = _page(staff_client, run)
    assert "Resume from step 4" in page and reverse("admin:training_trainingrun_resume", args=[run.pk]) in page


def test_no_resume_button_without_a_checkpoint_or_for_a_run_that_did_not_fail(staff_client):
    failed = make_run(status=TrainingRun.Status.FAILED, error="boom")
    assert "Resume from step" not in _page(staff_client, failed)
    succeeded = make_run(status=TrainingRun.Status.SUCCEEDED)
    _checkpoint(succeeded, 4)
    assert "Resume from step" not in _page(staff_client, succeeded)


def test_resume_queues_the_failed_run_again_and_says_so(staff_client):
    run = make_run(status=TrainingRun.Status.FAILED, error="worker lost", failure_reason="The worker died.")
    _checkpoint(run, 4)
    url = reverse("admin:training_trainingrun_resume", args=[run.pk])
    assert staff_client.get(url).status_code == 405
    response = staff_client.post(url, follow=True)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED and run.error == "" and run.failure_reason == ""
    assert "resuming from the checkpoint of step 4" in run.log_tail
    assert "continues from its latest checkpoint" in response.content.decode()


def test_resume_of_a_run_without_a_checkpoint_changes_nothing_and_says_why(staff_client):
    run = make_run(status=TrainingRun.Status.FAILED, error="boom")
    response = staff_client.post(reverse("admin:training_trainingrun_resume", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.error == "boom"
    assert "has no checkpoint to resume from" in response.content.decode()


def test_resume_is_refused_to_a_user_who_may_only_view_runs(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_trainingrun"))
    client.force_login(viewer)
    run = make_run(status=TrainingRun.Status.FAILED, error="worker lost")
    _checkpoint(run, 4)
    assert "Resume from step" not in _page(client, run)
    assert client.post(reverse("admin:training_trainingrun_resume", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
