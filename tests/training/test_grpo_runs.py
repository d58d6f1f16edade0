"""Online runs through the run lifecycle: validation refusals (400s), RLOO registering a policy, GRPO on a worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.factories import PromptFactory, PromptSetFactory
from tests.training.grpo_toy import build_char_policy, times_zero_prompts
from training.models import ModelVersion, RunJudge, TrainingRun
from training.services.judging import judge_create
from training.services.lifecycle import RunRejected
from training.services.online_runs import start_online_run, validate_online_run_request
from training.services.registry import lineage_of
from training.services.runs import execute_run
from training.trainers.grpo import ROLLOUTS_FILE

pytestmark = pytest.mark.django_db

SMALL = {
    "max_steps": 2,
    "learning_rate": 5e-3,
    "per_device_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 2,
    "max_length": 32,
    "heldout_fraction": 0.25,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def char_policy(tmp_path_factory) -> Path:
    return build_char_policy(tmp_path_factory.mktemp("char-policy"))


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    return settings.PREFLOOP_DATA_DIR


@pytest.fixture
def arithmetic_set():
    prompt_set = PromptSetFactory(name="times zero")
    for text, answer in times_zero_prompts():
        PromptFactory(prompt_set=prompt_set, text=text, reference_answer=answer)
    return prompt_set


@pytest.fixture
def math_judge():
    return judge_create(name="math", kind="math")


def _refusal(**overrides) -> RunRejected:
    with pytest.raises(RunRejected) as caught:
        validate_online_run_request(**overrides)
    return caught.value


def test_invalid_online_runs_are_refused_naming_the_field(arithmetic_set, math_judge, char_policy):
    """Batch not divisible by num_generations, no judge, only monitors, a reward model to start from, few prompts."""
    base = {"kind": "grpo", "prompt_set": arithmetic_set, "judges": [(math_judge, 1.0)], "base_model": str(char_policy)}
    assert validate_online_run_request(**base, config=SMALL)["beta"] == 0.04  # the control: this one is accepted
    error = _refusal(**base, config={**SMALL, "per_device_batch_size": 6})
    assert error.field == "num_generations" and "divide by num_generations" in str(error)
    assert _refusal(**{**base, "judges": []}, config=SMALL).field == "judges"
    assert "non-zero weight" in str(_refusal(**{**base, "judges": [(math_judge, 0.0)]}, config=SMALL))
    assert _refusal(**{**base, "judges": [(math_judge, float("nan"))]}, config=SMALL).field == "judges"
    assert _refusal(**{**base, "judges": [(math_judge, 1.0), (math_judge, 2.0)]}, config=SMALL).field == "judges"
    assert _refusal(**base, config={**SMALL, "beta": 0}).field == "beta"
    assert _refusal(**base, config={**SMALL, "temperature": 0}).field == "temperature"
    assert _refusal(**base, config={**SMALL, "num_generatons": 4}).field == "num_generatons"
    assert _refusal(**base, config={**SMALL, "max_completion_length": 32}).field == "max_completion_length"
    reward = ModelVersion.objects.create(name="rm", kind=ModelVersion.Kind.REWARD, path=str(char_policy))
    assert _refusal(**{**base, "parent_model": reward}, config=SMALL).field == "parent_model"
    tiny_set = PromptSetFactory()
    PromptFactory(prompt_set=tiny_set, text="1*0=", reference_answer="0")
    assert _refusal(**{**base, "prompt_set": tiny_set}, config=SMALL).field == "prompt_set"
    assert _refusal(**{**base, "kind": "dpo"}, config=SMALL).field == "kind"
    # The offline path refuses an online kind (it has no prompt set to train on) instead of a database error.
    from training.models import DatasetVersion
    from training.services.runs import validate_run_request

    with pytest.raises(RunRejected) as caught:
        validate_run_request(
            kind="grpo", dataset_version=DatasetVersion(), base_model=str(char_policy), parent_model=None, config={}
        )
    assert caught.value.field == "kind" and "prompt set" in str(caught.value)


def test_the_online_run_api_answers_bad_fields_with_400s_and_queues_a_good_run(
    client, arithmetic_set, math_judge, char_policy
):
    """POST /api/runs/online/: a bad config is a 400 naming the field, a good one a 201 with the judges."""
    from tests.factories import ResearcherFactory

    client.force_login(ResearcherFactory())
    body = {
        "kind": "grpo",
        "prompt_set": arithmetic_set.pk,
        "base_model": str(char_policy),
        "judges": [{"judge": math_judge.pk, "weight": 1.0}],
        "config": {**SMALL, "per_device_batch_size": 6},
    }
    response = client.post("/api/runs/online/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "num_generations" in response.content.decode()
    response = client.post(
        "/api/runs/online/", {**body, "judges": [{"judge": 10**9, "weight": 1}]}, content_type="application/json"
    )
    assert response.status_code == 400
    response = client.post(
        "/api/runs/online/", {**body, "config": SMALL, "queue": "cpu"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert run.kind == "grpo" and run.prompt_set == arithmetic_set and run.dataset_version is None
    assert list(RunJudge.objects.filter(run=run).values_list("judge__name", "weight")) == [("math", 1.0)]


def test_an_rloo_run_executes_in_the_lifecycle_and_registers_a_policy_with_its_lineage(
    data_dir, arithmetic_set, math_judge, char_policy
):
    """execute_run trains it, registers a policy; lineage: prompt set + judges → run → model; rollouts kept."""
    length = judge_create(name="length monitor", kind="length", config={"unit": "chars", "max": 1})
    run = start_online_run(
        kind="rloo",
        prompt_set=arithmetic_set,
        judges=[(math_judge, 1.0), (length, 0.0)],
        base_model=str(char_policy),
        config={**SMALL, "num_generations": 2},
        dispatch=False,
    )
    run = execute_run(run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    model = ModelVersion.objects.get(run=run)
    assert model.kind == ModelVersion.Kind.POLICY and model.name == f"policy-run{run.pk}"
    assert model.dataset_version is None and model.run.prompt_set == arithmetic_set
    assert set(model.run.judges.values_list("name", flat=True)) == {"math", "length monitor"}
    assert lineage_of(model) == [model]  # started from a path, not a registered model
    rows = [json.loads(line) for line in (Path(model.path) / ROLLOUTS_FILE).read_text().splitlines()]
    assert rows and set(rows[0]["scores"]) == {"math", "length_monitor"}
    prompt_ids = set(arithmetic_set.prompts.values_list("pk", flat=True))
    assert {row["prompt_id"] for row in rows} <= prompt_ids
    assert "test_math_before" in run.metrics and run.metrics["rollouts"] == 16
    logged = {key for point in run.history for key in point}
    assert {"kl", "entropy", "rewards/math/mean", "rewards/length_monitor/mean", "heldout/math"} <= logged


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_grpo_run_from_a_registered_policy_runs_on_a_real_worker(data_dir, arithmetic_set, char_policy, client):
    """Queued → the worker trains it → a policy whose parent is the starting policy; the run page shows the curves."""
    from tests.factories import AdminFactory
    from tests.training.worker import celery_worker, wait_for

    judge = judge_create(name="math", kind="math")
    start = ModelVersion.objects.create(name="toy policy", kind=ModelVersion.Kind.POLICY, path=str(char_policy))
    with celery_worker(data_dir=data_dir):
        run = start_online_run(
            kind="grpo", prompt_set=arithmetic_set, judges=[(judge, 1.0)], parent_model=start, config=SMALL
        )
        wait_for(
            lambda: TrainingRun.objects.get(pk=run.pk).status not in TrainingRun.ACTIVE,
            timeout=240,
            what="the run to finish",
        )
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    assert run.celery_task_id and run.queue == "cpu" and (run.step, run.total_steps) == (2, 2)
    model = ModelVersion.objects.get(run=run)
    assert model.kind == ModelVersion.Kind.POLICY and lineage_of(model) == [model, start]
    client.force_login(AdminFactory())
    page = client.get(f"/admin/training/trainingrun/{run.pk}/live/").content.decode()
    assert "KL" in page and "Reward" in page and "<svg" in page


def test_the_admin_form_refuses_a_bad_online_run_beside_its_input_and_queues_a_good_one(
    client, arithmetic_set, math_judge, char_policy, settings
):
    """A batch that does not divide by num_generations and an unknown judge are 400s; a good form queues the run."""
    from tests.factories import AdminFactory

    judge_create(name="length", kind="length", config={"max": 3})
    client.force_login(AdminFactory())
    form = {
        "kind": "grpo",
        "prompt_set": arithmetic_set.pk,
        "parent_model": "",
        "base_model": str(char_policy),
        "judges": "math = 1\nlength = 0",
        "max_steps": "2",
        "per_device_batch_size": "6",
        "num_generations": "4",
        "max_completion_length": "2",
        "advanced_config": json.dumps({"device": "cpu"}),
    }
    url = "/admin/training/trainingrun/online/add/"
    assert client.get(url).status_code == 200
    response = client.post(url, form)
    assert response.status_code == 400
    assert "must divide by num_generations" in response.content.decode()
    response = client.post(url, {**form, "per_device_batch_size": "8", "judges": "math = 1\nnobody = 2"})
    assert response.status_code == 400 and "No judge named &#x27;nobody&#x27;" in response.content.decode()
    assert not TrainingRun.objects.exists()
    response = client.post(url, {**form, "per_device_batch_size": "8"})
    errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>.*?</ul>', response.content.decode(), re.S)
    assert response.status_code == 302, errors
    run = TrainingRun.objects.get()
    assert run.kind == "grpo" and run.config["max_steps"] == 2 and run.config["beta"] == 0.04
    assert dict(RunJudge.objects.filter(run=run).values_list("judge__name", "weight")) == {"math": 1.0, "length": 0.0}
    page = client.get(f"/admin/training/trainingrun/{run.pk}/live/").content.decode()
    assert "times zero" in page and "length × 0.0 (monitor)" in page.replace("&times;", "×")
