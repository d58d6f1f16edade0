"""The training API: export and download versions, start runs (bad configs refused), cancel, list models."""

from __future__ import annotations

import pytest

from tests.conftest import token_client
from tests.factories import AdminFactory
from tests.training.factories import ranked_prompt_set
from training.models import DatasetVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture
def researcher():
    """A researcher as seed_demo makes one: staff, in the researchers group (whose rights migrate grants)."""
    from tests.factories import ResearcherFactory

    return ResearcherFactory()


@pytest.fixture
def researcher_api(researcher):
    return token_client(researcher)


def test_researchers_cannot_import_into_prompt_sets(researcher_api):
    """Importing is an admin's job: staff status alone does not grant it."""
    from tests.factories import PromptSetFactory

    response = researcher_api.post(
        f"/api/prompt-sets/{PromptSetFactory().pk}/import/", {"content": "{}"}, format="json"
    )
    assert response.status_code == 403


def test_staff_outside_the_researchers_group_cannot_train():
    """Training needs the researchers group (or a superuser)."""
    from tests.factories import UserFactory

    assert token_client(UserFactory(is_staff=True)).get("/api/runs/").status_code == 403
    assert token_client(AdminFactory()).get("/api/runs/").status_code == 200


def export(api, prompt_set, **extra):
    return api.post(
        "/api/dataset-versions/", {"prompt_sets": [prompt_set.pk], "test_fraction": 0.25, **extra}, format="json"
    )


def build_queued_exports() -> None:
    """What the worker does with the queued exports (the real worker is tested in test_worker.py)."""
    from training.models import DatasetExport
    from training.services.export_worker import execute_export

    for export_id in DatasetExport.objects.filter(status="queued").values_list("pk", flat=True):
        execute_export(export_id)


def exported_version_id(api, prompt_set) -> int:
    export(api, prompt_set)
    build_queued_exports()
    return export(api, prompt_set).json()["dataset_version"]["id"]


def test_an_export_is_accepted_at_once_then_answered_with_its_version(researcher_api):
    """202 with the export queued and a Location to poll; once built, the same request is a 200 with the version."""
    prompt_set = ranked_prompt_set(n_prompts=6)
    first = export(researcher_api, prompt_set)
    assert first.status_code == 202 and first.json()["status"] == "queued" and first.json()["dataset_version"] is None
    assert researcher_api.get(first["Location"]).json()["status"] == "queued"
    build_queued_exports()
    polled = researcher_api.get(first["Location"]).json()
    assert polled["status"] == "succeeded" and polled["percent"] == 100.0
    second = export(researcher_api, prompt_set)
    assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
    assert second.json()["dataset_version"]["id"] == polled["dataset_version"]["id"]
    assert DatasetVersion.objects.count() == 1


def test_naming_a_prompt_set_twice_is_the_same_export(researcher_api):
    """[31, 31] and [31] select the same rankings: one export, not two versions of the same content."""
    prompt_set = ranked_prompt_set(n_prompts=4)
    export(researcher_api, prompt_set)
    build_queued_exports()
    twice = researcher_api.post(
        "/api/dataset-versions/", {"prompt_sets": [prompt_set.pk, prompt_set.pk], "test_fraction": 0.25}, format="json"
    )
    assert twice.status_code == 200 and DatasetVersion.objects.count() == 1


def test_a_bad_export_request_says_why(researcher_api):
    """Unknown rules are field errors; an empty selection is a 400 with the reason."""
    prompt_set = ranked_prompt_set(n_prompts=2)
    assert "ties" in export(researcher_api, prompt_set, ties="sometimes").json()
    from tests.factories import PromptSetFactory

    empty = export(researcher_api, PromptSetFactory())
    assert empty.status_code == 400 and "no rankings" in empty.json()["detail"]
    unknown = researcher_api.post("/api/dataset-versions/", {"prompt_sets": [prompt_set.pk, 999999]}, format="json")
    assert unknown.status_code == 400 and "999999" in str(unknown.json())
    long_name = export(researcher_api, prompt_set, name="x" * 300)
    assert long_name.status_code == 400 and "name" in long_name.json()
    from training.models import DatasetExport

    assert not DatasetExport.objects.exists()


def test_versions_download_as_jsonl_and_parquet(researcher_api):
    """Both formats of both splits download; unknown names are 404s."""
    version_id = exported_version_id(researcher_api, ranked_prompt_set(n_prompts=8))
    jsonl = researcher_api.get(f"/api/dataset-versions/{version_id}/download/train.jsonl/")
    assert jsonl.status_code == 200 and b'"chosen"' in b"".join(jsonl.streaming_content)
    parquet = researcher_api.get(f"/api/dataset-versions/{version_id}/download/test.parquet/")
    assert parquet.status_code == 200 and b"".join(parquet.streaming_content)[:4] == b"PAR1"
    assert researcher_api.get(f"/api/dataset-versions/{version_id}/download/secrets.jsonl/").status_code == 404


def test_a_run_with_a_bad_config_is_refused_at_the_api(researcher_api):
    """The 400 names the field; no run is created, nothing reaches a worker."""
    version_id = exported_version_id(researcher_api, ranked_prompt_set(n_prompts=6))
    response = researcher_api.post(
        "/api/runs/",
        {"kind": "dpo", "dataset_version": version_id, "base_model": "org/model", "config": {"beta": -1}},
        format="json",
    )
    assert response.status_code == 400 and "beta" in str(response.json())
    unknown = researcher_api.post(
        "/api/runs/",
        {"kind": "reward", "dataset_version": version_id, "base_model": "org/model", "config": {"learning_rat": 1}},
        format="json",
    )
    assert unknown.status_code == 400 and "learning_rat" in str(unknown.json())
    assert not TrainingRun.objects.exists()


def test_a_valid_run_is_queued_and_can_be_cancelled(researcher_api):
    """201 with a queued run; cancel before a worker takes it ends it at once.

    (This test's transaction never commits, so nothing is sent to a worker; the worker tests cover that.)
    """
    version_id = exported_version_id(researcher_api, ranked_prompt_set(n_prompts=6))
    response = researcher_api.post(
        "/api/runs/",
        {"kind": "reward", "dataset_version": version_id, "base_model": "org/model", "config": {"max_steps": 3}},
        format="json",
    )
    assert response.status_code == 201 and response.json()["status"] == "queued"
    cancelled = researcher_api.post(f"/api/runs/{response.json()['id']}/cancel/")
    assert cancelled.json()["status"] == "cancelled"


def test_annotators_cannot_use_the_training_api(api):
    """Training endpoints are for researchers."""
    assert api.get("/api/runs/").status_code == 403
    assert api.get("/api/dataset-versions/").status_code == 403
