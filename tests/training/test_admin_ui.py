"""Training admin: export form, downloads, the run form, the live run page, the registry, and who may see them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from labeling import roles
from tests.factories import AdminFactory, AnnotatorFactory, PromptSetFactory, UserFactory
from tests.training.factories import ranked_prompt_set
from training import plots
from training.presenters import run_progress
from training.models import AutoTrainPolicy, DatasetVersion, ModelVersion, TrainingRun
from training.permissions import grant_researcher_permissions

pytestmark = pytest.mark.django_db

EXPORT_URL = "admin:training_datasetversion_export"
RUN_ADD_URL = "admin:training_trainingrun_add"


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


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


_hashes = iter(range(1, 10_000))


def make_version(**fields) -> DatasetVersion:
    """A dataset version row without files: enough for runs and pages that do not read the data."""
    defaults = {
        "name": "pairs",
        "content_hash": f"{next(_hashes):064x}",
        "options": {},
        "path": "/nonexistent",
        "n_rankings": 4,
        "n_train": 8,
        "n_test": 2,
    }
    return DatasetVersion.objects.create(**(defaults | fields))


def make_run(version: DatasetVersion | None = None, **fields) -> TrainingRun:
    defaults = {
        "kind": TrainingRun.Kind.DPO,
        "dataset_version": version or make_version(),
        "base_model": "gpt2",
        "config": {"beta": 0.1},
    }
    return TrainingRun.objects.create(**(defaults | fields))


def run_form(version: DatasetVersion, **overrides) -> dict:
    data = {
        "kind": "dpo",
        "config_kind": "dpo",
        "dataset_version": version.pk,
        "base_model": "org/tiny-model",  # a hub id: not checked on disk
        "parent_model": "",
        "learning_rate": "1e-05",
        "max_steps": "20",
        "num_train_epochs": "1",
        "per_device_batch_size": "4",
        "max_length": "256",
        "seed": "1",
        "beta": "0.2",
        "advanced_config": "",
    }
    data.update(overrides)
    return data


# --- export ---------------------------------------------------------------------------------------------------------


def test_the_export_form_creates_a_dataset_version(staff_client):
    """A valid export writes a version and redirects to it with a 'created' message."""
    prompt_set = ranked_prompt_set(n_prompts=8, k=3, overlap=2)
    response = staff_client.post(reverse(EXPORT_URL), export_form(prompt_set, name="first export"), follow=True)
    version = DatasetVersion.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:training_datasetversion_change", args=[version.pk])
    assert version.name == "first export" and version.n_train + version.n_test == 48
    assert "created" in response.content.decode()
    assert list(version.prompt_sets.all()) == [prompt_set]


def test_exporting_the_same_rankings_twice_reports_the_existing_version(staff_client):
    """The second identical export adds nothing and says the version already existed."""
    prompt_set = ranked_prompt_set(n_prompts=6)
    staff_client.post(reverse(EXPORT_URL), export_form(prompt_set))
    response = staff_client.post(reverse(EXPORT_URL), export_form(prompt_set), follow=True)
    assert DatasetVersion.objects.count() == 1
    assert "already existed (same content hash)" in response.content.decode()


def test_an_export_with_no_comparisons_is_refused_with_the_reason(staff_client):
    """An ExportError comes back as a form error with status 400, and no version is made."""
    empty_set = PromptSetFactory()
    response = staff_client.post(reverse(EXPORT_URL), export_form(empty_set))
    assert response.status_code == 400
    assert "holds no comparisons" in response.content.decode()
    assert not DatasetVersion.objects.exists()


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
    staff_client.post(reverse(EXPORT_URL), export_form(prompt_set))
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
    staff_client.post(reverse(EXPORT_URL), export_form(prompt_set))
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


# --- the run form ---------------------------------------------------------------------------------------------------


def test_the_run_form_shows_the_kinds_config_defaults_and_help(staff_client, settings):
    """Inputs come from the config dataclass: its defaults as initial values, its metadata as help text."""
    settings.PREFLOOP_DEFAULT_BASE_MODEL = "org/default-model"
    dpo_page = staff_client.get(reverse(RUN_ADD_URL)).content.decode()
    assert 'name="beta"' in dpo_page and 'value="0.1"' in dpo_page and 'value="1e-06"' in dpo_page
    assert "Strength of the pull towards the reference model" in dpo_page
    assert 'value="org/default-model"' in dpo_page
    assert "loss_type" in dpo_page  # listed among the keys only the advanced JSON sets
    reward_page = staff_client.get(reverse(RUN_ADD_URL) + "?kind=reward").content.decode()
    assert 'name="beta"' not in reward_page and 'value="0.0001"' in reward_page


def test_a_bad_hyper_parameter_is_refused_at_the_form_and_queues_nothing(staff_client):
    """beta = -1 comes back on the beta input with status 400; no run exists."""
    version = make_version()
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(version, beta="-1"))
    assert response.status_code == 400
    assert "beta must be a finite number &gt; 0" in response.content.decode()
    assert response.context["form"].errors["beta"]
    assert not TrainingRun.objects.exists()


def test_an_unknown_config_key_is_refused_with_a_suggestion(staff_client):
    """A misspelt key in the advanced JSON is rejected, naming the key it probably meant."""
    version = make_version()
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(version, advanced_config='{"learning_rte": 0.1}'))
    assert response.status_code == 400
    assert "did you mean &#x27;learning_rate&#x27;?" in response.content.decode()
    assert response.context["form"].errors["advanced_config"]
    assert not TrainingRun.objects.exists()


def test_advanced_config_must_be_a_json_object(staff_client):
    """Broken JSON or a non-object is a form error with where it broke."""
    version = make_version()
    broken = staff_client.post(reverse(RUN_ADD_URL), run_form(version, advanced_config='{"eval": fals}'))
    assert broken.status_code == 400 and "Not valid JSON" in broken.content.decode()
    a_list = staff_client.post(reverse(RUN_ADD_URL), run_form(version, advanced_config="[1, 2]"))
    assert a_list.status_code == 400 and "Expected a JSON object" in a_list.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_missing_local_base_model_is_refused_on_its_input(staff_client, tmp_path):
    """A local path that does not exist is caught before queueing, on the base model input."""
    version = make_version()
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(version, base_model=str(tmp_path / "nope" / "model")))
    assert response.status_code == 400
    assert response.context["form"].errors["base_model"]
    assert not TrainingRun.objects.exists()


def test_a_valid_form_queues_a_run_with_the_merged_config(staff_client, admin_user):
    """Inputs plus advanced JSON become the run's validated config; the browser lands on the run page."""
    version = make_version()
    data = run_form(version, advanced_config='{"logging_steps": 5, "beta": 0.3}', max_length="")
    response = staff_client.post(reverse(RUN_ADD_URL), data)
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:training_trainingrun_live", args=[run.pk]
    )
    assert run.status == TrainingRun.Status.QUEUED and run.created_by == admin_user
    assert run.kind == "dpo" and run.base_model == "org/tiny-model" and run.queue in ("cpu", "gpu")
    assert run.config["beta"] == 0.3  # the JSON wins over the input
    assert run.config["logging_steps"] == 5 and run.config["max_steps"] == 20 and run.config["learning_rate"] == 1e-5
    assert run.config["max_length"] is None  # blank optional input = no limit
    assert run.config["loss_type"] == "sigmoid"  # untouched keys keep their defaults


def test_switching_kind_without_javascript_shows_the_new_defaults_instead_of_queueing(staff_client):
    """Posting kind=reward with DPO inputs re-draws the reward inputs rather than training with DPO numbers."""
    version = make_version()
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(version, kind="reward"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="beta"' not in page and 'value="0.0001"' in page
    assert f'<option value="{version.pk}" selected>' in page
    assert not TrainingRun.objects.exists()


# --- the run page ---------------------------------------------------------------------------------------------------


def test_the_run_page_shows_progress_curves_metrics_and_an_escaped_log(staff_client):
    """Progress with ETA, SVG curves, before/after metrics, and model text in the log stays inert."""
    run = make_run(
        status=TrainingRun.Status.RUNNING,
        step=3,
        total_steps=12,
        started_at=timezone.now() - timedelta(seconds=30),
        device="cpu",
        history=[
            {"step": 1, "loss": 0.7},
            {"step": 2, "loss": 0.6, "rewards/accuracies": 0.5},
            {"step": 3, "loss": 0.5, "eval_loss": 0.65},
        ],
        log_tail="step 3/12 loss=0.5\n<script>alert('x')</script>\n",
        metrics={"test_reward_accuracy_before": 0.5, "test_reward_accuracy_after": 0.75, "train_seconds": 1.5},
    )
    page = staff_client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).content.decode()
    assert "step 3 / 12 (25%)" in page and "ETA about" in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="line-chart"') == 2 and "<polyline" in page
    assert "reward accuracy" in page and "+0.25" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script>alert(" not in page
    assert 'hx-trigger="every 2s"' in page and "Cancel run" in page


def test_the_live_partial_stops_polling_once_the_run_is_terminal(staff_client):
    """An active run's partial re-fetches itself; a finished run's partial carries no trigger."""
    run = make_run(status=TrainingRun.Status.RUNNING)
    url = reverse("admin:training_trainingrun_live_partial", args=[run.pk])
    active = staff_client.get(url).content.decode()
    assert f'hx-get="{url}"' in active and 'hx-trigger="every 2s"' in active
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED, step=10, total_steps=10)
    finished = staff_client.get(url).content.decode()
    assert "hx-trigger" not in finished and "Succeeded" in finished and "Cancel run" not in finished
    assert "<html" not in finished  # a fragment, not a page


def test_a_failed_run_shows_its_error(staff_client):
    """The error text is shown, escaped."""
    run = make_run(status=TrainingRun.Status.FAILED, error="OSError: <bad> path")
    page = staff_client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).content.decode()
    assert "OSError: &lt;bad&gt; path" in page and "hx-trigger" not in page


def test_the_change_view_and_list_lead_to_the_run_page(staff_client):
    """There is no edit form for a run: the row's link and the change URL go to the run page."""
    run = make_run()
    live = reverse("admin:training_trainingrun_live", args=[run.pk])
    response = staff_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    assert response.status_code == 302 and response["Location"] == live
    listing = staff_client.get(reverse("admin:training_trainingrun_changelist")).content.decode()
    assert live in listing and "run-status--queued" in listing


def test_cancel_on_a_queued_run_cancels_it(staff_client):
    """POST cancel → CANCELLED at once; GET is not allowed."""
    run = make_run()
    url = reverse("admin:training_trainingrun_cancel", args=[run.pk])
    assert staff_client.get(url).status_code == 405
    response = staff_client.post(url)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at is not None


def test_cancel_on_a_running_run_asks_it_to_stop(staff_client):
    """A running run is flagged; the worker stops it at its next step."""
    run = make_run(status=TrainingRun.Status.RUNNING)
    staff_client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.cancel_requested


def test_eta_comes_from_the_step_rate_since_the_run_started():
    """10 of 30 steps in 100 s leaves about 200 s."""
    now = timezone.now()
    run = TrainingRun(
        status=TrainingRun.Status.RUNNING, step=10, total_steps=30, started_at=now - timedelta(seconds=100)
    )
    progress = run_progress(run, now=now)
    assert progress.percent == pytest.approx(100 / 3) and progress.eta == "about 3 min 20 s"
    assert run_progress(TrainingRun(status=TrainingRun.Status.QUEUED), now=now).eta == "—"


# --- registry -------------------------------------------------------------------------------------------------------


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


# --- auto-train -----------------------------------------------------------------------------------------------------


def test_an_auto_train_policy_with_a_bad_config_is_refused(staff_client):
    """The policy's config goes through the same dataclass validation a run gets."""
    prompt_set = PromptSetFactory()
    data = {
        "prompt_set": prompt_set.pk,
        "enabled": "on",
        "min_new_rankings": "50",
        "kind": "dpo",
        "base_model": "org/m",
        "config": '{"beta": -1}',
    }
    response = staff_client.post(reverse("admin:training_autotrainpolicy_add"), data)
    assert response.status_code == 200 and "beta must be a finite number" in response.content.decode()
    assert not AutoTrainPolicy.objects.exists()
    data["config"] = '{"beta": 0.2}'
    assert staff_client.post(reverse("admin:training_autotrainpolicy_add"), data).status_code == 302
    assert AutoTrainPolicy.objects.get().config == {"beta": 0.2}


# --- who may see it -------------------------------------------------------------------------------------------------


def _training_urls(run: TrainingRun, version: DatasetVersion) -> list[str]:
    return [
        reverse("admin:training_datasetversion_changelist"),
        reverse(EXPORT_URL),
        reverse("admin:training_datasetversion_download", args=[version.pk, "train", "jsonl"]),
        reverse("admin:training_trainingrun_changelist"),
        reverse(RUN_ADD_URL),
        reverse("admin:training_trainingrun_live", args=[run.pk]),
        reverse("admin:training_trainingrun_live_partial", args=[run.pk]),
        reverse("admin:training_modelversion_changelist"),
    ]


def test_annotators_cannot_reach_any_training_page(client):
    """A non-staff user is sent to the admin login from every page, and cannot cancel a run."""
    run = make_run()
    client.force_login(AnnotatorFactory())
    for url in _training_urls(run, run.dataset_version):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED


def test_researchers_get_the_training_pages_through_their_group(client):
    """Staff without permissions are refused; the researchers group, once granted, gets in."""
    run = make_run()
    user = UserFactory(is_staff=True)
    client.force_login(user)
    assert client.get(reverse(EXPORT_URL)).status_code == 403
    assert client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).status_code == 403
    assert grant_researcher_permissions() >= 16  # four models × add/change/delete/view
    user.groups.add(Group.objects.get(name=roles.RESEARCHERS))
    user = type(user).objects.get(pk=user.pk)  # drop the cached permissions
    client.force_login(user)
    for url in (reverse(EXPORT_URL), reverse(RUN_ADD_URL), reverse("admin:training_trainingrun_live", args=[run.pk])):
        assert client.get(url).status_code == 200, url
    client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED


# --- plots ----------------------------------------------------------------------------------------------------------


def test_line_chart_draws_one_polyline_per_series_with_escaped_labels():
    """Labels and title are escaped; each multi-point series is a polyline; NaN and junk points are dropped."""
    svg = plots.line_chart_svg(
        {
            "loss": [(1, 0.7), (2, 0.5), (3, float("nan"))],
            '<img src=x onerror="alert(1)">': [(1, 0.2), (3, "junk"), (4, 0.4)],
        },
        title="<b>Loss</b>",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2
    assert "<img" not in svg and "<b>" not in svg and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg
    assert "nan" not in svg.lower() and "junk" not in svg


def test_line_chart_maps_points_into_the_plot_area():
    """The first point of a rising series sits bottom-left, the last top-right, inside the margins."""
    svg = plots.line_chart_svg({"acc": [(0, 0.0), (10, 1.0)]}, width=300, height=200)
    coords = svg.split('points="')[1].split('"')[0].split()
    (x0, y0), (x1, y1) = (tuple(map(float, c.split(","))) for c in coords)
    assert 0 < x0 < x1 < 300 and 0 < y1 < y0 < 200


def test_line_chart_without_points_says_so():
    """An empty or all-NaN series gives a placeholder, not an error."""
    assert "No data yet" in plots.line_chart_svg({})
    assert "No data yet" in plots.line_chart_svg({"loss": [(1, float("inf"))]})
    single = plots.line_chart_svg({"loss": [(5, 0.3)]})
    assert "<circle" in single and "<polyline" not in single


def test_nice_ticks_are_round_numbers_covering_the_range():
    """Ticks are evenly spaced round values."""
    assert plots.nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.nice_ticks(0.31, 0.93) == [0.4, 0.6, 0.8]


# --- the web process stays light ------------------------------------------------------------------------------------

_RENDER_PAGES = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    import training.admin  # noqa: F401
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(pk=int(sys.argv[1])))
    statuses = {url: client.get(url).status_code for url in sys.argv[2:]}
    heavy_modules = ("torch", "transformers", "trl", "datasets", "peft", "accelerate")
    heavy = sorted(name for name in heavy_modules if name in sys.modules)
    print(json.dumps({"statuses": statuses, "heavy": heavy}))
    """
)


@pytest.mark.django_db(transaction=True)
def test_rendering_the_training_admin_never_imports_torch():
    """In a fresh process, importing training.admin and rendering every page loads no ML library."""
    from django.db import connection

    user = AdminFactory()
    run = make_run(status=TrainingRun.Status.RUNNING, step=1, total_steps=4, history=[{"step": 1, "loss": 0.6}])
    model = ModelVersion.objects.create(name="base", kind=ModelVersion.Kind.POLICY, path="gpt2")
    urls = [
        reverse("admin:index"),
        *_training_urls(run, run.dataset_version)[:2],
        *_training_urls(run, run.dataset_version)[3:],
        reverse("admin:training_datasetversion_change", args=[run.dataset_version_id]),
        reverse("admin:training_modelversion_change", args=[model.pk]),
        reverse("admin:training_autotrainpolicy_add"),
    ]
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", _RENDER_PAGES, str(user.pk), *urls],
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(result["statuses"].values()) == {200}, result["statuses"]
    assert result["heavy"] == []


# --- generation (refresh by hand) ------------------------------------------------------------------------------------


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
