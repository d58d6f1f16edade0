"""Parse JSONL / CSV uploads into prompt records, collecting every bad line before anything is written.

Accepted shapes (one JSON object per line):
- grouped:   {"prompt": ..., "responses": ["...", {"text": "...", "policy": "..."}], "policy"?: "..."}
- one-per-line: {"prompt": ..., "response": "...", "policy"?: "..."}
`prompt` is a string or a chat: a list of {"role", "content"} messages. Optional "id" and "metadata", the
references judges check against: "answer" (a string or a number) and "tests" (a Python test script), and, in the
grouped shape only, a known answer for gold tasks (labeling.services.gold): "gold": {"best": i} or
{"order": [[i], [j, k], ...]} with i, j, k indices into the line's "responses" (0 = the first); see
`labeling.services.import_gold` for which task it marks.
CSV: a header with `prompt` and either `response` (+ optional `policy`, `id`) or `response_1..response_n`, and
optional `answer` / `tests` / `gold` columns (`gold`: the same JSON, 0 = response_1). Where a one-rollout-per-line
file repeats a prompt, its first reference wins.

Every value that will be stored is checked here, so that the database never sees what it cannot hold
(a write that fails half-way through an import is a 500, not a line number):
- no NUL (U+0000): Postgres `text` and `jsonb` refuse it;
- no lone surrogate (U+D800–U+DFFF): it has no UTF-8 encoding, so neither the hash nor the driver can write it;
- no NaN or ±Infinity in metadata: JSON has none and `jsonb` refuses them;
- metadata nested at most MAX_METADATA_DEPTH deep, `id` no longer than its column.
JSON Lines are split at "\\n" only (a trailing "\\r" is dropped): U+2028, U+2029 and U+0085 are legal raw
inside JSON strings, and `json.dumps(ensure_ascii=False)` writes them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from labeling.services.errors import ImportRejected

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})
# Enough lines to fix a file in one pass without flooding the message.
MAX_REPORTED_ERRORS = 50
# Real metadata is a few levels deep. The bound keeps far below the interpreter's recursion limit,
# which the JSON encoder meets again when the ORM writes the value from deep inside its own stack.
MAX_METADATA_DEPTH = 64
# The widths of Prompt.external_id and Rollout.policy (checked against the models in the tests).
MAX_EXTERNAL_ID_CHARS = 200
MAX_POLICY_CHARS = 200

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What `surrogateescape` decoding makes of bytes that are not UTF-8.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class LineError(NamedTuple):
    """A line that cannot be imported, and why (1-based; 0 for the file as a whole)."""

    line: int
    reason: str


@dataclass
class ResponseRecord:
    text: str
    policy: str
    line: int


@dataclass
class PromptRecord:
    line: int
    text: str = ""
    messages: list[dict] | None = None
    external_id: str = ""
    metadata: dict = field(default_factory=dict)
    responses: list[ResponseRecord] = field(default_factory=list)
    answer: str = ""  # references for judges; empty when the line has none
    tests: str = ""
    gold: dict | None = None  # the known answer by response index ({"best": i} or {"order": [[i], ...]}), checked

    @property
    def content_hash(self) -> str:
        canonical: dict[str, object] = {"messages": self.messages} if self.messages is not None else {"text": self.text}
        return sha256_text(json.dumps(canonical, sort_keys=True, ensure_ascii=False))

    @property
    def lines(self) -> list[int]:
        """Every line this prompt came from (one-rollout-per-line files repeat a prompt)."""
        return sorted({self.line, *(response.line for response in self.responses)})


@dataclass
class ParsedUpload:
    records: list[PromptRecord]  # one per prompt, good lines only
    errors: list[LineError]  # every bad line, in file order


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _LineError(Exception):
    pass


def _check_storable(value: str, what: str) -> str:
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise _LineError(f"{what} contains a NUL character (\\u0000), which the database cannot store")
    raise _LineError(f"{what} contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode")


def _check_text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _LineError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _LineError(f"{what} is empty")
    if len(value) > max_chars:
        raise _LineError(f"{what} is {len(value):,} characters, over the limit of {max_chars:,}")
    return _check_storable(value, what)


def _check_metadata(metadata: dict) -> dict:
    """Walk the metadata without recursion: strings storable, numbers finite, depth bounded."""
    pending: list[tuple[object, str, int]] = [(metadata, "metadata", 1)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            _check_storable(value, f"'{path}'")
        elif isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            raise _LineError(f"'{path}' is {name}: JSON has no such number, and the database cannot store it")
        elif isinstance(value, (dict, list)):
            if depth > MAX_METADATA_DEPTH:
                raise _LineError(f"'metadata' is nested more than {MAX_METADATA_DEPTH} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_storable(key, f"a key of '{path}'")
                    pending.append((item, f"{path}.{key[:40]}", depth + 1))
            else:
                pending.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))
    return metadata


def _check_external_id(value: object) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _LineError("'id' must be a string or an integer")
    external_id = _check_storable(str(value), "'id'")
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise _LineError(f"'id' is {len(external_id):,} characters, over the limit of {MAX_EXTERNAL_ID_CHARS}")
    return external_id


def _parse_prompt(value: object, max_chars: int) -> tuple[str, list[dict] | None]:
    if isinstance(value, list):
        if not value:
            raise _LineError("'prompt' is an empty list of messages")
        messages = []
        for index, message in enumerate(value):
            if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
                raise _LineError(f"prompt message {index} must be an object with 'role' and 'content'")
            if not isinstance(message["role"], str) or message["role"] not in CHAT_ROLES:
                raise _LineError(f"prompt message {index} has unknown role {message['role']!r}")
            content = _check_text(message.get("content"), f"prompt message {index} 'content'", max_chars)
            messages.append({"role": message["role"], "content": content})
        return "", messages
    if value is None:
        raise _LineError("missing field 'prompt'")
    return _check_text(value, "'prompt'", max_chars), None


def _check_policy(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _LineError(f"{what} must be a string, got {type(value).__name__}")
    return _check_storable(value, what).strip()[:MAX_POLICY_CHARS]


def _parse_response(value: object, default_policy: str, line: int, what: str, max_chars: int) -> ResponseRecord:
    if isinstance(value, dict):
        text = value.get("text", value.get("response", value.get("content")))
        if text is None:
            raise _LineError(f"{what} must have a 'text' field")
        policy = _check_policy(value["policy"], f"{what} 'policy'") if "policy" in value else default_policy
    else:
        text, policy = value, default_policy
    return ResponseRecord(text=_check_text(text, what, max_chars), policy=policy, line=line)


def _record_from_object(obj: object, line: int, max_chars: int) -> PromptRecord:
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    if "prompt" not in obj:
        raise _LineError("missing field 'prompt'")
    text, messages = _parse_prompt(obj["prompt"], max_chars)
    default_policy = _check_policy(obj.get("policy", ""), "'policy'")
    external_id = _check_external_id(obj.get("id", ""))
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _LineError(f"'metadata' must be an object, got {type(metadata).__name__}")
    record = PromptRecord(
        line=line, text=text, messages=messages, external_id=external_id, metadata=_check_metadata(metadata)
    )
    record.answer, record.tests = _check_references(obj, max_chars)
    if "responses" in obj:
        responses = obj["responses"]
        if not isinstance(responses, list):
            raise _LineError(f"'responses' must be a list, got {type(responses).__name__}")
        if len(responses) < 2:
            raise _LineError(f"too few responses: {len(responses)} (need at least 2 to rank)")
        record.responses = [
            _parse_response(item, default_policy, line, f"response {index}", max_chars)
            for index, item in enumerate(responses)
        ]
    elif "response" in obj:
        record.responses = [_parse_response(obj["response"], default_policy, line, "'response'", max_chars)]
    else:
        raise _LineError("missing field 'responses' (a list) or 'response' (one rollout per line)")
    if obj.get("gold") is not None:
        if "responses" not in obj:
            raise _LineError("'gold' needs the grouped shape ('responses': [...]): its indices count those responses")
        record.gold = _check_gold(obj["gold"], record.responses)
    return record


_GOLD_SHAPE = '\'gold\' must be {"best": <response index>} or {"order": [[indices], ...]} (best first)'


def _check_gold(gold: object, responses: list[ResponseRecord]) -> dict:
    """A known answer by response index: the best one, or every response once in tiers best → worst."""
    last = len(responses) - 1
    if not isinstance(gold, dict) or len(gold) != 1 or not ({"best", "order"} & gold.keys()):
        raise _LineError(_GOLD_SHAPE)
    if "best" in gold:
        best = gold["best"]
        if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best <= last:
            raise _LineError(f"'gold' best {best!r} is not a response index (this line's are 0–{last})")
        named = [best]
    else:
        order = gold["order"]
        if not isinstance(order, list) or not all(isinstance(tier, list) and tier for tier in order):
            raise _LineError("'gold' order must be a list of non-empty lists of response indices")
        named = [index for tier in order for index in tier]
        if any(isinstance(index, bool) or not isinstance(index, int) for index in named):
            raise _LineError("'gold' order must hold response indices (integers) only")
        if sorted(named) != list(range(last + 1)):
            missing = sorted(set(range(last + 1)) - set(named))
            repeated = sorted({index for index in named if named.count(index) > 1})
            unknown = sorted(set(named) - set(range(last + 1)))
            problems = [
                f"{what} {', '.join(map(str, indices))}"
                for what, indices in (("missing", missing), ("repeated", repeated), ("not an index", unknown))
                if indices
            ]
            raise _LineError(f"'gold' order must hold each response index 0–{last} once ({'; '.join(problems)})")
        if len(order) < 2:
            raise _LineError("'gold' order ties every response: it orders no pair to check annotators against")
    seen: dict[tuple[str, str], int] = {}
    for index, response in enumerate(responses):
        first = seen.setdefault((response.policy, response.text), index)
        if first != index:
            # Both indices would be one stored rollout: a known answer naming either is ambiguous.
            raise _LineError(
                f"'gold' counts responses by index, but responses {first} and {index} are the same: "
                "remove the duplicate"
            )
    return {"best": named[0]} if "best" in gold else {"order": [list(tier) for tier in gold["order"]]}


def _check_references(obj: dict, max_chars: int) -> tuple[str, str]:
    """The optional "answer" (a string, or a number written as JSON writes it) and "tests" (a string)."""
    answer = obj.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        if isinstance(answer, float) and not math.isfinite(answer):
            raise _LineError("'answer' must be a finite number")
        answer = json.dumps(answer)
    tests = obj.get("tests")
    return (
        "" if answer is None else _check_text(answer, "'answer'", max_chars),
        "" if tests is None else _check_text(tests, "'tests'", max_chars),
    )


def _json_lines(text: str) -> Iterator[str]:
    """JSON Lines are separated by "\\n" alone; a "\\r" before it is a Windows line ending."""
    for raw in text.split("\n"):
        yield raw[:-1] if raw.endswith("\r") else raw


def _load_json(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _LineError(f"bad JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _LineError("bad JSON (nested too deeply to read)") from None
    except ValueError:
        # The only other ValueError json raises: an integer over the interpreter's digit limit.
        raise _LineError(f"bad JSON (a number has more than {sys.get_int_max_str_digits():,} digits)") from None


def _jsonl_records(
    lines: Iterable[str], max_chars: int, errors: list[LineError], *, undecodable: bool
) -> Iterator[PromptRecord]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            if undecodable and _UNDECODABLE.search(raw):
                raise _LineError("not valid UTF-8 text")
            yield _record_from_object(_load_json(raw), number, max_chars)
        except _LineError as exc:
            errors.append(LineError(number, str(exc)))


def _csv_records(text: str, max_chars: int, errors: list[LineError], *, undecodable: bool) -> Iterator[PromptRecord]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise ImportRejected([LineError(1, f"unreadable CSV header ({exc})")]) from None
    numbered = sorted((c for c in header if c.startswith("response_")), key=lambda c: c.split("_", 1)[1])
    if "prompt" not in header or ("response" not in header and not numbered):
        errors.append(LineError(1, "CSV header needs 'prompt' and 'response' (or response_1, response_2, ...)"))
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader cannot resynchronise (an open quote swallows what follows), so no line
            # after this one can be trusted: the file is refused even when skipping bad lines.
            raise ImportRejected(
                [*errors, LineError(reader.line_num, f"unreadable CSV ({exc}); the rest of the file was not read")]
            ) from None
        line = reader.line_num
        if None in row:
            errors.append(LineError(line, "more cells than header columns"))
            continue
        if undecodable and any(_UNDECODABLE.search(cell) for cell in row.values() if cell):
            errors.append(LineError(line, "not valid UTF-8 text"))
            continue
        obj: dict = {"prompt": row["prompt"], "policy": row.get("policy") or ""}
        if row.get("id"):
            obj["id"] = row["id"]
        for reference in ("answer", "tests"):
            if row.get(reference):
                obj[reference] = row[reference]
        if numbered:
            obj["responses"] = [row[c] for c in numbered if row.get(c)]
        else:
            obj["response"] = row["response"]
        try:
            if row.get("gold"):
                obj["gold"] = _csv_gold(row, numbered)
            yield _record_from_object(obj, line, max_chars)
        except _LineError as exc:
            errors.append(LineError(line, str(exc)))


def _csv_gold(row: dict[str, str], numbered: list[str]) -> object:
    """A CSV row's `gold` cell: the JSON of the JSONL field, its indices counting response columns (0 = response_1)."""
    try:
        gold = _load_json(row["gold"])
    except _LineError as exc:
        raise _LineError(f"'gold' is not JSON: {exc}") from None
    filled = [bool(row.get(column)) for column in numbered]
    if filled != sorted(filled, reverse=True):  # a filled cell after an empty one
        # Empty cells are dropped from the responses: indices after a gap would name the wrong column.
        raise _LineError("'gold' counts response columns in order, so leave no response cell empty before a filled one")
    return gold


def _merge_by_prompt(records: Iterable[PromptRecord], errors: list[LineError]) -> list[PromptRecord]:
    """One-rollout-per-line files repeat the prompt: fold them into one record per prompt.

    A gold answer counts its own line's responses: a prompt with one on a line and responses on another is refused
    (every line of it, in `errors`).
    """
    merged: dict[str, PromptRecord] = {}
    with_gold: set[str] = set()
    for record in records:
        key = record.content_hash
        if record.gold is not None:
            with_gold.add(key)
        if key in merged:
            merged[key].responses.extend(record.responses)
            merged[key].answer = merged[key].answer or record.answer
            merged[key].tests = merged[key].tests or record.tests
        else:
            merged[key] = record
    for key in with_gold:
        lines = merged[key].lines
        if len(lines) > 1:
            del merged[key]
            reason = (
                f"'gold' needs all of its prompt's responses on one line; this prompt is on lines "
                f"{', '.join(map(str, lines))}"
            )
            errors.extend(LineError(line, reason) for line in lines)
    errors.sort()
    return list(merged.values())


def _decode(data: bytes | str) -> tuple[str, bool]:
    """The upload as text, and whether some of its bytes were not UTF-8 (kept as lone surrogates)."""
    if isinstance(data, str):
        return data, False
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        # Decode the rest anyway, so each bad line is reported (or skipped) on its own.
        return data.decode("utf-8-sig", errors="surrogateescape"), True


def read_upload(data: bytes | str, *, filename: str = "", fmt: str | None = None, max_chars: int) -> ParsedUpload:
    """Parse a whole upload, keeping the good lines and listing every bad one with its reason.

    Raises ImportRejected only when the file as a whole cannot be read (unknown format, broken CSV).
    """
    text, undecodable = _decode(data)
    fmt = (fmt or ("csv" if filename.lower().endswith(".csv") else "jsonl")).lower()
    if fmt not in {"jsonl", "csv"}:
        raise ImportRejected([LineError(0, f"unknown format {fmt!r}; use jsonl or csv")])
    errors: list[LineError] = []
    if fmt == "csv":
        records = list(_csv_records(text, max_chars, errors, undecodable=undecodable))
    else:
        records = list(_jsonl_records(_json_lines(text), max_chars, errors, undecodable=undecodable))
    return ParsedUpload(records=_merge_by_prompt(records, errors), errors=errors)


def parse_upload(
    data: bytes | str, *, filename: str = "", fmt: str | None = None, max_chars: int
) -> list[PromptRecord]:
    """Parse a whole upload or raise ImportRejected listing every bad line (nothing is written)."""
    parsed = read_upload(data, filename=filename, fmt=fmt, max_chars=max_chars)
    if parsed.errors:
        raise ImportRejected(parsed.errors[:MAX_REPORTED_ERRORS], total_errors=len(parsed.errors))
    if not parsed.records:
        raise ImportRejected([LineError(0, "the file holds no records")])
    return parsed.records
