"""The rationale export option through the API and the admin form: taken, recorded, refused with aggregation."""

from __future__ import annotations

import pytest

from labeling.models import Ranking
from tests.training.factories import ranked_prompt_set
from training.forms import ExportForm
from training.models import DatasetExport

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture
def researcher_client(client):
    from tests.factories import ResearcherFactory

    client.force_login(ResearcherFactory())
    return client


def post_export(client, **body):
    return client.post("/api/dataset-versions/", body, content_type="application/json")


def test_the_api_records_an_included_rationale_and_refuses_it_with_aggregation(researcher_client):
    """`rationale: include` is queued with the export's options; with majority votes it is a 400 naming the field."""
    prompt_set = ranked_prompt_set(n_prompts=2, k=2, overlap=1)
    Ranking.objects.update(rationale="because")
    accepted = post_export(researcher_client, prompt_sets=[prompt_set.pk], rationale="include")
    assert accepted.status_code == 202, accepted.content
    assert DatasetExport.objects.get().options["rationale"] == "include"

    refused = post_export(researcher_client, prompt_sets=[prompt_set.pk], rationale="include", aggregation="majority")
    assert refused.status_code == 400 and refused.json()["field"] == "rationale"
    assert "per-annotator rows only" in refused.json()["detail"]
    unknown = post_export(researcher_client, prompt_sets=[prompt_set.pk], rationale="sometimes")
    assert unknown.status_code == 400 and unknown.json()["field"] == "rationale"
    assert DatasetExport.objects.count() == 1


def test_the_export_form_defaults_to_no_rationale_and_takes_include():
    """Left out, the option is `omit` (the options stored are as before it existed); chosen, it is recorded."""
    prompt_set = ranked_prompt_set(n_prompts=2, k=2, overlap=1)
    base = {"prompt_sets": [prompt_set.pk], "ties": "drop", "all_bad": "skip", "flagged": "never_chosen"}
    base |= {"aggregation": "per_annotator", "format": "standard", "test_fraction": 0.1, "seed": 0}
    plain = ExportForm(base)
    assert plain.is_valid(), plain.errors
    assert plain.options().rationale == "omit" and "rationale" not in plain.options().to_dict()
    chosen = ExportForm({**base, "rationale": "include"})
    assert chosen.is_valid(), chosen.errors
    assert chosen.options().to_dict()["rationale"] == "include"
    refused = ExportForm({**base, "rationale": "include", "aggregation": "bradley_terry"})
    assert not refused.is_valid() and "per-annotator rows only" in str(refused.errors)


def test_the_admin_export_page_offers_the_rationale_option(client, admin_user):
    """The admin form shows the choice among the pairing rules, `omit` selected."""
    client.force_login(admin_user)
    page = client.get("/admin/training/datasetversion/export/").content.decode()
    assert '<select name="rationale"' in page
    assert '<option value="omit" selected>' in page and '<option value="include">' in page
