"""Training runs admin: the run form, the live run page and its htmx partial, cancelling."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.training.admin.helpers import make_run, make_version
from training.models import DatasetVersion, TrainingRun
from training.trainers.config import DPORunConfig

pytestmark = pytest.mark.django_db

RUN_ADD_URL = "admin:training_trainingrun_add"


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


def test_a_max_length_past_the_local_models_positions_is_refused_on_its_input(staff_client, tmp_path):
    """The form's 1024 on a 512-position model is refused on the max_length input, naming the model's limit."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gpt2", "n_positions": 512}')
    data = run_form(make_version(), kind="reward", config_kind="reward", base_model=str(model), max_length="1024")
    data.pop("beta")
    response = staff_client.post(reverse(RUN_ADD_URL), data)
    assert response.status_code == 400
    assert "n_positions = 512" in " ".join(response.context["form"].errors["max_length"])
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("base_model", "m" * 300), ("advanced_config", "[" * 100_000), ("per_device_batch_size", "5000")],
)
def test_inputs_no_worker_could_use_are_form_errors_not_500s(staff_client, field, value):
    """A name no file system takes, JSON nested past the parser's depth, a batch over its bound: each on its input."""
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(make_version(), **{field: value}))
    assert response.status_code == 400
    assert response.context["form"].errors[field]
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
    assert run.config["loss_type"] == DPORunConfig().loss_type  # untouched keys keep their defaults


def test_switching_kind_without_javascript_shows_the_new_defaults_instead_of_queueing(staff_client):
    """Posting kind=reward with DPO inputs re-draws the reward inputs rather than training with DPO numbers."""
    version = make_version()
    response = staff_client.post(reverse(RUN_ADD_URL), run_form(version, kind="reward"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="beta"' not in page and 'value="0.0001"' in page
    assert f'<option value="{version.pk}" selected>' in page
    assert not TrainingRun.objects.exists()


# --- the length check before queueing -------------------------------------------------------------------------------

SHORT_PAIR = {"prompt": "Q?", "chosen": " Yes.", "rejected": " No."}
# 2,000 characters: about 500 tokens by the character estimate, far over the form's max_length of 256.
LONG_PAIR = {**SHORT_PAIR, "chosen": " Yes." * 400}


def jsonl_version(directory: Path, *, long: int, short: int) -> DatasetVersion:
    """A version whose exported JSONL holds `long` pairs over 256 tokens in train; test is two short pairs."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", [LONG_PAIR] * long + [SHORT_PAIR] * short), ("test", [SHORT_PAIR] * 2)):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return make_version(path=str(directory), n_train=long + short, n_test=2)


def test_a_run_that_would_truncate_most_pairs_is_refused_until_confirmed(staff_client, tmp_path):
    """9 of 10 train pairs over max_length: 400 with the share and a "Train anyway" box; ticked, the run is queued."""
    version = jsonl_version(tmp_path / "v", long=9, short=1)
    refused = staff_client.post(reverse(RUN_ADD_URL), run_form(version))
    assert refused.status_code == 400 and not TrainingRun.objects.exists()
    page = refused.content.decode()
    assert "At max_length 256 the run would truncate 9 of 10 train pairs (90%) and leave all 2 test pairs whole" in page
    assert "about 4 characters per token: this model has no tokenizer.json here" in page and "Train anyway" in page
    assert refused.context["form"].errors["confirm_length"]
    queued = staff_client.post(reverse(RUN_ADD_URL), run_form(version, confirm_length="on"), follow=True)
    run = TrainingRun.objects.get()
    assert queued.redirect_chain == [(reverse("admin:training_trainingrun_live", args=[run.pk]), 302)]
    assert "would truncate 9 of 10 train pairs (90%)" in queued.content.decode()  # still said on the run page


def test_a_run_that_would_affect_a_few_pairs_is_queued_with_a_warning(staff_client, tmp_path):
    """1 of 20 pairs (below the 10% threshold) needs no confirmation, but the run page says what will happen."""
    version = jsonl_version(tmp_path / "v", long=1, short=19)
    response = staff_client.post(
        reverse(RUN_ADD_URL), run_form(version, kind="reward", config_kind="reward"), follow=True
    )
    assert TrainingRun.objects.get().kind == "reward"
    page = response.content.decode()
    assert "At max_length 256 the run would drop 1 of 20 train pairs (5%)" in page
    assert "never truncates" in page


def test_raising_max_length_clears_the_length_check(staff_client, tmp_path):
    """The same data with max_length 1024 (or none) fits: no box, straight to the run page."""
    version = jsonl_version(tmp_path / "v", long=9, short=1)
    assert staff_client.post(reverse(RUN_ADD_URL), run_form(version, max_length="1024")).status_code == 302
    assert staff_client.post(reverse(RUN_ADD_URL), run_form(version, max_length="")).status_code == 302


def test_the_length_check_counts_with_the_models_own_tokenizer_when_it_is_here(staff_client, tmp_path):
    """A local base model with a tokenizer.json: the estimate tokenizes as the trainer will, and says so."""
    from training.trainers.tiny import build_tiny_tokenizer

    model_dir = tmp_path / "model"
    build_tiny_tokenizer(["Q? Yes. No."] * 20, model_dir)
    version = jsonl_version(tmp_path / "v", long=9, short=1)
    refused = staff_client.post(reverse(RUN_ADD_URL), run_form(version, base_model=str(model_dir)))
    assert refused.status_code == 400
    expected = (
        "truncate 9 of 10 train pairs (90%) and leave all 2 test pairs whole (counted with the model&#x27;s tokenizer)"
    )
    assert expected in refused.content.decode()


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


def test_the_run_page_shows_pairs_dropped_or_truncated_for_length(staff_client):
    """The trainer's length counts become a "Length" table, with a warning box when any pair was affected."""
    run = make_run(
        status=TrainingRun.Status.SUCCEEDED,
        config={"beta": 0.1, "max_length": 64},
        metrics={
            "train_pairs": 14.0,
            "train_pairs_dropped": 2.0,
            "train_pairs_truncated": 5.0,
            "test_pairs": 7.0,
            "test_pairs_dropped": 1.0,
            "test_pairs_truncated": 2.0,
        },
    )
    page = staff_client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).content.decode()
    assert "Length: pairs over max_length 64" in page
    assert "<td>training</td><td>16</td><td>2 (12.5%)</td><td>5 (31.2%)</td>" in page
    assert "<td>held-out</td><td>8</td><td>1 (12.5%)</td><td>2 (25.0%)</td>" in page
    assert (
        "At max_length 64, training pairs: 2 dropped and 5 truncated; held-out pairs: 1 dropped and 2 truncated."
        in page
    )
    assert "train_pairs_dropped" not in page  # not repeated among the other metrics


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
