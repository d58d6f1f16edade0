"""A failed run says why in plain words first, with its whole traceback below, folded away on the run page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import AdminFactory
from tests.training.factories import ranked_prompt_set
from training.models import TrainingRun
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
from training.services.failures import failure_reason, full_error
from training.services.runs import execute_run, start_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset_version(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    prompt_set = ranked_prompt_set(n_prompts=6, k=3, overlap=1)
    return export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)).version


def test_a_hub_model_the_offline_worker_cannot_load_fails_with_a_plain_reason_and_the_whole_traceback(
    dataset_version, client
):
    """`gpt2` offline (the form check is off here, as on a machine that skipped it): the real loader's error becomes
    "not available offline: register a base model", and the traceback is kept from its first frame."""
    run = start_run(kind="reward", dataset_version=dataset_version, base_model="gpt2", dispatch=False)
    run = execute_run(run.pk)
    assert run.status == TrainingRun.Status.FAILED
    assert run.failure_reason.startswith("Model `gpt2` is not available offline")
    assert "Register a base model" in run.failure_reason
    assert run.error.startswith("Traceback (most recent call last):")
    assert "in execute_run" in run.error  # the outermost frame: nothing was cut from the front
    assert "LocalEntryNotFoundError" in run.error  # the hub's own error, chained under transformers' OSError
    assert "failed: Model `gpt2` is not available offline" in run.log_tail

    client.force_login(AdminFactory())
    page = client.get(reverse("admin:training_trainingrun_live_partial", args=[run.pk])).content.decode()
    reason_at, details_at = page.index("is not available offline"), page.index('<details class="run-traceback">')
    assert reason_at < details_at, "the reason comes before the folded traceback"
    assert "in execute_run" in page[details_at:]


def test_the_run_page_escapes_a_failure_reason(dataset_version, client):
    """Error text can quote model output or file contents: it is shown as text, never as markup."""
    run = start_run(kind="reward", dataset_version=dataset_version, base_model="/tmp", dispatch=False)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.FAILED, failure_reason="bad <script>alert(1)</script>", error="Traceback <b>"
    )
    client.force_login(AdminFactory())
    page = client.get(reverse("admin:training_trainingrun_live_partial", args=[run.pk])).content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "Traceback &lt;b&gt;" in page


def test_reasons_for_memory_and_unrecognised_errors():
    assert "ran out of memory" in failure_reason(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert "lora" in failure_reason(MemoryError())
    assert failure_reason(ValueError("first line\nsecond line")) == "ValueError: first line"
    assert failure_reason(ValueError("x" * 5000)).endswith("…")  # a reason stays short; the traceback has it all


def test_the_full_error_keeps_every_line_of_a_long_traceback():
    """Nothing is cut: a 10,000-character message survives whole (the old record kept the last 4,000 characters)."""
    try:
        raise ValueError("y" * 10_000)
    except ValueError as error:
        text = full_error(error)
    assert text.startswith("Traceback (most recent call last):") and "y" * 10_000 in text
