"""Dataset versions admin: the export form, the version page, and split downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import PromptSetFactory
from tests.training.admin.helpers import make_version
from tests.training.factories import ranked_prompt_set
from training.models import DatasetExport, DatasetVersion
from training.services.export_worker import execute_export

pytestmark = pytest.mark.django_db

EXPORT_URL = "admin:training_datasetversion_export"


def export_form(prompt_set, **overrides) -> dict:
    data = {
        "prompt_sets": [prompt_set.pk],
        "ties": "drop",
        "all_bad": "skip",
        "flagged": "never_chosen",
        "aggregation": "per_annotator",
        "format": "standard",
        "test_fraction": "0.25",
        "seed": "0",
        "name": "",
    }
    data.update(overrides)
    return data


def export_and_build(client, data: dict, **kwargs):
    """Post the export form, then build what it queued as the worker would (the message itself is not under test)."""
    response = client.post(reverse(EXPORT_URL), data, **kwargs)
    for export in DatasetExport.objects.filter(status=DatasetExport.Status.QUEUED):
        execute_export(export.pk)
    return response


# --- export ---------------------------------------------------------------------------------------------------------


def test_the_export_form_queues_an_export_shown_with_its_progress_until_the_version_is_ready(staff_client):
    """The form answers at once (no version yet), the exports list shows a progress bar; built, it links the version."""
    prompt_set = ranked_prompt_set(n_prompts=8, k=3, overlap=2)
    response = staff_client.post(reverse(EXPORT_URL), export_form(prompt_set, name="first export"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:training_datasetexport_changelist")
    page = response.content.decode()
    assert "queued" in page and "<progress" in page and 'http-equiv="refresh"' in page
    assert not DatasetVersion.objects.exists()
    execute_export(DatasetExport.objects.get().pk)
    version = DatasetVersion.objects.get()
    assert version.name == "first export" and version.n_train + version.n_test == 48
    assert list(version.prompt_sets.all()) == [prompt_set]
    page = staff_client.get(reverse("admin:training_datasetexport_changelist")).content.decode()
    assert reverse("admin:training_datasetversion_change", args=[version.pk]) in page
    assert 'http-equiv="refresh"' not in page


def test_exporting_the_same_rankings_twice_reports_the_existing_version(staff_client):
    """The second identical export queues nothing and goes straight to the version made before."""
    prompt_set = ranked_prompt_set(n_prompts=6)
    export_and_build(staff_client, export_form(prompt_set))
    response = staff_client.post(reverse(EXPORT_URL), export_form(prompt_set), follow=True)
    assert DatasetVersion.objects.count() == 1 and DatasetExport.objects.count() == 1
    assert "exported before" in response.content.decode()


def test_an_export_with_no_comparisons_is_refused_with_the_reason(staff_client):
    """An empty selection is refused at the form with status 400: nothing queued, no version made."""
    empty_set = PromptSetFactory()
    response = staff_client.post(reverse(EXPORT_URL), export_form(empty_set))
    assert response.status_code == 400
    assert "holds no rankings" in response.content.decode()
    assert not DatasetVersion.objects.exists() and not DatasetExport.objects.exists()


def test_an_empty_time_window_is_refused_at_the_form(staff_client):
    """'since' after 'until' is rejected by ExportOptions and shown on the form."""
    prompt_set = PromptSetFactory()
    data = export_form(prompt_set, since="2026-02-01T10:00", until="2026-01-01T10:00")
    response = staff_client.post(reverse(EXPORT_URL), data)
    assert response.status_code == 400
    assert "The time window is empty" in response.content.decode()


def test_the_export_page_lists_prompt_sets_and_annotators(staff_client):
    """The form offers every prompt set and the people who ranked."""
    prompt_set = ranked_prompt_set(n_prompts=2, overlap=2)
    page = staff_client.get(reverse(EXPORT_URL)).content.decode()
    assert prompt_set.name in page
    assert page.count('name="annotators"') == 1 and "annotator" in page


# --- downloads ------------------------------------------------------------------------------------------------------


def test_a_split_downloads_as_an_attachment_in_both_formats(staff_client):
    """JSONL has one line per pair; Parquet is a Parquet file."""
    prompt_set = ranked_prompt_set(n_prompts=8)
    export_and_build(staff_client, export_form(prompt_set))
    version = DatasetVersion.objects.get()
    response = staff_client.get(reverse("admin:training_datasetversion_download", args=[version.pk, "train", "jsonl"]))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == version.n_train and {"prompt", "chosen", "rejected"} <= set(json.loads(lines[0]))
    parquet = staff_client.get(reverse("admin:training_datasetversion_download", args=[version.pk, "test", "parquet"]))
    assert b"".join(parquet.streaming_content)[:4] == b"PAR1"


def test_downloads_accept_only_known_splits_and_formats(staff_client):
    """Anything but train/test × jsonl/parquet is a 404, so no other file can be reached."""
    prompt_set = ranked_prompt_set(n_prompts=4)
    export_and_build(staff_client, export_form(prompt_set))
    version = DatasetVersion.objects.get()
    (Path(version.path) / "secret.jsonl").write_text("{}")
    for split, fmt in [
        ("secret", "jsonl"),
        ("meta", "json"),
        ("train", "csv"),
        ("..", "jsonl"),
        ("train", "jsonl.bak"),
    ]:
        url = reverse("admin:training_datasetversion_download", args=[version.pk, split, fmt])
        assert staff_client.get(url).status_code == 404, (split, fmt)
    assert (
        staff_client.get(f"/admin/training/datasetversion/{version.pk}/download/%2E%2E/meta.json/").status_code == 404
    )


def test_the_version_page_shows_options_and_download_links(staff_client):
    """The detail view is read-only, with pretty options JSON and the four download links."""
    version = make_version(options={"ties": "drop", "seed": 3})
    page = staff_client.get(reverse("admin:training_datasetversion_change", args=[version.pk])).content.decode()
    assert "&quot;seed&quot;: 3" in page
    for split in ("train", "test"):
        for fmt in ("jsonl", "parquet"):
            assert reverse("admin:training_datasetversion_download", args=[version.pk, split, fmt]) in page
    assert 'name="_save"' not in page
