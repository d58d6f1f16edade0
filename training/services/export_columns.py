"""A chunk's prompts and responses → Arrow columns and JSON pieces, for the export writer (`export_writer`).

Each distinct prompt, response and policy of a chunk is converted to Arrow and JSON-encoded once (`Texts`); a
write's rows are then laid out by Arrow's `take` (in C++, without the GIL) from those, never built as Python
objects. The JSON pieces are what `json.dumps(row, ensure_ascii=False)` writes for each value, so that the writer
can join a JSONL line from them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.services.export_pairs import PairColumns

PromptRow = tuple[int, str, str | None, str]  # (id, text, messages JSON or None, content_hash)
RolloutRow = tuple[int, str, str]  # (id, text, policy)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
encode_string = json.encoder.encode_basestring  # the C encoder json.dumps(..., ensure_ascii=False) uses


@dataclass(frozen=True)
class Texts:
    """A chunk's distinct prompts or rollouts: sorted ids, their Parquet values and their JSON encodings."""

    ids: np.ndarray
    values: pa.Array  # string, or list<struct<role, content>> in the conversational format
    json: pa.Array  # string: each value as json.dumps(value, ensure_ascii=False) writes it
    json_bytes: np.ndarray  # UTF-8 length of each JSON encoding (to size writes)
    policies: pa.Array | None = None  # rollouts only
    policies_json: pa.Array | None = None

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Where each of `ids` is in this table; every id must be here (a rollout of the chunk's prompts)."""
        rows = np.searchsorted(self.ids, ids)
        if len(ids) and (rows.max() >= len(self.ids) or not np.array_equal(self.ids[rows], ids)):
            missing = sorted(set(ids.tolist()) - set(self.ids.tolist()))[:5]
            raise ValueError(f"Rankings name ids that were not found with their prompts: {missing}")
        return rows


def prompt_texts(rows: list[PromptRow], conversational: bool) -> Texts:
    """A chunk's prompts (rows sorted by id): their text, or message lists in the conversational format."""
    ids = [row[0] for row in rows]
    texts = [row[1] for row in rows]
    if not conversational:
        return _texts(ids, pa.array(texts, pa.string()), list(map(encode_string, texts)))
    if all(row[2] is None for row in rows):  # plain-text prompts: each is one user turn
        values, encoded = _one_message_lists("user", texts)
        return _texts(ids, values, encoded)
    # A prompt's messages as imported, or its text as one user turn (what the row-by-row export wrote).
    chats = [
        (json.loads(messages) if messages is not None else None) or [{"role": "user", "content": text}]
        for _, text, messages, _ in rows
    ]
    return _texts(ids, pa.array(chats, pa.list_(MESSAGE)), [json.dumps(chat, ensure_ascii=False) for chat in chats])


def _one_message_lists(role: str, texts: list[str]) -> tuple[pa.Array, list[str]]:
    """[{"role": role, "content": text}] per text as Arrow values and JSON, built without a Python dict per text."""
    contents = pa.array(texts, pa.string())
    roles = pa.array(np.full(len(texts), role, dtype=object), pa.string())
    messages = pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))
    values = pa.ListArray.from_arrays(pa.array(np.arange(len(texts) + 1, dtype=np.int32)), messages)
    head = f'[{{"role": {encode_string(role)}, "content": '
    return values, [f"{head}{text}}}]" for text in map(encode_string, texts)]


def rollout_texts(rows: list[RolloutRow], conversational: bool) -> Texts:
    """A chunk's rollouts (rows sorted by id): text, or one assistant message in the conversational format; policy."""
    ids = [row[0] for row in rows]
    texts = [row[1] for row in rows]
    if conversational:
        values, encoded = _one_message_lists("assistant", texts)
    else:
        values, encoded = pa.array(texts, pa.string()), list(map(encode_string, texts))
    # A handful of distinct policies: each is encoded once and laid out by Arrow.
    policies = pa.array([row[2] for row in rows], pa.string()).dictionary_encode()
    distinct_json = pa.array(map(encode_string, policies.dictionary.to_pylist()), pa.string())
    return dataclasses.replace(
        _texts(ids, values, encoded),
        policies=policies.dictionary.take(policies.indices),
        policies_json=distinct_json.take(policies.indices),
    )


def _texts(ids: list[int], values: pa.Array, encoded: list[str]) -> Texts:
    json_array = pa.array(encoded, pa.string())
    return Texts(
        ids=np.array(ids, dtype=np.int64),
        values=values,
        json=json_array,
        json_bytes=pc.binary_length(json_array).to_numpy(zero_copy_only=False),
    )


def encoded_strings(values: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Free text per row (rationales: mostly empty, a few repeated) as Arrow strings and their JSON encodings, each
    distinct value encoded once."""
    encoded = pa.array(values, pa.string()).dictionary_encode()
    distinct_json = pa.array(map(encode_string, encoded.dictionary.to_pylist()), pa.string())
    return encoded.dictionary.take(encoded.indices), distinct_json.take(encoded.indices)


def row_columns(
    pairs: PairColumns, prompts: Texts, rollouts: Texts, schema: pa.Schema
) -> list[tuple[pa.Array, pa.Array]]:
    """(Parquet values, JSON text) per column of the schema, for these pairs."""
    prompt, chosen, rejected = prompts.rows(pairs.prompt_id), rollouts.rows(pairs.chosen), rollouts.rows(pairs.rejected)
    assert rollouts.policies is not None and rollouts.policies_json is not None

    def number(values: np.ndarray) -> tuple[pa.Array, pa.Array]:
        array = pa.array(values)
        return array, pc.cast(array, pa.string())  # Arrow prints integers as Python does

    def distinct(values: np.ndarray, encode: Callable[[Any], str]) -> tuple[pa.Array, pa.Array]:
        # Few distinct weights and tie flags: each is encoded once by Python, then laid out by Arrow.
        uniques, inverse = np.unique(values, return_inverse=True)
        return pa.array(values), pa.array([encode(value.item()) for value in uniques], pa.string()).take(inverse)

    columns = {
        "prompt": (prompts.values.take(prompt), prompts.json.take(prompt)),
        "chosen": (rollouts.values.take(chosen), rollouts.json.take(chosen)),
        "rejected": (rollouts.values.take(rejected), rollouts.json.take(rejected)),
        "prompt_id": number(pairs.prompt_id),
        "chosen_id": number(pairs.chosen),
        "rejected_id": number(pairs.rejected),
        "chosen_policy": (rollouts.policies.take(chosen), rollouts.policies_json.take(chosen)),
        "rejected_policy": (rollouts.policies.take(rejected), rollouts.policies_json.take(rejected)),
        "annotator": number(pairs.annotator),
        "weight": distinct(pairs.weight, float.__repr__),  # finite weights: no NaN/Infinity to special-case
        "tie": distinct(pairs.tie, json.dumps),
    }
    if "rationale" in schema.names:  # rationale="include": the pair columns carry each row's rationale
        assert pairs.rationale is not None
        columns["rationale"] = encoded_strings(pairs.rationale)
    return [columns[name] for name in schema.names]
