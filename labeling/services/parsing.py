"""Parse JSONL / CSV uploads into prompt records, collecting every bad line before anything is written.

Accepted shapes (one JSON object per line):
- grouped:   {"prompt": ..., "responses": ["...", {"text": "...", "policy": "..."}], "policy"?: "..."}
- one-per-line: {"prompt": ..., "response": "...", "policy"?: "..."}
`prompt` is a string or a chat: a list of {"role", "content"} messages. Optional "id" and "metadata".
CSV: a header with `prompt` and either `response` (+ optional `policy`, `id`) or `response_1..response_n`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from labeling.services.errors import ImportRejected

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})
# Enough lines to fix a file in one pass without flooding the message.
MAX_REPORTED_ERRORS = 50


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

    @property
    def content_hash(self) -> str:
        canonical = {"messages": self.messages} if self.messages is not None else {"text": self.text}
        return sha256_text(json.dumps(canonical, sort_keys=True, ensure_ascii=False))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _LineError(Exception):
    pass


def _check_text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _LineError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _LineError(f"{what} is empty")
    if len(value) > max_chars:
        raise _LineError(f"{what} is {len(value):,} characters, over the limit of {max_chars:,}")
    return value


def _parse_prompt(value: object, max_chars: int) -> tuple[str, list[dict] | None]:
    if isinstance(value, list):
        if not value:
            raise _LineError("'prompt' is an empty list of messages")
        messages = []
        for index, message in enumerate(value):
            if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message:
                raise _LineError(f"prompt message {index} must be an object with 'role' and 'content'")
            if message["role"] not in CHAT_ROLES:
                raise _LineError(f"prompt message {index} has unknown role {message['role']!r}")
            content = _check_text(message.get("content"), f"prompt message {index} 'content'", max_chars)
            messages.append({"role": message["role"], "content": content})
        return "", messages
    if value is None:
        raise _LineError("missing field 'prompt'")
    return _check_text(value, "'prompt'", max_chars), None


def _parse_response(value: object, default_policy: str, line: int, what: str, max_chars: int) -> ResponseRecord:
    if isinstance(value, dict):
        text = value.get("text", value.get("response", value.get("content")))
        if text is None:
            raise _LineError(f"{what} must have a 'text' field")
        policy = value.get("policy", default_policy)
    else:
        text, policy = value, default_policy
    if not isinstance(policy, str):
        raise _LineError(f"{what} 'policy' must be a string, got {type(policy).__name__}")
    return ResponseRecord(text=_check_text(text, what, max_chars), policy=policy.strip()[:200], line=line)


def _record_from_object(obj: object, line: int, max_chars: int) -> PromptRecord:
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    if "prompt" not in obj:
        raise _LineError("missing field 'prompt'")
    text, messages = _parse_prompt(obj["prompt"], max_chars)
    default_policy = obj.get("policy", "")
    if not isinstance(default_policy, str):
        raise _LineError(f"'policy' must be a string, got {type(default_policy).__name__}")
    external_id = obj.get("id", "")
    if not isinstance(external_id, (str, int)) or isinstance(external_id, bool):
        raise _LineError("'id' must be a string or an integer")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _LineError(f"'metadata' must be an object, got {type(metadata).__name__}")
    record = PromptRecord(line=line, text=text, messages=messages, external_id=str(external_id), metadata=metadata)
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
    return record


def _jsonl_records(lines: Iterable[str], max_chars: int, errors: list[tuple[int, str]]) -> Iterator[PromptRecord]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append((number, f"bad JSON ({exc.msg} at column {exc.colno})"))
            continue
        try:
            yield _record_from_object(obj, number, max_chars)
        except _LineError as exc:
            errors.append((number, str(exc)))


def _csv_records(text: str, max_chars: int, errors: list[tuple[int, str]]) -> Iterator[PromptRecord]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    numbered = sorted((c for c in header if c.startswith("response_")), key=lambda c: c.split("_", 1)[1])
    if "prompt" not in header or ("response" not in header and not numbered):
        errors.append((1, "CSV header needs 'prompt' and 'response' (or response_1, response_2, ...)"))
        return
    for row in reader:
        line = reader.line_num
        if None in row:
            errors.append((line, "more cells than header columns"))
            continue
        obj: dict = {"prompt": row["prompt"], "policy": row.get("policy") or ""}
        if row.get("id"):
            obj["id"] = row["id"]
        if numbered:
            obj["responses"] = [row[c] for c in numbered if row.get(c)]
        else:
            obj["response"] = row["response"]
        try:
            yield _record_from_object(obj, line, max_chars)
        except _LineError as exc:
            errors.append((line, str(exc)))


def _merge_by_prompt(records: Iterable[PromptRecord]) -> list[PromptRecord]:
    """One-rollout-per-line files repeat the prompt: fold them into one record per prompt."""
    merged: dict[str, PromptRecord] = {}
    for record in records:
        key = record.content_hash
        if key in merged:
            merged[key].responses.extend(record.responses)
        else:
            merged[key] = record
    return list(merged.values())


def parse_upload(
    data: bytes | str, *, filename: str = "", fmt: str | None = None, max_chars: int
) -> list[PromptRecord]:
    """Parse a whole upload or raise ImportRejected listing every bad line (nothing is written)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ImportRejected([(line, "not valid UTF-8 text")]) from None
    fmt = (fmt or ("csv" if filename.lower().endswith(".csv") else "jsonl")).lower()
    if fmt not in {"jsonl", "csv"}:
        raise ImportRejected([(0, f"unknown format {fmt!r}; use jsonl or csv")])
    errors: list[tuple[int, str]] = []
    if fmt == "csv":
        records = list(_csv_records(data, max_chars, errors))
    else:
        records = list(_jsonl_records(data.splitlines(), max_chars, errors))
    if not records and not errors:
        errors.append((0, "the file holds no records"))
    if errors:
        raise ImportRejected(errors[:MAX_REPORTED_ERRORS], total_errors=len(errors))
    return _merge_by_prompt(records)
