"""Importing prompts with rollouts: every shape accepted, a bad file rejected whole, re-imports add nothing."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import override_settings

from labeling.models import Prompt, RankingTask, Rollout
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file
from tests.factories import PromptSetFactory
from tests.labeling.helpers import jsonl, nothing_written

pytestmark = pytest.mark.django_db


def test_grouped_jsonl_creates_prompts_rollouts_and_tasks():
    """One prompt per line with its responses becomes one task of k rollouts."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    report = import_file(
        prompt_set=prompt_set,
        data=jsonl(
            {"prompt": "2+2?", "responses": ["4", "5"], "policy": "v1"},
            {"prompt": "Hi", "responses": ["Hello", {"text": "Yo", "policy": "v2"}]},
        ),
    )
    assert (report.prompts_created, report.rollouts_created, report.tasks_created) == (2, 4, 2)
    assert sorted(Rollout.objects.values_list("policy", flat=True)) == ["", "v1", "v1", "v2"]


def test_one_rollout_per_line_is_grouped_by_prompt():
    """Lines sharing a prompt fold into one prompt."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    import_file(
        prompt_set=prompt_set,
        data=jsonl(*({"prompt": "Same?", "response": f"answer {i}", "policy": f"p{i % 2}"} for i in range(3))),
    )
    assert Prompt.objects.count() == 1
    assert Rollout.objects.count() == 3
    assert RankingTask.objects.get().task_rollouts.count() == 3


def test_chat_prompts_are_stored_as_messages():
    """A prompt may be a list of chat messages."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    import_file(prompt_set=prompt_set, data=jsonl({"prompt": messages, "responses": ["Paris.", "Lyon."]}))
    prompt = Prompt.objects.get()
    assert prompt.messages == messages
    assert prompt.is_chat


def test_csv_with_one_rollout_per_row():
    """CSV uploads use prompt,response[,policy] columns."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = 'prompt,response,policy\n"Why, though?",Because.,v1\n"Why, though?","Because, that\'s why.",v2\n'
    report = import_file(prompt_set=prompt_set, data=data, filename="batch.csv")
    assert (report.prompts_created, report.rollouts_created) == (1, 2)
    assert Prompt.objects.get().text == "Why, though?"


def test_csv_with_numbered_response_columns():
    """CSV may also carry response_1..response_n on one row."""
    prompt_set = PromptSetFactory(rollouts_per_task=3)
    report = import_file(prompt_set=prompt_set, data="prompt,response_1,response_2,response_3\nQ,a,b,c\n", fmt="csv")
    assert report.rollouts_created == 3


def test_reimporting_the_same_file_duplicates_nothing():
    """Prompts, rollouts and tasks are keyed by content, so a second import is a no-op."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl({"prompt": "Q1", "responses": ["a", "b"]}, {"prompt": "Q2", "responses": ["c", "d"]})
    import_file(prompt_set=prompt_set, data=data)
    again = import_file(prompt_set=prompt_set, data=data)
    assert (again.prompts_created, again.rollouts_created, again.tasks_created) == (0, 0, 0)
    assert (again.prompts_existing, again.rollouts_existing) == (2, 4)
    assert (Prompt.objects.count(), Rollout.objects.count(), RankingTask.objects.count()) == (2, 4, 2)


def test_new_rollouts_for_a_known_prompt_form_new_tasks():
    """A later import adding responses to a known prompt builds a task for the new ones only."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "b"]}))
    report = import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "c", "d"]}))
    assert (report.prompts_created, report.rollouts_created, report.tasks_created) == (0, 2, 1)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("{not json", "bad JSON"),
        ('["a", "list"]', "expected a JSON object"),
        ('{"responses": ["a", "b"]}', "missing field 'prompt'"),
        ('{"prompt": 42, "responses": ["a", "b"]}', "'prompt' must be a string"),
        ('{"prompt": "Q", "responses": "ab"}', "'responses' must be a list"),
        ('{"prompt": "Q", "responses": ["only one"]}', "too few responses"),
        ('{"prompt": "Q", "responses": ["a", 7]}', "response 1 must be a string"),
        ('{"prompt": "Q"}', "missing field 'responses'"),
        ('{"prompt": "", "responses": ["a", "b"]}', "'prompt' is empty"),
        ('{"prompt": [{"role": "robot", "content": "x"}], "responses": ["a", "b"]}', "unknown role"),
    ],
    ids=[
        "json",
        "not-object",
        "no-prompt",
        "prompt-type",
        "responses-type",
        "too-few",
        "response-type",
        "no-responses",
        "empty",
        "role",
    ],
)
def test_a_file_with_one_bad_line_is_rejected_whole_naming_the_line(bad_line, reason):
    """Good lines around a bad one are not imported; the error gives the line number and the reason."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl(
        {"prompt": "fine", "responses": ["a", "b"]}, bad_line, {"prompt": "also fine", "responses": ["c", "d"]}
    )
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert rejected.value.errors[0][0] == 2
    assert reason in rejected.value.errors[0][1]
    assert "line 2" in rejected.value.message
    assert nothing_written()


def test_oversize_text_is_rejected_with_its_size():
    """Texts over the configured limit are refused, with the limit in the message."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    limit = settings.PREFLOOP_MAX_TEXT_CHARS
    with (
        override_settings(PREFLOOP_MAX_TEXT_CHARS=10),
        pytest.raises(ImportRejected) as rejected,
    ):
        import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["short", "x" * 11]}))
    assert "over the limit of 10" in rejected.value.errors[0][1]
    assert limit > 10 and nothing_written()


def test_every_bad_line_is_reported():
    """All bad lines are listed, not just the first."""
    prompt_set = PromptSetFactory()
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data="{bad\n{}\n" + jsonl({"prompt": "Q", "responses": ["a", "b"]}) + "[]\n")
    assert [line for line, _ in rejected.value.errors] == [1, 2, 4]


def test_a_one_rollout_per_line_prompt_with_a_single_response_is_rejected():
    """Grouped by prompt, a prompt with one response cannot be ranked."""
    prompt_set = PromptSetFactory()
    with pytest.raises(ImportRejected) as rejected:
        import_file(
            prompt_set=prompt_set,
            data=jsonl(
                {"prompt": "A", "response": "x"}, {"prompt": "B", "response": "y"}, {"prompt": "B", "response": "z"}
            ),
        )
    assert rejected.value.errors == [(1, "too few responses for this prompt: 1 distinct (need at least 2 to rank)")]
    assert nothing_written()


def test_non_utf8_bytes_are_rejected_with_the_line():
    """Encoding errors point at their line."""
    prompt_set = PromptSetFactory()
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=b'{"prompt": "ok", "responses": ["a", "b"]}\n{"prompt": "\xff"}\n')
    assert rejected.value.errors == [(2, "not valid UTF-8 text")]


def test_the_management_command_imports_and_reports(tmp_path):
    """`manage.py import_prompts` creates the set on request and prints the counts."""
    path = tmp_path / "batch.jsonl"
    path.write_text(jsonl({"prompt": "Q", "responses": ["a", "b", "c"]}))
    out = StringIO()
    call_command("import_prompts", "cli set", str(path), "--create", "--rollouts-per-task", "3", stdout=out)
    assert "1 prompts created" in out.getvalue()
    assert RankingTask.objects.get().prompt_set.name == "cli set"


def test_the_management_command_fails_loudly_on_a_bad_file(tmp_path):
    """A bad file is a CommandError carrying the line numbers."""
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n")
    with pytest.raises(CommandError, match="line 1: bad JSON"):
        call_command("import_prompts", "cli set", str(path), "--create")
    assert nothing_written()


# --- skip_invalid: import the good lines, list every bad one ---------------------------------------------------------


def test_skip_invalid_imports_the_good_lines_and_lists_every_skipped_line():
    """Opting in keeps the good rows of a dataset with a few unusable ones, and says which and why."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = (
        jsonl(
            {"prompt": "Q1", "responses": ["a", "b"]},
            "{not json",
            {"prompt": "Q2", "responses": ["a", " "]},
            json.dumps({"prompt": "Q3\u0000", "responses": ["a", "b"]}),
            {"prompt": "Q4", "responses": ["c", "d"]},
        ).encode()
        + b'{"prompt": "\xff", "responses": ["a", "b"]}\n'
    )
    report = import_file(prompt_set=prompt_set, data=data, skip_invalid=True)
    assert (report.prompts_created, report.rollouts_created, report.tasks_created) == (2, 4, 2)
    assert [line for line, _ in report.skipped] == [2, 3, 4, 6]
    assert report.skipped[1] == (3, "response 1 is empty")
    assert report.skipped[3] == (6, "not valid UTF-8 text")
    assert "4 bad line(s) skipped" in str(report)
    assert sorted(Prompt.objects.values_list("text", flat=True)) == ["Q1", "Q4"]


def test_skip_invalid_leaves_out_a_prompt_that_cannot_be_ranked_with_all_its_lines():
    """One rollout per line: a prompt left with one distinct response is skipped, every line of it listed."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl(
        {"prompt": "A", "response": "x"},
        {"prompt": "B", "response": "y"},
        {"prompt": "A", "response": "x"},
        {"prompt": "B", "response": "z"},
    )
    report = import_file(prompt_set=prompt_set, data=data, skip_invalid=True)
    reason = "too few responses for this prompt: 1 distinct (need at least 2 to rank)"
    assert report.skipped == ((1, reason), (3, reason))
    assert list(Prompt.objects.values_list("text", flat=True)) == ["B"]


def test_skip_invalid_still_refuses_a_file_with_no_good_line():
    """Skipping everything is not an import: the file is refused with every reason, and nothing is written."""
    prompt_set = PromptSetFactory()
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data="{bad\n[]\n", skip_invalid=True)
    assert [line for line, _ in rejected.value.errors] == [1, 2]
    assert nothing_written()


def test_without_skip_invalid_the_same_file_is_refused_whole():
    """The default stays all or nothing."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl({"prompt": "Q1", "responses": ["a", "b"]}, {"prompt": "Q2", "responses": ["a", " "]})
    with pytest.raises(ImportRejected):
        import_file(prompt_set=prompt_set, data=data)
    assert nothing_written()


def test_the_management_command_can_skip_invalid_lines(tmp_path):
    """`--skip-invalid` imports the good lines and prints each skipped line with its reason."""
    path = tmp_path / "batch.jsonl"
    path.write_text(jsonl({"prompt": "Q", "responses": ["a", "b"]}, "{oops"))
    out, err = StringIO(), StringIO()
    call_command("import_prompts", "cli set", str(path), "--create", "--skip-invalid", stdout=out, stderr=err)
    assert "1 prompts created" in out.getvalue() and "1 bad line(s) skipped" in out.getvalue()
    assert "skipped line 2: bad JSON" in err.getvalue()


# --- The import endpoint and the admin page --------------------------------------------------------------------------


def api_import(client, prompt_set, content: str, **extra):
    return client.post(f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": content, **extra}, format="json")


@pytest.mark.parametrize(
    "bad_line",
    [
        json.dumps({"prompt": "a\u0000b", "responses": ["a", "b"]}),
        json.dumps({"prompt": "a\ud800b", "responses": ["a", "b"]}),
    ],
    ids=["nul", "surrogate"],
)
def test_unstorable_text_through_the_api_is_a_400_naming_the_line(admin_api, bad_line):
    """A NUL or a lone surrogate in inline content is a 400 with the line, not a 500."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    content = jsonl({"prompt": "fine", "responses": ["a", "b"]}, bad_line)
    response = api_import(admin_api, prompt_set, content)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_import"
    assert [error["line"] for error in response.json()["errors"]] == [2]
    assert "contains a" in response.json()["errors"][0]["detail"]
    assert nothing_written()


def test_the_api_imports_with_skip_invalid_and_lists_the_skipped_lines(admin_api):
    """skip_invalid is an explicit opt-in; the answer lists every skipped line with its reason."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    content = jsonl({"prompt": "Q", "responses": ["a", "b"]}, "{oops", {"prompt": "R", "responses": ["c"]})
    refused = api_import(admin_api, prompt_set, content)
    assert refused.status_code == 400 and nothing_written()
    response = api_import(admin_api, prompt_set, content, skip_invalid=True)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["prompts_created"], body["lines_skipped"]) == (1, 2)
    assert [error["line"] for error in body["skipped"]] == [2, 3]
    assert body["skipped"][1]["reason"] == "too few responses: 1 (need at least 2 to rank)"


def test_a_reimport_through_the_api_that_creates_nothing_answers_200(admin_api):
    """201 means something was created; the same file again answers 200 with the counts of what was there."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    content = jsonl({"prompt": "Q", "responses": ["a", "b"]})
    assert api_import(admin_api, prompt_set, content).status_code == 201
    again = api_import(admin_api, prompt_set, content)
    assert again.status_code == 200, again.content
    assert (again.json()["prompts_existing"], again.json()["rollouts_created"]) == (1, 0)


def test_the_admin_import_can_skip_invalid_lines_and_lists_them(client, admin_user):
    """Ticking "Skip bad lines" imports the good lines and shows every skipped one on the page."""
    client.force_login(admin_user)
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    upload = SimpleUploadedFile("mixed.jsonl", jsonl({"prompt": "Q", "responses": ["a", "b"]}, "{oops").encode())
    response = client.post(f"/admin/labeling/promptset/{prompt_set.pk}/import/", {"file": upload, "skip_invalid": "on"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "1 bad line skipped" in page and "line 2: bad JSON" in page
    assert Prompt.objects.filter(prompt_set=prompt_set).count() == 1
