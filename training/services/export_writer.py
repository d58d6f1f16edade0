"""The worker half of an export: rankings streamed from the database → Parquet + JSONL, hashed as written.

Memory is bounded by one chunk of prompts (their rankings, rollout texts and rows), never by the size
of the export: rankings arrive ordered by prompt, a chunk is expanded into pairs (and aggregated, which
only ever needs one prompt's pairs), its rows are appended to the open Parquet writers and JSONL files
of their split, and the chunk is dropped.

The content hash is computed from the JSONL bytes as they are written: sha256 over the export rules
and, per split, the sha256 of that split's JSONL file. Anyone can recompute it from the files
(`content_hash_of_files`), identical content always yields the same version, and the rows keep the
order the in-memory export used (by prompt, chosen, rejected, annotator).

This module imports pyarrow at the top on purpose: only workers import it (the web process enqueues).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from training.services.export import SPLITS, ExportOptions, Pair, collect_pairs, split_score

#: Prompts whose rankings, texts and rows are held in memory at once. At typical sizes (a few KB of text per
#: prompt and its rollouts, ~6-40 pairs each) a chunk is tens of MB: big enough that per-chunk queries amortise.
PROMPT_CHUNK = 2_000

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def _schema(options: ExportOptions) -> pa.Schema:
    text = pa.list_(_MESSAGE) if options.format == "conversational" else pa.string()
    fields = [
        ("prompt", text),
        ("chosen", text),
        ("rejected", text),
        ("prompt_id", pa.int64()),
        ("chosen_id", pa.int64()),
        ("rejected_id", pa.int64()),
        ("chosen_policy", pa.string()),
        ("rejected_policy", pa.string()),
        ("annotator", pa.int64()),
        ("weight", pa.float64()),
    ]
    if options.ties == "mark":
        fields.append(("tie", pa.bool_()))
    return pa.schema(fields)


def rules_of(options: ExportOptions) -> dict[str, Any]:
    """The options that shape the rows (not the filters that found the rankings): part of the content hash."""
    data = options.to_dict()
    return {key: data[key] for key in ("ties", "all_bad", "flagged", "aggregation", "format")}


def combine_hashes(rules: dict[str, Any], split_digests: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode())
    for name in SPLITS:
        digest.update(f"\n{name}:{split_digests[name]}".encode())
    return digest.hexdigest()


def content_hash_of_files(directory: Path, rules: dict[str, Any]) -> str:
    """Recompute a version's content hash from its JSONL files (what `write_export` computed while writing)."""
    split_digests = {}
    for name in SPLITS:
        digest = hashlib.sha256()
        with open(directory / f"{name}.jsonl", "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        split_digests[name] = digest.hexdigest()
    return combine_hashes(rules, split_digests)


_encode_string = json.encoder.encode_basestring  # the C encoder json.dumps(..., ensure_ascii=False) uses


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return _encode_string(value)
    return json.dumps(value, ensure_ascii=False)


class _SplitWriter:
    """One split's Parquet writer and JSONL file, fed column batches; hashes the JSONL bytes it writes.

    A JSONL line is exactly `json.dumps(row, ensure_ascii=False)` of the row's dict in column order, but built
    from pieces: a prompt or response appears in many pairs, so each text is encoded once per batch.
    """

    def __init__(self, directory: Path, name: str, schema: pa.Schema, clock: StageClock) -> None:
        self.schema = schema
        self.clock = clock
        self.columns = schema.names
        self.parquet = pq.ParquetWriter(directory / f"{name}.parquet", schema)
        self.jsonl: IO[bytes] = open(directory / f"{name}.jsonl", "wb")  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        self.rows = 0
        # '{"prompt": %s, "chosen": %s, ...}': the separators json.dumps uses by default.
        self._template = (
            "{" + ", ".join(_encode_string(name).replace("%", "%%") + ": %s" for name in self.columns) + "}"
        )

    def write(self, columns: dict[str, list]) -> None:
        count = len(columns["prompt"])
        if not count:
            return
        with self.clock.stage("arrow"):
            table = _table(columns, self.schema)
        with self.clock.stage("parquet"):
            self.parquet.write_table(table)
        with self.clock.stage("jsonl"):
            encoded = [_encode_column(name, columns[name]) for name in self.columns]
            data = ("\n".join(self._template % row for row in zip(*encoded, strict=True)) + "\n").encode()
        with self.clock.stage("write+hash"):
            self.jsonl.write(data)
            self.digest.update(data)
        self.rows += count

    def close(self) -> None:
        self.parquet.close()
        self.jsonl.close()


def _table(columns: dict[str, list], schema: pa.Schema) -> pa.Table:
    """The batch as an Arrow table; a plain-text column goes in as its distinct texts plus indices.

    A prompt or response recurs across many pairs: converting each distinct Python string once and letting Arrow
    expand the indices (in C++) is several times faster than converting every row's string.
    """
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_string(field.type):
            positions: dict[int, int] = {}
            distinct: list[str] = []
            indices = []
            for value in values:
                index = positions.get(id(value))
                if index is None:
                    index = positions[id(value)] = len(distinct)
                    distinct.append(value)
                indices.append(index)
            dictionary = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(distinct, pa.string()))
            arrays.append(dictionary.cast(pa.string()))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _encode_column(name: str, values: list) -> list[str]:
    """Each value as json.dumps(..., ensure_ascii=False) writes it; a text object shared by rows is encoded once."""
    if not values:
        return []
    sample = values[0]
    if isinstance(sample, bool):
        return ["true" if value else "false" for value in values]
    if isinstance(sample, int):
        return list(map(int.__repr__, values))
    if isinstance(sample, float):
        return list(map(float.__repr__, values))  # weights are finite: no NaN/Infinity to special-case
    encoded: dict[int, str] = {}
    out = []
    for value in values:
        text = encoded.get(id(value))
        if text is None:
            text = encoded[id(value)] = _encode(value)
        out.append(text)
    return out


class StageClock:
    """Seconds spent per stage of an export, summed over chunks (the worker logs them; the benchmark prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started


@dataclass(frozen=True)
class WrittenExport:
    content_hash: str
    n_rankings: int
    n_train: int
    n_test: int
    n_prompts: int
    lowest_scoring_prompt: int | None  # the prompt that goes to test when the hash put none there
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)


RankingRow = tuple[int, int, list, bool, dict]  # (prompt_id, annotator_id, tiers, all_bad, flags)


def _chunks(rankings: Iterable[RankingRow], size: int) -> Iterator[list[list[RankingRow]]]:
    """Group rankings (ordered by prompt) into lists of at most `size` prompts, each prompt's rankings together."""
    chunk: list[list[RankingRow]] = []
    for _, group in groupby(rankings, key=lambda row: row[0]):
        chunk.append(list(group))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_export(
    *,
    rankings: Iterable[RankingRow],
    options: ExportOptions,
    directory: Path,
    prompts_by_id: Callable[[set[int]], dict[int, dict]],
    rollout_texts_of_prompts: Callable[[set[int]], dict[int, tuple[str, str]]],
    on_progress: Callable[[int, int], None] = lambda rankings, pairs: None,
    forced_test_prompt: int | None = None,
    prompt_chunk: int | None = None,
) -> WrittenExport:
    """Stream `rankings` (ordered by prompt id) into train/test Parquet + JSONL files in `directory`.

    The prompt text and responses are written exactly as stored (byte for byte); chat prompts go out as
    their message lists in the conversational format. The caller refuses chat prompts in the standard
    format before this runs (`export.check_selection`).

    A prompt goes to test when its split score (a hash of its content and the seed) is below
    `test_fraction`, or when it is `forced_test_prompt`: the caller re-runs a small export with the
    lowest-scoring prompt forced when the hash put no prompt in a requested test split.
    """
    schema = _schema(options)
    clock = StageClock()
    writers = {name: _SplitWriter(directory, name, schema, clock) for name in SPLITS}
    conversational = options.format == "conversational"
    n_rankings = n_pairs = 0
    prompts_seen = 0
    lowest: tuple[float, int] | None = None
    chunks = _chunks(rankings, prompt_chunk or PROMPT_CHUNK)
    try:
        while True:
            with clock.stage("rankings"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            with clock.stage("pairs"):
                flat = [ranking for prompt_rankings in chunk for ranking in prompt_rankings]
                pairs, counted = collect_pairs(flat, options)
            n_rankings += counted
            if pairs:
                with clock.stage("texts"):
                    prompts = prompts_by_id({pair.prompt_id for pair in pairs})
                    texts = rollout_texts_of_prompts(set(prompts))
                split_of = {}
                for pid, prompt in prompts.items():
                    score = split_score(prompt["content_hash"], options.seed)
                    lowest = min(lowest, (score, pid)) if lowest else (score, pid)
                    in_test = score < options.test_fraction or pid == forced_test_prompt
                    split_of[pid] = "test" if in_test else "train"
                prompts_seen += len(prompts)
                with clock.stage("rows"):
                    split_rows = _rows(pairs, prompts, texts, split_of, options, conversational)
                for name, columns in split_rows.items():
                    writers[name].write(columns)
                n_pairs += len(pairs)
            on_progress(n_rankings, n_pairs)
    finally:
        for writer in writers.values():
            writer.close()
    digests = {name: writer.digest.hexdigest() for name, writer in writers.items()}
    return WrittenExport(
        content_hash=combine_hashes(rules_of(options), digests),
        n_rankings=n_rankings,
        n_train=writers["train"].rows,
        n_test=writers["test"].rows,
        n_prompts=prompts_seen,
        lowest_scoring_prompt=lowest[1] if lowest else None,
        stage_seconds=dict(clock.seconds),
    )


def _rows(
    pairs: list[Pair],
    prompts: dict[int, dict],
    texts: dict[int, tuple[str, str]],
    split_of: dict[int, str],
    options: ExportOptions,
    conversational: bool,
) -> dict[str, dict[str, list]]:
    names = [
        "prompt",
        "chosen",
        "rejected",
        "prompt_id",
        "chosen_id",
        "rejected_id",
        "chosen_policy",
        "rejected_policy",
        "annotator",
        "weight",
    ]
    if options.ties == "mark":
        names.append("tie")
    out: dict[str, dict[str, list]] = {split: {name: [] for name in names} for split in SPLITS}
    # One object per prompt and per response, shared by all the rows that use it (the JSONL writer encodes each
    # object once).
    chats: dict[int, list[dict[str, str]]] = {}
    answers: dict[int, list[dict[str, str]]] = {}

    def chat(prompt: dict) -> list[dict[str, str]]:
        if prompt["id"] not in chats:
            chats[prompt["id"]] = prompt["messages"] or [{"role": "user", "content": prompt["text"]}]
        return chats[prompt["id"]]

    def answer(rollout_id: int, text: str) -> list[dict[str, str]]:
        if rollout_id not in answers:
            answers[rollout_id] = [{"role": "assistant", "content": text}]
        return answers[rollout_id]

    for pair in sorted(pairs, key=lambda p: (p.prompt_id, p.chosen, p.rejected, p.annotator, p.tie)):
        prompt = prompts[pair.prompt_id]
        rows = out[split_of[pair.prompt_id]]
        chosen_text, chosen_policy = texts[pair.chosen]
        rejected_text, rejected_policy = texts[pair.rejected]
        if conversational:
            rows["prompt"].append(chat(prompt))
            rows["chosen"].append(answer(pair.chosen, chosen_text))
            rows["rejected"].append(answer(pair.rejected, rejected_text))
        else:
            rows["prompt"].append(prompt["text"])
            rows["chosen"].append(chosen_text)
            rows["rejected"].append(rejected_text)
        rows["prompt_id"].append(pair.prompt_id)
        rows["chosen_id"].append(pair.chosen)
        rows["rejected_id"].append(pair.rejected)
        rows["chosen_policy"].append(chosen_policy)
        rows["rejected_policy"].append(rejected_policy)
        rows["annotator"].append(pair.annotator)
        rows["weight"].append(float(pair.weight))
        if options.ties == "mark":
            rows["tie"].append(pair.tie)
    return out
