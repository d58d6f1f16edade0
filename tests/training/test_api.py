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
    bad_rule = export(researcher_api, prompt_set, ties="sometimes").json()
    assert (bad_rule["field"], bad_rule["code"]) == ("ties", "invalid_choice")
    from tests.factories import PromptSetFactory

    empty = export(researcher_api, PromptSetFactory())
    assert empty.status_code == 400 and empty.json()["code"] == "export_rejected"
    assert "no rankings" in empty.json()["detail"]
    unknown = researcher_api.post("/api/dataset-versions/", {"prompt_sets": [prompt_set.pk, 999999]}, format="json")
    assert unknown.status_code == 400 and unknown.json()["field"] == "prompt_sets"
    assert "999999" in unknown.json()["detail"]
    long_name = export(researcher_api, prompt_set, name="x" * 300)
    assert long_name.status_code == 400
    assert (long_name.json()["field"], long_name.json()["code"]) == ("name", "max_length")
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
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("run_rejected", "beta")
    assert "beta must be a finite number > 0" in response.json()["detail"]
    unknown = researcher_api.post(
        "/api/runs/",
        {"kind": "reward", "dataset_version": version_id, "base_model": "org/model", "config": {"learning_rat": 1}},
        format="json",
    )
    assert unknown.status_code == 400 and unknown.json()["field"] == "learning_rat"
    assert "did you mean 'learning_rate'?" in unknown.json()["detail"]
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


# --- run requests: every field bounded, max_length within the model's positions --------------------------------------


def start(api, version, **body):
    return api.post("/api/runs/", {"kind": "reward", "dataset_version": version.pk, **body}, format="json")


def local_model(directory, **config) -> str:
    """A model directory as transformers writes one, reduced to the config.json the checks read."""
    import json

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", **config}))
    return str(directory)


def test_a_base_model_longer_than_its_column_is_a_400_not_a_500(researcher_api):
    """600 characters overflowed the 500-character column (a 500); now the field says so, and nothing is created."""
    from tests.training.admin.helpers import make_version

    response = start(researcher_api, make_version(), base_model="org/" + "m" * 596)
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["code"]) == ("base_model", "max_length")
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize(
    "base_model",
    ["m" * 300, "org/has space", "/" + "d" * 300 + "/model"],
    ids=["name-longer-than-a-file-name", "not-a-hub-id", "path-component-too-long"],
)
def test_a_base_model_that_is_neither_a_hub_id_nor_a_usable_path_is_refused(researcher_api, base_model):
    """Names the worker could never load are refused on the field, before anything reads the file system."""
    from tests.training.admin.helpers import make_version

    response = start(researcher_api, make_version(), base_model=base_model)
    assert response.status_code == 400, response.content
    assert (response.json()["field"], response.json()["code"]) == ("base_model", "run_rejected")


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("reward", "per_device_batch_size", 10**30),
        ("reward", "gradient_accumulation_steps", 10**6),
        ("reward", "learning_rate", 10.0),
        ("reward", "num_train_epochs", 1e9),
        ("reward", "max_steps", 10**12),
        ("reward", "max_length", 10**9),
        ("reward", "seed", 2**64),
        ("reward", "logging_steps", 10**12),
        ("reward", "eval_steps", 10**12),
        ("reward", "center_rewards_coefficient", 1e6),
        ("dpo", "beta", 1e9),
        ("dpo", "sft_weight", 1e9),
        ("dpo", "lora_r", 10**6),
        ("dpo", "lora_alpha", 1e12),
        ("dpo", "lora_target_modules", ["c_attn\x00"]),
        ("dpo", "lora_target_modules", ["q"] * 1000),
    ],
)
def test_every_config_field_has_an_upper_bound_named_in_the_400(researcher_api, kind, field, value):
    """10**30 pairs per batch was accepted and left for a worker to fail on; each field now has bounds."""
    from tests.training.admin.helpers import make_version

    response = start(researcher_api, make_version(), kind=kind, base_model="org/model", config={field: value})
    assert response.status_code == 400, response.content
    assert (response.json()["field"], response.json()["code"]) == (field, "run_rejected")
    assert f"{field} must be" in response.json()["detail"]
    assert not TrainingRun.objects.exists()


def test_a_max_length_past_the_models_positions_is_refused_before_the_worker(researcher_api, tmp_path):
    """A reward run with max_length 1024 on a 512-position model failed in the worker; now the API says why."""
    from tests.training.admin.helpers import make_version

    model = local_model(tmp_path / "tiny", n_positions=512)
    response = start(researcher_api, make_version(), base_model=model, config={"max_length": 1024})
    assert response.status_code == 400
    body = response.json()
    assert (body["field"], body["code"]) == ("max_length", "run_rejected")
    assert "n_positions = 512" in body["detail"] and "Set max_length to 512 or less" in body["detail"]
    no_limit = start(researcher_api, make_version(), base_model=model, config={"max_length": None})
    assert no_limit.status_code == 400 and no_limit.json()["field"] == "max_length"
    assert not TrainingRun.objects.exists()


def test_an_unset_max_length_is_fitted_to_a_smaller_model(researcher_api, tmp_path):
    """Left to its default (1024), max_length becomes the model's 512 positions, recorded in the run's config."""
    from tests.training.admin.helpers import make_version

    model = local_model(tmp_path / "tiny", n_positions=512)
    fitted = start(researcher_api, make_version(), base_model=model)
    assert fitted.status_code == 201, fitted.content
    assert fitted.json()["config"]["max_length"] == 512
    within = start(researcher_api, make_version(), base_model=model, config={"max_length": 256})
    assert within.status_code == 201 and within.json()["config"]["max_length"] == 256


def test_a_parent_models_positions_bound_max_length_too(researcher_api, tmp_path):
    """Continuing from a registered model reads that model's config.json (max_position_embeddings here)."""
    from tests.training.admin.helpers import make_run, make_version
    from training.models import ModelVersion

    version = make_version()
    path = local_model(tmp_path / "policy", max_position_embeddings=256)
    parent = ModelVersion.objects.create(name="p", kind="policy", path=path, dataset_version=version, run=make_run())
    response = researcher_api.post(
        "/api/runs/",
        {"kind": "dpo", "dataset_version": version.pk, "parent_model": parent.pk, "config": {"max_length": 512}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "max_length" and "max_position_embeddings = 256" in response.json()["detail"]
