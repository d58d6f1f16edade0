"""Known answers on import: a line's `gold` (by response index) marks its prompt's one task gold, or the file is
refused with the line and the reason, nothing written."""

from __future__ import annotations

import pytest

from labeling.models import RankingTask, Rollout
from labeling.services.errors import ImportRejected
from labeling.services.gold import GOLD_OVERLAP
from labeling.services.importing import import_file
from tests.factories import PromptSetFactory
from tests.labeling.helpers import jsonl, nothing_written

pytestmark = pytest.mark.django_db


def rollout_id(text: str) -> int:
    return Rollout.objects.get(text=text).pk


def test_a_best_answer_marks_the_prompts_task_gold_by_rollout_id():
    """{"best": 1} names the line's second response; only that prompt's task becomes gold, open to everyone."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    report = import_file(
        prompt_set=prompt_set,
        data=jsonl(
            {"prompt": "2+2?", "responses": ["5", "4", "22"], "gold": {"best": 1}},
            {"prompt": "Hi", "responses": ["Hello", "Go away"]},
        ),
    )
    assert (report.tasks_created, report.gold_tasks) == (2, 1)
    assert "1 marked gold" in str(report)
    gold_task = RankingTask.objects.get(prompt__text="2+2?")
    assert gold_task.gold == {"best": rollout_id("4")} and gold_task.overlap == GOLD_OVERLAP
    assert RankingTask.objects.get(prompt__text="Hi").gold is None


def test_a_full_order_with_ties_is_stored_by_rollout_id():
    """{"order": [[2], [0, 3], [1]]}: indices become the rollouts' ids, tiers kept."""
    prompt_set = PromptSetFactory(rollouts_per_task=4)
    import_file(
        prompt_set=prompt_set,
        data=jsonl({"prompt": "Q", "responses": ["a", "b", "c", "d"], "gold": {"order": [[2], [0, 3], [1]]}}),
    )
    a, b, c, d = (rollout_id(text) for text in "abcd")
    assert RankingTask.objects.get().gold == {"order": [[c], [a, d], [b]]}


def test_csv_takes_gold_as_json_counting_response_columns():
    """A `gold` cell holds the JSONL field's JSON; 0 is response_1."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    csv_text = 'prompt,response_1,response_2,response_3,gold\nQ1,a,b,c,"{""best"": 2}"\nQ2,d,e,,\n'
    report = import_file(prompt_set=prompt_set, data=csv_text, fmt="csv")
    assert report.gold_tasks == 1
    assert RankingTask.objects.get(prompt__text="Q1").gold == {"best": rollout_id("c")}
    assert RankingTask.objects.get(prompt__text="Q2").gold is None


BAD_GOLD = {
    "index out of range": ({"best": 3}, "'gold' best 3 is not a response index (this line's are 0–2)"),
    "negative index": ({"best": -1}, "'gold' best -1 is not a response index"),
    "a bool is not an index": ({"best": True}, "'gold' best True is not a response index"),
    "not a permutation": (
        {"order": [[0], [0, 1]]},
        "'gold' order must hold each response index 0–2 once (missing 2; repeated 0)",
    ),
    "unknown index in order": ({"order": [[0], [1], [2, 5]]}, "(not an index 5)"),
    "one tier": ({"order": [[0, 1, 2]]}, "'gold' order ties every response"),
    "empty tier": ({"order": [[0], [], [1, 2]]}, "must be a list of non-empty lists"),
    "strings in order": ({"order": [["0"], [1], [2]]}, "response indices (integers) only"),
    "two keys": ({"best": 0, "order": [[0], [1], [2]]}, "'gold' must be {\"best\": <response index>}"),
    "unknown key": ({"worst": 0}, "'gold' must be"),
    "not an object": ([0, 1], "'gold' must be"),
}


@pytest.mark.parametrize(("gold", "reason"), BAD_GOLD.values(), ids=BAD_GOLD.keys())
def test_bad_gold_rejects_the_file_with_the_line_and_reason(gold, reason):
    """Like every other bad field: the line, why, and nothing written."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    data = jsonl({"prompt": "ok", "responses": ["x", "y"]}, {"prompt": "Q", "responses": ["a", "b", "c"], "gold": gold})
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert [line for line, _ in rejected.value.errors] == [2]
    assert reason in rejected.value.errors[0][1]
    assert nothing_written()


def test_gold_over_duplicate_responses_is_refused():
    """Two equal responses are one rollout: a known answer by index would be ambiguous."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    with pytest.raises(ImportRejected) as rejected:
        import_file(
            prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "b", "a"], "gold": {"best": 1}})
        )
    assert rejected.value.errors[0] == (
        1,
        "'gold' counts responses by index, but responses 0 and 2 are the same: remove the duplicate",
    )
    assert nothing_written()


def test_gold_needs_the_grouped_shape():
    """A one-rollout-per-line record has no response list for indices to count."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl({"prompt": "Q", "response": "a", "gold": {"best": 0}}, {"prompt": "Q", "response": "b"})
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert rejected.value.errors[0][0] == 1 and "needs the grouped shape" in rejected.value.errors[0][1]
    assert nothing_written()


def test_gold_for_a_prompt_whose_responses_are_split_over_lines_is_refused():
    """The same prompt on two lines merges their responses: gold counted one line's, so both lines are named."""
    prompt_set = PromptSetFactory(rollouts_per_task=4)
    data = jsonl(
        {"prompt": "Q", "responses": ["a", "b"], "gold": {"best": 0}},
        {"prompt": "other", "responses": ["x", "y"]},
        {"prompt": "Q", "responses": ["c", "d"]},
    )
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert [line for line, _ in rejected.value.errors] == [1, 3]
    assert (
        "needs all of its prompt's responses on one line; this prompt is on lines 1, 3" in rejected.value.errors[0][1]
    )
    assert nothing_written()


def test_gold_on_a_prompt_that_makes_several_tasks_is_refused():
    """Five responses with rollouts_per_task=3 are split into two tasks: no one task the answer is exactly for."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    data = jsonl({"prompt": "Q", "responses": ["a", "b", "c", "d", "e"], "gold": {"best": 0}})
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert rejected.value.errors == [
        (
            1,
            "'gold' needs the prompt's responses to form one task, but its 5 responses are split into several "
            "(this set ranks 3 at a time)",
        )
    ]
    assert nothing_written()


def test_gold_on_a_prompt_already_holding_other_responses_is_refused():
    """New responses for a stored prompt are grouped with its old ones: the line's answer would not cover the task."""
    prompt_set = PromptSetFactory(rollouts_per_task=4)
    import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "b"]}))
    with pytest.raises(ImportRejected) as rejected:
        import_file(
            prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["c", "d", "e"], "gold": {"best": 0}})
        )
    assert "already in the set with 2 response(s), not these 3" in rejected.value.errors[0][1]
    assert Rollout.objects.count() == 2 and not RankingTask.objects.filter(gold__isnull=False).exists()


def test_reimporting_a_gold_file_changes_nothing_and_keeps_the_task_gold():
    """Idempotent: the same task, still gold with the same answer."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl({"prompt": "Q", "responses": ["a", "b"], "gold": {"order": [[1], [0]]}})
    import_file(prompt_set=prompt_set, data=data)
    again = import_file(prompt_set=prompt_set, data=data)
    assert (again.prompts_created, again.rollouts_created, again.tasks_created, again.gold_tasks) == (0, 0, 0, 1)
    assert RankingTask.objects.get().gold == {"order": [[rollout_id("b")], [rollout_id("a")]]}


def test_skip_invalid_leaves_out_a_bad_gold_line_and_imports_the_rest():
    """The opt-in for messy files applies to gold too: the line is listed with its reason."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl(
        {"prompt": "good", "responses": ["a", "b"], "gold": {"best": 0}},
        {"prompt": "bad", "responses": ["c", "d"], "gold": {"best": 2}},
    )
    report = import_file(prompt_set=prompt_set, data=data, skip_invalid=True)
    assert report.gold_tasks == 1 and [line for line, _ in report.skipped] == [2]
    assert list(RankingTask.objects.values_list("prompt__text", flat=True)) == ["good"]


@pytest.mark.parametrize(
    ("csv_text", "reason"),
    [
        ('prompt,response_1,response_2,gold\nQ,a,b,"{""best"": "\n', "'gold' is not JSON: bad JSON"),
        (
            "prompt,response_1,response_2,response_3,gold\nQ,a,,c,{}\n",
            "leave no response cell empty before a filled one",
        ),
        ('prompt,response,gold\nQ,a,"{""best"": 0}"\nQ,b,\n', "needs the grouped shape"),
    ],
    ids=["bad json", "gap in the response columns", "one response per row"],
)
def test_bad_csv_gold_rejects_the_file_with_the_line(csv_text, reason):
    """CSV gold is checked as JSONL's, plus what only CSV can get wrong."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=csv_text, fmt="csv")
    assert rejected.value.errors[0][0] == 2 and reason in rejected.value.errors[0][1]
    assert nothing_written()


def test_the_import_api_reports_gold_tasks_and_bad_gold_as_a_400(admin_api):
    """`gold_tasks` counts the tasks marked; a bad answer is a 400 naming the line, not a 500."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    url = f"/api/prompt-sets/{prompt_set.pk}/import/"
    good = jsonl({"prompt": "Q", "responses": ["a", "b"], "gold": {"best": 1}})
    response = admin_api.post(url, {"content": good}, format="json")
    assert response.status_code == 201 and response.json()["gold_tasks"] == 1
    bad = jsonl({"prompt": "R", "responses": ["a", "b"], "gold": {"best": "b"}})
    response = admin_api.post(url, {"content": bad}, format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["line"] == 1 and "'gold' best 'b' is not a response index" in error["detail"]
