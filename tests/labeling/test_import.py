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
from labeling.services import parsing
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


# --- Hardening: what the database cannot store is a line error, never a 500 ---------------------------------------

DEEP = 1000


def nested(depth: int) -> str:
    """JSON text of `depth` nested lists (built as text: json.dumps would itself hit the recursion limit)."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        (json.dumps({"prompt": "a\u0000b", "responses": ["x", "y"]}), "'prompt' contains a NUL character"),
        (json.dumps({"prompt": "Q", "responses": ["x", "y\u0000"]}), "response 1 contains a NUL character"),
        (
            json.dumps({"prompt": [{"role": "user", "content": "\u0000"}], "responses": ["x", "y"]}),
            "prompt message 0 'content' contains a NUL character",
        ),
        (json.dumps({"prompt": "Q", "responses": ["x", "y"], "policy": "p\u0000"}), "'policy' contains a NUL"),
        (
            json.dumps({"prompt": "Q", "responses": ["x", {"text": "y", "policy": "\u0000"}]}),
            "response 1 'policy' contains a NUL",
        ),
        (
            json.dumps({"prompt": "Q", "responses": ["x", "y"], "metadata": {"source": ["ok", "\u0000"]}}),
            "'metadata.source[1]' contains a NUL",
        ),
        (
            json.dumps({"prompt": "Q", "responses": ["x", "y"], "metadata": {"\u0000": 1}}),
            "a key of 'metadata' contains a NUL",
        ),
        (json.dumps({"prompt": "Q", "responses": ["x", "y"], "id": "7\u0000"}), "'id' contains a NUL"),
        (json.dumps({"prompt": "\ud800", "responses": ["x", "y"]}), "'prompt' contains a lone surrogate (\\ud800)"),
        (json.dumps({"prompt": "Q", "responses": ["x", "\udfff"]}), "response 1 contains a lone surrogate"),
        (
            json.dumps({"prompt": "Q", "responses": ["x", "y"], "metadata": {"k": "\udc00"}}),
            "'metadata.k' contains a lone surrogate",
        ),
        ('{"prompt": "Q", "responses": ["x", "y"], "metadata": {"score": NaN}}', "'metadata.score' is NaN"),
        ('{"prompt": "Q", "responses": ["x", "y"], "metadata": {"s": [-Infinity]}}', "'metadata.s[0]' is -Infinity"),
        ('{"prompt": "Q", "responses": ["x", "y"], "metadata": {"big": 1e999}}', "'metadata.big' is Infinity"),
        (
            '{"prompt": "Q", "responses": ["x", "y"], "metadata": {"deep": ' + nested(DEEP) + "}}",
            "nested too deeply",
        ),
        (
            '{"prompt": "Q", "responses": ["x", "y"], "metadata": {"deep": ' + nested(100) + "}}",
            "nested more than 64 levels deep",
        ),
        (json.dumps({"prompt": "Q", "responses": ["x", "y"], "id": "i" * 201}), "'id' is 201 characters"),
        ('{"prompt": "Q", "responses": ["x", "y"], "id": 1' + "0" * 300 + "}", "'id' is 301 characters"),
        ('{"prompt": "Q", "responses": ["x", "y"], "id": 1' + "0" * 5000 + "}", "a number has more than"),
        (json.dumps({"prompt": [{"role": ["user"], "content": "x"}], "responses": ["x", "y"]}), "unknown role"),
    ],
    ids=[
        "nul-prompt",
        "nul-response",
        "nul-chat-content",
        "nul-policy",
        "nul-response-policy",
        "nul-metadata-value",
        "nul-metadata-key",
        "nul-id",
        "surrogate-prompt",
        "surrogate-response",
        "surrogate-metadata",
        "nan",
        "minus-infinity",
        "overflowing-float",
        "nested-1000",
        "nested-100",
        "long-id",
        "huge-integer-id",
        "integer-id-over-digit-limit",
        "unhashable-role",
    ],
)
def test_values_the_database_cannot_store_reject_the_file_naming_the_line(bad_line, reason):
    """NUL, lone surrogates, NaN/Infinity, deep nesting and oversize ids are line errors, not database errors."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl(
        {"prompt": "fine", "responses": ["a", "b"]}, bad_line, {"prompt": "also fine", "responses": ["c", "d"]}
    )
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert [line for line, _ in rejected.value.errors] == [2]
    assert reason in rejected.value.errors[0][1]
    assert nothing_written()


def test_metadata_within_the_limits_is_stored_as_sent():
    """Deep-but-bounded nesting, big integers and unusual characters in metadata round-trip through the database."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    metadata = {"deep": json.loads(nested(60)), "big": 10**200, "text": "tab\there \u2028 é 😀", "x": -1.5}
    import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "b"], "metadata": metadata}))
    assert Prompt.objects.get().metadata == metadata


def test_an_id_as_long_as_its_column_is_kept():
    """The limit is the column's width, not less."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    import_file(prompt_set=prompt_set, data=jsonl({"prompt": "Q", "responses": ["a", "b"], "id": "i" * 200}))
    assert Prompt.objects.get().external_id == "i" * 200


def test_the_parser_limits_match_the_columns():
    """The widths the parser checks are the model's columns."""
    assert Prompt._meta.get_field("external_id").max_length == parsing.MAX_EXTERNAL_ID_CHARS
    assert Rollout._meta.get_field("policy").max_length == parsing.MAX_POLICY_CHARS


def test_a_nul_in_a_csv_cell_rejects_the_file_naming_the_line():
    """CSV cells are checked like JSON strings."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = "prompt,response,id\nQ,a,1\nQ,b\x00c,2\nQ,d,3\n"
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data, fmt="csv")
    assert rejected.value.errors == [
        (3, "'response' contains a NUL character (\\u0000), which the database cannot store")
    ]
    assert nothing_written()


def test_a_lone_surrogate_in_text_sent_inline_is_rejected():
    """Text that arrives already decoded (the API's inline content) can carry a lone surrogate; it is a line error."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data="prompt,response\nQ,a\nQ,b\ud800\n", fmt="csv")
    assert rejected.value.errors == [(3, "'response' contains a lone surrogate (\\ud800), which is not valid Unicode")]
    assert nothing_written()


def test_json_lines_break_at_newlines_only():
    """U+2028, U+2029 and U+0085 are legal raw in JSON strings: one line stays one record, byte for byte."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    prompt = "first\u2028second\u2029third\u0085fourth"
    line = json.dumps({"prompt": prompt, "responses": ["a\u2028b", "c"]}, ensure_ascii=False)
    report = import_file(prompt_set=prompt_set, data=line.encode() + b"\n")
    assert (report.prompts_created, report.rollouts_created) == (1, 2)
    assert Prompt.objects.get().text == prompt
    assert sorted(Rollout.objects.values_list("text", flat=True)) == ["a\u2028b", "c"]


def test_windows_line_endings_are_accepted():
    """A "\\r" before the "\\n" is a line ending, not part of the record."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    data = jsonl({"prompt": "Q1", "responses": ["a", "b"]}, {"prompt": "Q2", "responses": ["c", "d"]})
    report = import_file(prompt_set=prompt_set, data=data.replace("\n", "\r\n"))
    assert report.prompts_created == 2


def test_every_line_that_is_not_utf8_is_reported():
    """Encoding errors are line errors like any other: each bad line is named, the good ones parse."""
    prompt_set = PromptSetFactory()
    data = b'{"prompt": "\xff"}\n{"prompt": "ok", "responses": ["a", "b"]}\n{"prompt": "\xc3("}\n'
    with pytest.raises(ImportRejected) as rejected:
        import_file(prompt_set=prompt_set, data=data)
    assert rejected.value.errors == [(1, "not valid UTF-8 text"), (3, "not valid UTF-8 text")]


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
    assert "contains a" in response.json()["errors"][0]["reason"]
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
