"""Auto-rank: judges rank a prompt set's tasks as tool feedback, outside the queue and the human statistics; prompt
references come in on import; judge-human agreement; the API, the admin action and the command."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from labeling.models import Prompt, PromptSet, Ranking, RankingTask
from labeling.selectors import progress_of, rankings_by_round
from labeling.services.importing import import_file
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.conftest import token_client
from tests.factories import AnnotatorFactory, ResearcherFactory
from training.models import AutoRankJob, Judge, JudgeScore
from training.services.judging import (
    auto_rank,
    execute_auto_rank,
    judge_agreement,
    judge_create,
    pairwise_agreement,
    tiers_from_scores,
)

pytestmark = pytest.mark.django_db

# Two arithmetic prompts with answers; each has a right and two wrong responses. A third prompt has no answer.
ROWS = [
    {"prompt": "What is 2+2?", "answer": "4", "responses": ["It is 4", "It is 5", "It is 22"]},
    {"prompt": "What is 3*3?", "answer": 9, "responses": ["It is 6", "It is 9", "It is 33"]},
    {"prompt": "Say hi.", "responses": ["hi", "hello", "hey"]},
]


def _jsonl(rows) -> str:
    return "\n".join(json.dumps(row) for row in rows) + "\n"


@pytest.fixture
def arithmetic_set() -> PromptSet:
    prompt_set = PromptSet.objects.create(name="arithmetic", rollouts_per_task=3, overlap=2)
    import_file(prompt_set=prompt_set, data=_jsonl(ROWS))
    return prompt_set


@pytest.fixture
def last_line_judge() -> Judge:
    return judge_create(name="final answer", kind="regex", config={"pattern": r"\b{answer}$"})


def test_import_stores_answer_and_tests_and_leaves_prompts_without_them_empty():
    prompt_set = PromptSet.objects.create(name="refs", rollouts_per_task=2)
    rows = [
        {"prompt": "Add.", "answer": 0.5, "tests": "assert True\n", "responses": ["a", "b"]},
        {"prompt": "Plain.", "responses": ["a", "b"]},
    ]
    import_file(prompt_set=prompt_set, data=_jsonl(rows))
    refs = dict(Prompt.objects.values_list("text", "reference_answer"))
    assert refs == {"Add.": "0.5", "Plain.": ""}
    assert Prompt.objects.get(text="Add.").reference_tests == "assert True\n"


def test_csv_imports_answer_and_tests_columns():
    prompt_set = PromptSet.objects.create(name="csv refs", rollouts_per_task=2)
    csv = "prompt,response_1,response_2,answer,tests\nWhat is 1+1?,2,3,2,assert 1\n"
    import_file(prompt_set=prompt_set, data=csv, filename="x.csv")
    prompt = Prompt.objects.get()
    assert (prompt.reference_answer, prompt.reference_tests) == ("2", "assert 1")


def test_a_bad_reference_is_refused_with_its_line():
    from labeling.services.errors import ImportRejected

    prompt_set = PromptSet.objects.create(name="bad refs", rollouts_per_task=2)
    with pytest.raises(ImportRejected) as refused:
        import_file(prompt_set=prompt_set, data=_jsonl([{"prompt": "p", "tests": ["x"], "responses": ["a", "b"]}]))
    assert "'tests' must be a string" in str(refused.value.errors[0].reason)


def test_references_are_not_in_the_annotators_task(arithmetic_set):
    """The annotator API shows the prompt's text and messages only (the set does not show references)."""
    client = token_client(AnnotatorFactory())
    body = client.post("/api/tasks/next/", {"prompt_set": arithmetic_set.pk}, format="json").json()
    assert "4" not in json.dumps(body["prompt"]) and "answer" not in json.dumps(body)


def test_tiers_from_scores_ties_equal_scores_and_refuses_missing_ones():
    assert tiers_from_scores({7: 0.0, 3: 1.0, 5: 0.0}) == [[3], [5, 7]]
    assert tiers_from_scores({7: 0.0, 3: None}) is None


def test_auto_rank_writes_judge_rankings_outside_the_queue(arithmetic_set, last_line_judge):
    """Judge rankings take no overlap slot, no lease, and are not counted as the annotators' progress."""
    summary = auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    assert (summary.rollouts_scored, summary.tasks_ranked, summary.tasks_skipped) == (9, 2, 1)
    rankings = Ranking.objects.filter(source=Ranking.Source.JUDGE)
    assert rankings.count() == 2 and not rankings.filter(assignment__isnull=False).exists()
    assert set(rankings.values_list("annotator_id", flat=True)) == {last_line_judge.user_id}
    # The right answer first, the two wrong ones tied.
    task = RankingTask.objects.get(prompt__text="What is 2+2?")
    by_text = dict(task.rollouts.values_list("text", "id"))
    assert rankings.get(task=task).tiers == [[by_text["It is 4"]], sorted([by_text["It is 5"], by_text["It is 22"]])]
    # The queue is untouched: every task still has both of its overlap slots for annotators.
    assert set(RankingTask.objects.values_list("active_count", "completed_count", "status")) == {(0, 0, "open")}
    first, second = AnnotatorFactory(), AnnotatorFactory()
    for annotator in (first, second):
        leased = []
        while (assignment := next_task_for(annotator, prompt_set=arithmetic_set)) is not None:
            leased.append(assignment.task_id)
            submit_ranking(
                annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order]
            )
        assert len(leased) == 3
    assert progress_of(arithmetic_set).rankings == 6  # human rankings only, not the judge's 2
    assert len(list(rankings_by_round(prompt_set_ids=[arithmetic_set.pk]))) == 6  # human win rates read humans only


def test_the_judges_user_cannot_log_in(last_line_judge):
    user = last_line_judge.user
    assert not user.is_active and not user.has_usable_password()
    assert not Client().login(username=user.username, password="")


def test_auto_rank_twice_changes_nothing(arithmetic_set, last_line_judge):
    auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    before = list(Ranking.objects.order_by("id").values_list("id", "tiers"))
    again = auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    assert again.rollouts_scored == 0 and again.tasks_ranked == 2
    assert list(Ranking.objects.order_by("id").values_list("id", "tiers")) == before
    assert JudgeScore.objects.count() == 9


def test_scores_are_stored_per_rollout_with_reasons(arithmetic_set, last_line_judge):
    auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    reasons = dict(JudgeScore.objects.filter(judge=last_line_judge).values_list("rollout__text", "details__reason"))
    assert reasons["It is 4"] == "match" and reasons["It is 22"] == "no_match"
    assert reasons["hi"] == "no_reference_answer"
    assert JudgeScore.objects.get(rollout__text="hi").score is None


def test_pairwise_agreement_by_hand():
    """Human: 1 > 2 > 3 (three ordered pairs). Judge: 1 > {2, 3}: (1,2) agree, (1,3) agree, (2,3) judge tie.
    A second judge 3 > 2 > 1 disagrees on all three."""
    assert pairwise_agreement([[1], [2, 3]], [[1], [2], [3]]) == (2, 0, 1)
    assert pairwise_agreement([[3], [2], [1]], [[1], [2], [3]]) == (0, 3, 0)
    assert pairwise_agreement([[1], [2], [3]], [[1, 2], [3]]) == (2, 0, 0)  # the human's tie is left out


def test_agreement_with_humans_on_the_same_tasks(arithmetic_set, last_line_judge):
    """A human who puts the right answer first agrees with the judge on 2 pairs per task and meets its tie once:
    (2 + ½) / 3 per task. A human ranking the reverse way agrees on none of them: ½ / 3."""
    auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    scores = dict(JudgeScore.objects.filter(judge=last_line_judge).values_list("rollout_id", "score"))
    right_first, wrong_first = AnnotatorFactory(), AnnotatorFactory()
    for annotator, best_first in ((right_first, True), (wrong_first, False)):
        while (assignment := next_task_for(annotator, prompt_set=arithmetic_set)) is not None:
            order = sorted(assignment.display_order, key=lambda r: (-(scores[r] or 0), r), reverse=not best_first)
            submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in order])
    result = judge_agreement(judge=last_line_judge, prompt_set_ids=[arithmetic_set.pk])
    assert (result.tasks, result.pairs) == (2, 12)
    assert (result.agree, result.disagree, result.judge_ties) == (4, 4, 4)
    assert result.rate == pytest.approx((4 + 0.5 * 4) / 12)


def test_unit_test_judge_auto_ranks_passing_code_first():
    prompt_set = PromptSet.objects.create(name="code", rollouts_per_task=2)
    tests = "from solution import square\nassert square(3) == 9\n"
    rows = [
        {
            "prompt": "Write square(x).",
            "tests": tests,
            "responses": [
                "```python\ndef square(x):\n    return x + x\n```",
                "```python\ndef square(x):\n    return x * x\n```",
            ],
        }
    ]
    import_file(prompt_set=prompt_set, data=_jsonl(rows))
    judge = judge_create(name="tests pass", kind="unit_tests", config={"wall_seconds": 5})
    assert auto_rank(judge=judge, prompt_set=prompt_set).tasks_ranked == 1
    best = Ranking.objects.get(source=Ranking.Source.JUDGE).tiers[0][0]
    assert "x * x" in RankingTask.objects.get().rollouts.get(pk=best).text


def test_a_failing_job_is_recorded_as_failed_with_its_reason(arithmetic_set, last_line_judge):
    job = AutoRankJob.objects.create(judge=last_line_judge, prompt_set=arithmetic_set)
    Judge.objects.filter(pk=last_line_judge.pk).update(config={"pattern": "(unclosed"})  # broken behind our back
    job = execute_auto_rank(job.pk)
    assert job.status == AutoRankJob.Status.FAILED and "pattern" in job.error
    assert execute_auto_rank(job.pk).status == AutoRankJob.Status.FAILED  # not run twice


def test_api_creates_judges_and_refuses_bad_configs_naming_the_key():
    client = token_client(ResearcherFactory())
    created = client.post("/api/judges/", {"name": "m", "kind": "math", "config": {}}, format="json")
    assert created.status_code == 201 and created.json()["kind"] == "math"
    bad = client.post("/api/judges/", {"name": "r", "kind": "regex", "config": {"pattren": "x"}}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_config" and bad.json()["field"] == "pattren"
    no_model = client.post("/api/judges/", {"name": "rm", "kind": "reward_model"}, format="json")
    assert no_model.status_code == 400 and no_model.json()["field"] == "reward_model"
    assert client.post("/api/judges/", {"name": "m", "kind": "math"}, format="json").json()["field"] == "name"


def test_api_queues_auto_rank_and_refuses_unknown_sets_and_annotators(arithmetic_set, last_line_judge):
    client = token_client(ResearcherFactory())
    url = f"/api/judges/{last_line_judge.pk}/auto-rank/"
    assert client.post(url, {"prompt_set": 10**9}, format="json").status_code == 400
    assert (
        token_client(AnnotatorFactory()).post(url, {"prompt_set": arithmetic_set.pk}, format="json").status_code == 403
    )
    queued = client.post(url, {"prompt_set": arithmetic_set.pk}, format="json")
    assert queued.status_code == 202 and queued["Location"] == f"/api/auto-rank-jobs/{queued.json()['id']}/"
    job = execute_auto_rank(queued.json()["id"])  # what the worker does with the message
    assert job.status == AutoRankJob.Status.SUCCEEDED and job.tasks_ranked == 2
    assert client.get(queued["Location"]).json()["status"] == "succeeded"
    agreement = client.get(f"/api/judges/{last_line_judge.pk}/agreement/?prompt_set={arithmetic_set.pk}").json()
    assert agreement == {"tasks": 0, "pairs": 0, "agree": 0, "disagree": 0, "judge_ties": 0, "rate": None}
    assert client.get(f"/api/judges/{last_line_judge.pk}/agreement/?prompt_set=x").status_code == 400


def test_admin_action_queues_a_job_per_judge(arithmetic_set, last_line_judge, admin_user):
    client = Client()
    client.force_login(admin_user)
    changelist = "/admin/training/judge/"
    picked = {"action": "auto_rank_action", "_selected_action": [last_line_judge.pk]}
    page = client.post(changelist, picked)
    assert page.status_code == 200 and b"Auto-rank" in page.content
    done = client.post(changelist, {**picked, "apply": "1", "prompt_set": arithmetic_set.pk})
    assert done.status_code == 302
    assert AutoRankJob.objects.filter(judge=last_line_judge, prompt_set=arithmetic_set).count() == 1
    execute_auto_rank(AutoRankJob.objects.get().pk)
    change = client.get(f"/admin/training/judge/{last_line_judge.pk}/change/").content.decode()
    assert "Agreement with humans" in change and "tasks ranked by both" in change and "arithmetic" in change


def test_admin_add_form_names_the_bad_config_key(admin_user):
    client = Client()
    client.force_login(admin_user)
    form = {"name": "len", "kind": "length", "config": json.dumps({"maxx": 3}), "reward_model": ""}
    refused = client.post("/admin/training/judge/add/", form)
    assert refused.status_code == 200 and "did you mean" in refused.content.decode()
    form["config"] = json.dumps({"max": 3})
    assert client.post("/admin/training/judge/add/", form).status_code == 302
    assert Judge.objects.get(name="len").user is not None


def test_management_command_creates_the_judge_and_ranks(arithmetic_set):
    out = StringIO()
    call_command(
        "auto_rank", "exact answer", "arithmetic", "--kind", "regex", "--config", '{"pattern": "{answer}$"}', stdout=out
    )
    assert "9 rollouts scored, 2 tasks ranked, 1 left unranked" in out.getvalue()
    assert Ranking.objects.filter(source=Ranking.Source.JUDGE, annotator__judge__name="exact answer").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_auto_rank_requested_through_the_api_runs_on_a_real_worker(tmp_path, settings):
    """Redis broker, a real `celery worker` process, Postgres: the queued job is picked up and finishes."""
    from tests.training.worker import celery_worker, wait_for

    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    prompt_set = PromptSet.objects.create(name="arithmetic on a worker", rollouts_per_task=3, overlap=2)
    import_file(prompt_set=prompt_set, data=_jsonl(ROWS))
    judge = judge_create(name="math on a worker", kind="math", config={})
    client = token_client(ResearcherFactory())
    with celery_worker(data_dir=tmp_path / "data"):
        queued = client.post(f"/api/judges/{judge.pk}/auto-rank/", {"prompt_set": prompt_set.pk}, format="json")
        assert queued.status_code == 202
        job = wait_for(
            lambda: AutoRankJob.objects.filter(pk=queued.json()["id"], status__in=["succeeded", "failed"]).first(),
            timeout=180,
            what="the auto-rank job to finish",
        )
    assert job.status == AutoRankJob.Status.SUCCEEDED, job.error
    assert (job.rollouts_scored, job.tasks_ranked, job.tasks_skipped) == (9, 2, 1)
    assert job.celery_task_id


def test_admin_add_form_refuses_a_policy_as_a_reward_model(admin_user):
    from training.models import ModelVersion

    policy = ModelVersion.objects.create(name="a policy", kind=ModelVersion.Kind.POLICY, path="/models/policy")
    client = Client()
    client.force_login(admin_user)
    form = {"name": "rm", "kind": "reward_model", "config": "{}", "reward_model": policy.pk}
    refused = client.post("/admin/training/judge/add/", form)
    assert refused.status_code == 200 and "not a reward model" in refused.content.decode()
    assert not Judge.objects.exists()


def test_a_job_left_running_by_a_dead_worker_is_finished_when_its_message_comes_back(arithmetic_set, last_line_judge):
    job = AutoRankJob.objects.create(
        judge=last_line_judge, prompt_set=arithmetic_set, status=AutoRankJob.Status.RUNNING
    )
    assert execute_auto_rank(job.pk).status == AutoRankJob.Status.SUCCEEDED


def test_judge_rankings_are_not_annotator_work_in_agreement_or_timings(arithmetic_set, last_line_judge):
    from labeling.selectors import ranking_timings, rankings_for_agreement

    auto_rank(judge=last_line_judge, prompt_set=arithmetic_set)
    annotator = AnnotatorFactory()
    assignment = next_task_for(annotator, prompt_set=arithmetic_set)
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])
    assert Ranking.objects.filter(task__prompt_set=arithmetic_set).count() == 3  # 2 judge + 1 human
    assert {row[2] for row in rankings_for_agreement(prompt_set_id=arithmetic_set.pk)} == {annotator.pk}
    assert {row[0] for row in ranking_timings(prompt_set_id=arithmetic_set.pk)} == {annotator.pk}
