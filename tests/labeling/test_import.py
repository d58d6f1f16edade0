"""Importing prompts with rollouts: every shape accepted, a bad file rejected whole, re-imports add nothing."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from labeling.models import Prompt, RankingTask, Rollout
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file
from tests.factories import PromptSetFactory

pytestmark = pytest.mark.django_db


def jsonl(*rows: object) -> str:
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"


def nothing_written() -> bool:
    return not (Prompt.objects.exists() or Rollout.objects.exists() or RankingTask.objects.exists())


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
