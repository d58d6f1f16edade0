"""RL audits: a run's rollouts reach the queue beside its parent's; human rankings give a win rate and judge agreement.

The end-to-end test trains a real GRPO policy on the character toy (math judge, weight 1) with two reward-model
monitors (weight 0): one, and an exact mirror of it (its score head negated), so that annotators who follow the first
make the second disagree on every pair — the negative control the run page must warn about.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from labeling.models import RankingTask, Rollout
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AdminFactory, AnnotatorFactory, PromptFactory, PromptSetFactory, ResearcherFactory
from tests.training.grpo_toy import build_char_policy, times_zero_prompts
from training.models import Audit, JudgeScore, ModelVersion, TrainingRun
from training.services import audits
from training.services.audits import (
    LoggedRollout,
    audit_report,
    execute_audit,
    judge_human_agreement,
    pick_groups,
    start_audit,
)
from training.services.judging import judge_create
from training.services.lifecycle import RunRejected
from training.services.online_runs import start_online_run
from training.services.runs import execute_run

pytestmark = pytest.mark.django_db

RUN_CONFIG = {
    "max_steps": 3,
    "learning_rate": 5e-3,
    "per_device_batch_size": 16,
    "num_generations": 4,
    "max_completion_length": 2,
    "max_length": 32,
    "heldout_fraction": 0.25,
    "eval": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def char_policy(tmp_path_factory) -> Path:
    return build_char_policy(tmp_path_factory.mktemp("char-policy"))


@pytest.fixture(scope="module")
def mirrored_reward_models(char_policy, tmp_path_factory) -> tuple[Path, Path]:
    """A reward model on the toy's architecture (random head, fixed seed) and its mirror: the same, score negated."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(char_policy)
    config = AutoConfig.from_pretrained(char_policy, num_labels=1)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(config)
    paths = []
    for name, sign in (("reward", 1.0), ("mirror", -1.0)):
        with torch.no_grad():
            model.score.weight.mul_(sign)  # GPT-2's score head has no bias: negating the weight negates every score
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    # The quality gate stays on: two-character toy answers are "cut off", and the gate would drop every parent
    # sample, but an audit compares both policies unscreened.
    return settings.PREFLOOP_DATA_DIR


@pytest.fixture
def arithmetic_set():
    prompt_set = PromptSetFactory(name="times zero", rollouts_per_task=4, overlap=1)
    for text, answer in times_zero_prompts():
        PromptFactory(prompt_set=prompt_set, text=text, reference_answer=answer)
    return prompt_set


def _rank_all(prompt_set, order) -> int:
    """Annotators take every task of the set through the queue and rank it with `order(rollouts) -> tiers`."""
    annotator = AnnotatorFactory()
    ranked = 0
    while (assignment := next_task_for(annotator, prompt_set=prompt_set)) is not None:
        rollouts = list(Rollout.objects.filter(pk__in=assignment.display_order))
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=order(rollouts), time_spent_ms=4000)
        ranked += 1
    return ranked


def _tiers_by(key, rollouts) -> list[list[int]]:
    """Best first by key (higher is better); equal keys share a tier."""
    tiers: dict[float, list[int]] = {}
    for rollout in rollouts:
        tiers.setdefault(key(rollout), []).append(rollout.pk)
    return [sorted(tiers[value]) for value in sorted(tiers, reverse=True)]


@pytest.mark.slow
def test_an_audit_round_puts_rollouts_before_humans_and_reads_win_rate_and_judge_agreement(
    data_dir, arithmetic_set, char_policy, mirrored_reward_models, settings, client
):
    """GRPO run with audit_size → audit queued on success → the parent's rollouts sampled and every rollout scored →
    mixed tasks in the queue → annotators who prefer the new policy give it a win rate of 1; annotators who follow
    one reward model make it agree 1.0 (τ = 1) and its mirror 0.0 (τ = −1), and the run page warns about the mirror
    only."""
    settings.PREFLOOP_AUDIT_MIN_PAIRS = 10
    reward_path, mirror_path = mirrored_reward_models
    reward = ModelVersion.objects.create(name="toy rm", kind=ModelVersion.Kind.REWARD, path=str(reward_path))
    mirror = ModelVersion.objects.create(name="toy rm mirrored", kind=ModelVersion.Kind.REWARD, path=str(mirror_path))
    math = judge_create(name="math", kind="math")
    rm_judge = judge_create(name="rm", kind="reward_model", reward_model=reward)
    mirror_judge = judge_create(name="rm mirrored", kind="reward_model", reward_model=mirror)
    parent = ModelVersion.objects.create(name="toy policy", kind=ModelVersion.Kind.POLICY, path=str(char_policy))
    run = start_online_run(
        kind="grpo",
        prompt_set=arithmetic_set,
        judges=[(math, 1.0), (rm_judge, 0.0), (mirror_judge, 0.0)],
        parent_model=parent,
        config=RUN_CONFIG,
        dispatch=False,
        audit_size=8,
    )
    run = execute_run(run.pk)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error or run.log_tail
    policy = ModelVersion.objects.get(run=run)
    rows = [json.loads(line) for line in (Path(policy.path) / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and all(row["reward"] == row["scores"]["math"] for row in rows)  # monitors: never trained on

    # The success queued the audit (its worker message is sent on commit); the worker's part runs here.
    audit = Audit.objects.get(run=run)
    assert audit.status == Audit.Status.QUEUED and audit.policy == policy.name and audit.parent == parent
    assert len(audit.groups) == 8 and {g["pick"] for g in audit.groups} == {"best", "worst", "random"}
    assert "queued Audit" in run.log_tail
    audit = execute_audit(audit.pk)
    assert audit.status == Audit.Status.READY, audit.error
    assert audit.generation_run is not None and audit.generation_run.status == "succeeded"

    audit_rollouts = Rollout.objects.filter(prompt__prompt_set=audit.prompt_set)
    by_policy = {name: audit_rollouts.filter(policy=name).count() for name in (policy.name, parent.name)}
    assert by_policy[policy.name] == audit.rollouts_audited > 0 and by_policy[parent.name] > 0
    tasks = RankingTask.objects.filter(prompt_set=audit.prompt_set).prefetch_related("rollouts")
    assert tasks.exists()
    for task in tasks:  # never a task of one policy alone: each puts the new policy beside its parent
        assert {r.policy for r in task.rollouts.all()} == {policy.name, parent.name}
    for judge in (math, rm_judge, mirror_judge):  # every audited rollout, the new policy's and the parent's, scored
        assert JudgeScore.objects.filter(judge=judge, rollout__in=audit_rollouts).count() == audit_rollouts.count()

    # Audit 1: annotators prefer the new policy's answers to the parent's (and cannot tell a policy's own apart).
    assert _rank_all(audit.prompt_set, lambda rs: _tiers_by(lambda r: r.policy == policy.name, rs)) == tasks.count()
    report = audit_report(audit)
    assert report.tasks_ranked == report.tasks == tasks.count() and report.rankings == tasks.count()
    assert report.win_rate is not None and report.win_rate.rate == 1.0 and report.win_rate.losses == 0
    assert report.win_rate.low > 0.5  # several prompts, all won: the interval excludes a coin
    assert report.win_rate.clusters == len(audit.groups)

    # Audit 2 of the same run: annotators follow the reward model's scores.
    second = execute_audit(start_audit(run=run, size=8, seed=1, dispatch=False).pk)
    assert second.status == Audit.Status.READY, second.error
    rm_scores = dict(JudgeScore.objects.filter(judge=rm_judge).values_list("rollout_id", "score"))
    assert _rank_all(second.prompt_set, lambda rs: _tiers_by(lambda r: rm_scores[r.pk], rs)) > 0
    report = audit_report(second)
    rows_by_judge = {row.judge: row for row in report.judges}
    followed, mirrored = rows_by_judge["rm"], rows_by_judge["rm mirrored"]
    assert followed.pairs == mirrored.pairs >= settings.PREFLOOP_AUDIT_MIN_PAIRS
    assert followed.agreement.value == 1.0 and followed.kendall_tau.value == pytest.approx(1.0)
    assert mirrored.agreement.value == 0.0 and mirrored.kendall_tau.value == pytest.approx(-1.0)
    assert mirrored.warning and not followed.warning
    assert not rows_by_judge["math"].warning  # only reward-model judges are flagged
    assert [row.judge for row in report.warnings] == ["rm mirrored"]

    client.force_login(AdminFactory())
    page = client.get(f"/admin/training/trainingrun/{run.pk}/live/").content.decode()
    newest = page.split(f"Audit #{second.pk} ")[1].split(f"Audit #{audit.pk} ")[0]  # audits show newest first
    warnings = re.findall(r'<ul class="messagelist audit-warning">(.*?)</ul>', newest, re.S)
    assert len(warnings) == 1 and "may be gaming it" in warnings[0]
    assert "<strong>rm mirrored</strong>" in warnings[0] and "<strong>rm</strong>" not in warnings[0]
    assert "Human win rate" in page and "1.00" in page and f"Audit #{audit.pk}" in page
    assert "<script" not in warnings[0]

    client.force_login(ResearcherFactory())
    body = client.get(f"/api/runs/{run.pk}/audits/").json()
    assert [item["id"] for item in body] == [second.pk, audit.pk]
    assert body[1]["win_rate"]["rate"] == 1.0 and body[0]["judges"][2]["warning"] is True


def _write_log(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "rollouts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 9, "prom')


@pytest.fixture
def finished_run(tmp_path, arithmetic_set, char_policy):
    """A succeeded GRPO run whose registered model folder holds a hand-written rollout log (no training needed)."""
    math = judge_create(name="math", kind="math")
    parent = ModelVersion.objects.create(name="toy policy", kind=ModelVersion.Kind.POLICY, path=str(char_policy))
    run = start_online_run(
        kind="grpo",
        prompt_set=arithmetic_set,
        judges=[(math, 1.0)],
        parent_model=parent,
        config=RUN_CONFIG,
        dispatch=False,
    )
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    model_dir = tmp_path / "policy"
    ModelVersion.objects.create(name=f"policy-run{run.pk}", kind="policy", path=str(model_dir), parent=parent, run=run)
    prompts = list(arithmetic_set.prompts.order_by("pk"))
    rows = []
    for step in (1, 2):
        for prompt in prompts[:6]:
            for text in ("0", "7", "0\n", "1"):
                score = 1.0 if text.strip() == "0" else 0.0
                row = {"step": step, "prompt_id": prompt.pk, "completion": text, "reward": score}
                rows.append(row | {"scores": {"math": score}, "reasons": {"math": "checked"}})
    _write_log(model_dir, rows)
    run.refresh_from_db()
    return run


def test_the_api_starts_an_audit_reusing_the_parents_rollouts_from_the_runs_set(client, finished_run, arithmetic_set):
    """POST /api/runs/{id}/audit/: 201; the parent's rollouts already in the run's set are reused (no generation),
    so mixed tasks are in the queue at once; the logged judge scores are kept; the worker part then only scores."""
    for prompt in arithmetic_set.prompts.all():
        for text in ("5", "0"):
            Rollout.objects.create(prompt=prompt, policy="toy policy", text=text, content_hash=text + "h")
    client.force_login(ResearcherFactory())
    response = client.post(
        f"/api/runs/{finished_run.pk}/audit/",
        {"size": 4, "mix": {"best": 1, "worst": 1}},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    audit = Audit.objects.get(pk=body["id"])
    assert body["tasks"] > 0 and body["rankings"] == 0 and body["win_rate"] is None
    assert audit.generation_run is None and [g["pick"] for g in audit.groups] == ["best", "best", "worst", "worst"]
    for task in RankingTask.objects.filter(prompt_set=audit.prompt_set).prefetch_related("rollouts"):
        assert {r.policy for r in task.rollouts.all()} == {audit.policy, "toy policy"}
    kept = JudgeScore.objects.filter(rollout__prompt__prompt_set=audit.prompt_set, rollout__policy=audit.policy)
    assert kept.count() == audit.rollouts_audited and kept.first().details["source"] == "rollouts.jsonl"
    audit = execute_audit(audit.pk)
    assert audit.status == Audit.Status.READY and audit.generation_run is None
    parent_scores = JudgeScore.objects.filter(
        rollout__prompt__prompt_set=audit.prompt_set, rollout__policy="toy policy"
    )
    assert (
        parent_scores.count()
        == Rollout.objects.filter(prompt__prompt_set=audit.prompt_set, policy="toy policy").count()
    )

    bad = client.post(f"/api/runs/{finished_run.pk}/audit/", {"size": 0}, content_type="application/json")
    assert bad.status_code == 400 and "size" in bad.content.decode()
    bad = client.post(
        f"/api/runs/{finished_run.pk}/audit/", {"mix": {"best": 1, "bogus": 1}}, content_type="application/json"
    )
    assert bad.status_code == 400 and "bogus" in bad.content.decode()


def test_audits_are_refused_naming_why(finished_run, arithmetic_set, char_policy):
    """No registered parent, an offline run, a run with no log: RunRejected with the field, nothing written."""
    math = finished_run.judges.get()
    from_path = start_online_run(
        kind="grpo",
        prompt_set=arithmetic_set,
        judges=[(math, 1.0)],
        base_model=str(char_policy),
        config=RUN_CONFIG,
        dispatch=False,
    )
    TrainingRun.objects.filter(pk=from_path.pk).update(status=TrainingRun.Status.RUNNING)
    with pytest.raises(RunRejected) as caught:
        start_audit(run=from_path, dispatch=False)
    assert caught.value.field == "parent_model"
    with pytest.raises(RunRejected) as caught:  # the option on the run is refused up front for the same reason
        start_online_run(
            kind="grpo",
            prompt_set=arithmetic_set,
            judges=[(math, 1.0)],
            base_model=str(char_policy),
            config=RUN_CONFIG,
            dispatch=False,
            audit_size=4,
        )
    assert caught.value.field == "audit_size"
    Path(finished_run.model_version.path, "rollouts.jsonl").write_text("")
    with pytest.raises(RunRejected) as caught:
        start_audit(run=finished_run, dispatch=False)
    assert caught.value.field == "run"
    assert not Audit.objects.exists()


def _row(step: int, prompt: int, reward: float | None, text: str = "x") -> LoggedRollout:
    return LoggedRollout(step, prompt, text, reward, {}, {})


def test_groups_are_the_best_worst_and_random_by_mean_reward_one_per_prompt_and_seeded():
    """Groups are (step, prompt); best/worst by their mean reward; a prompt is audited once; unscored groups never."""
    rows = [_row(1, p, r) for p, r in ((1, 1.0), (1, 0.8), (2, 0.5), (3, 0.0), (4, 0.2), (5, 0.4), (6, None))]
    rows += [_row(2, 1, 0.95), _row(2, 2, 0.1)]  # prompt 1 again at step 2 (0.95 beats 0.9 at step 1)
    picked = pick_groups(rows, size=3, mix={"best": 1, "worst": 1, "random": 1}, seed=0)
    assert [(g.pick, g.prompt_id, g.step) for g in picked[:2]] == [("best", 1, 2), ("worst", 3, 1)]
    assert picked[0].reward == pytest.approx(0.95) and len({g.prompt_id for g in picked}) == 3
    assert picked[2].pick == "random" and picked[2].prompt_id not in (1, 3, 6)
    assert pick_groups(rows, size=3, seed=0) == pick_groups(rows, size=3, seed=0)
    assert len(pick_groups(rows, size=50, seed=0)) == 5  # six prompts, one never scored
    assert [g.step for g in pick_groups(rows, size=50, from_step=2)] == [2, 2]


def test_judge_human_agreement_is_worked_by_hand():
    """Human order a > b > c on one prompt: a judge scoring 3,2,1 agrees on 3/3 (τ 1); 1,2,3 on 0/3 (τ −1);
    2,2,1 ties one pair (½) and agrees on two: 2.5/3. Rollouts without a judge score are left out."""
    rankings = [(1, [[10], [11], [12]])]
    same = judge_human_agreement(rankings, {10: 3.0, 11: 2.0, 12: 1.0})
    assert (same.pairs, same.agreement.value, same.kendall_tau.value) == (3, 1.0, pytest.approx(1.0))
    reverse = judge_human_agreement(rankings, {10: 1.0, 11: 2.0, 12: 3.0})
    assert (reverse.agreement.value, reverse.kendall_tau.value) == (0.0, pytest.approx(-1.0))
    tied = judge_human_agreement(rankings, {10: 2.0, 11: 2.0, 12: 1.0})
    assert tied.agreement.value == pytest.approx(2.5 / 3)
    assert tied.kendall_tau.value == pytest.approx(2 / 6**0.5)  # τ-b: (2 − 0) / √(3 · (3 − 1 judge tie))
    partial = judge_human_agreement([*rankings, (2, [[20, 21], [22]])], {10: 3.0, 11: 2.0, 20: 1.0, 21: 0.0, 22: 5.0})
    assert partial.pairs == 1 + 2 and partial.agreement.value == pytest.approx(1 / 3)  # human tie 20~21 not counted
    assert partial.agreement.low is not None and partial.agreement.low <= 1 / 3 <= partial.agreement.high


def test_the_rollout_log_name_is_the_trainers():
    """The web process names the log without importing the trainer (which loads torch); the names must match."""
    from training.trainers.grpo import ROLLOUTS_FILE

    assert audits.ROLLOUTS_FILE == ROLLOUTS_FILE


def test_the_run_page_starts_an_audit_and_shows_why_one_is_refused(client, finished_run):
    """The run page's form (POST) starts an audit and the page lists it; a size that is not a number is refused with
    a message, never a 500; GET is not allowed."""
    client.force_login(AdminFactory())
    url = f"/admin/training/trainingrun/{finished_run.pk}/audit/"
    assert client.get(url).status_code == 405
    response = client.post(url, {"size": "3"}, follow=True)
    assert response.status_code == 200
    audit = Audit.objects.get()
    assert len(audit.groups) == 3 and f"Audit #{audit.pk}" in response.content.decode()
    response = client.post(url, {"size": "many"}, follow=True)
    assert response.status_code == 200 and "No audit started" in response.content.decode()
    assert Audit.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_an_audit_is_prepared_by_a_real_worker(settings, tmp_path, finished_run, arithmetic_set):
    """start_audit sends the audit by name on commit; a real Celery worker runs it to READY (parent rollouts reused,
    every rollout scored by the run's judge)."""
    from tests.training.worker import celery_worker, wait_for

    for prompt in arithmetic_set.prompts.all():
        Rollout.objects.create(prompt=prompt, policy="toy policy", text="5", content_hash="5h")
    with celery_worker(data_dir=tmp_path / "data"):
        audit = start_audit(run=finished_run, size=4)
        assert audit.celery_task_id
        wait_for(
            lambda: Audit.objects.get(pk=audit.pk).status not in (Audit.Status.QUEUED, Audit.Status.RUNNING),
            timeout=120,
            what="the audit to be prepared",
        )
    audit.refresh_from_db()
    assert audit.status == Audit.Status.READY, audit.error
    rollouts = Rollout.objects.filter(prompt__prompt_set=audit.prompt_set)
    assert JudgeScore.objects.filter(rollout__in=rollouts).count() == rollouts.count()


def test_the_online_run_form_takes_audit_size_and_refuses_it_without_a_registered_parent(
    client, arithmetic_set, char_policy
):
    """audit_size on the admin form: refused beside its input for a run from a bare path, kept on a queued run."""
    judge_create(name="math", kind="math")
    parent = ModelVersion.objects.create(name="toy policy", kind=ModelVersion.Kind.POLICY, path=str(char_policy))
    client.force_login(AdminFactory())
    form = {
        "kind": "grpo",
        "prompt_set": arithmetic_set.pk,
        "parent_model": "",
        "base_model": str(char_policy),
        "judges": "math = 1",
        "per_device_batch_size": "8",
        "num_generations": "4",
        "max_completion_length": "2",
        "audit_size": "6",
        "advanced_config": json.dumps({"device": "cpu"}),
    }
    url = "/admin/training/trainingrun/online/add/"
    response = client.post(url, form)
    assert response.status_code == 400 and "audit_size needs a starting policy" in response.content.decode()
    response = client.post(url, {**form, "base_model": "", "parent_model": parent.pk})
    errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>.*?</ul>', response.content.decode(), re.S)
    assert response.status_code == 302, errors
    assert TrainingRun.objects.get().audit_size == 6


def test_a_running_run_is_audited_on_its_log_so_far(data_dir, arithmetic_set, char_policy):
    """During a run the log is in its staging folder (a half-written last line is skipped); the audited rollouts
    carry the name the policy will be registered under."""
    from training.services.registry import staging_dir_for

    math = judge_create(name="math", kind="math")
    parent = ModelVersion.objects.create(name="toy policy", kind=ModelVersion.Kind.POLICY, path=str(char_policy))
    run = start_online_run(
        kind="grpo",
        prompt_set=arithmetic_set,
        judges=[(math, 1.0)],
        parent_model=parent,
        config=RUN_CONFIG,
        dispatch=False,
    )
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.RUNNING)
    prompt = arithmetic_set.prompts.first()
    rows = [{"step": 1, "prompt_id": prompt.pk, "completion": t, "reward": 0.0, "scores": {"math": 0.0}} for t in "12"]
    _write_log(staging_dir_for(run), rows)
    audit = start_audit(run=run, size=5, dispatch=False)
    assert audit.policy == f"policy-run{run.pk}" and audit.options["run_status"] == "running"
    assert audit.rollouts_audited == 2 and len(audit.groups) == 1
