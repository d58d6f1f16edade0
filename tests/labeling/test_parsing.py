"""The parser's limits: what the database cannot store is a line error naming the line, never a 500."""

from __future__ import annotations

import json

import pytest

from labeling.models import Prompt, Rollout
from labeling.services import parsing
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file
from tests.factories import PromptSetFactory
from tests.labeling.helpers import jsonl, nothing_written

pytestmark = pytest.mark.django_db


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
