"""The worker half of an export: rankings streamed from the database → Parquet + JSONL, hashed as written.

Memory is bounded by one chunk of prompts (their rankings, rollout texts and pair columns), never by the size
of the export: rankings arrive ordered by prompt, a chunk is expanded into pair columns (`export_pairs`;
aggregation only ever needs one prompt's pairs), its rows are appended to the open Parquet writers and JSONL
files of their split in writes of at most WRITE_BYTES of text, and the chunk is dropped.

Rows are built column-wise, never as Python objects: each distinct prompt, response and policy of a chunk is
converted to Arrow and JSON-encoded once, and Arrow's `take` lays them out per row (`export_columns`). A JSONL
line is exactly `json.dumps(row, ensure_ascii=False)` of the row's dict in column order, assembled by
Arrow from those pre-encoded pieces: the joined array's data buffer is the file's bytes.

The content hash is computed from the JSONL bytes as they are written: sha256 over the export rules and, per
split, the sha256 of that split's JSONL file. Anyone can recompute it from the files (`content_hash_of_files`),
identical content always yields the same version, and the rows are in the documented order (by prompt, chosen,
rejected, annotator). `tests/training/test_export_writer.py` holds the files to a row-by-row reference.

This module imports pyarrow at the top on purpose: only workers import it (the web process enqueues).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.services.export import SPLITS, ExportOptions, split_score
from training.services.export_columns import (
    MESSAGE,
    PromptRow,
    RolloutRow,
    Texts,
    encode_string,
    encoded_strings,
    prompt_texts,
    rollout_texts,
    row_columns,
)
from training.services.export_pairs import PairColumns, RankingJson, pair_columns

#: Prompts whose rankings, texts and pair columns are held in memory at once. At typical sizes (a few KB of text
#: per prompt and its rollouts, ~6-40 pairs each) a chunk is tens of MB: big enough that per-chunk queries amortise.
PROMPT_CHUNK = 2_000
#: Text bytes (prompt + chosen + rejected, JSON-encoded) per Parquet/JSONL write. Each write holds its rows twice
#: (Arrow columns, JSONL buffer): this bounds that memory whatever the texts' lengths, and stays far below the
#: 2 GiB an Arrow string array can address.
WRITE_BYTES = 64 << 20


def _schema(options: ExportOptions) -> pa.Schema:
    text = pa.list_(MESSAGE) if options.format == "conversational" else pa.string()
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
    if options.rationale == "include":
        fields.append(("rationale", pa.string()))
    return pa.schema(fields)


def rules_of(options: ExportOptions) -> dict[str, Any]:
    """The options that shape the rows (not the filters that found the rankings): part of the content hash.

    `rationale` is named only when included (it is a quiet default of `to_dict`), so hashes without it are unchanged.
    """
    data = options.to_dict()
    keys = ("ties", "all_bad", "flagged", "cut_off", "aggregation", "format", "rationale")
    return {key: data[key] for key in keys if key in data}


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


class StageClock:
    """Wall and CPU seconds per stage of an export, summed over chunks (the worker logs them, the benchmark prints
    them). CPU seconds are the running thread's own: unlike the wall time they barely move with other load."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.cpu_seconds[name] += time.thread_time() - cpu_started


class _SplitWriter:
    """One split's Parquet writer and JSONL file, fed pair columns; hashes the JSONL bytes it writes."""

    def __init__(self, directory: Path, name: str, schema: pa.Schema, clock: StageClock) -> None:
        self.schema = schema
        self.clock = clock
        self.parquet = pq.ParquetWriter(directory / f"{name}.parquet", schema)
        self.jsonl: IO[bytes] = open(directory / f"{name}.jsonl", "wb")  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        self.rows = 0
        # '{"prompt": ', ', "chosen": ', …, '}\n': the separators json.dumps uses by default, around each value.
        keys = [encode_string(name) for name in schema.names]
        self._pieces = ["{" + keys[0] + ": "] + [", " + key + ": " for key in keys[1:]] + ["}\n"]

    def write(self, pairs: PairColumns, prompts: Texts, rollouts: Texts) -> None:
        with self.clock.stage("columns"):
            columns = row_columns(pairs, prompts, rollouts, self.schema)
        with self.clock.stage("parquet"):
            self.parquet.write_table(pa.Table.from_arrays([values for values, _ in columns], schema=self.schema))
        with self.clock.stage("jsonl"):
            pieces: list[Any] = []
            for piece, (_, encoded) in zip(self._pieces, columns, strict=False):
                pieces += [pa.scalar(piece), encoded]
            lines = pc.binary_join_element_wise(*pieces, pa.scalar(self._pieces[-1]), "")
            if lines.null_count:  # a value Arrow could not place would silently drop its line
                raise ValueError("An export row has a missing value; no file was written.")
            offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
            data = memoryview(lines.buffers()[2])[offsets[0] : offsets[-1]]
        with self.clock.stage("write+hash"):
            self.jsonl.write(data)
            self.digest.update(data)
        self.rows += len(pairs)

    def close(self) -> None:
        self.parquet.close()
        self.jsonl.close()


@dataclass(frozen=True)
class WrittenExport:
    content_hash: str
    n_rankings: int
    n_train: int
    n_test: int
    n_prompts: int
    lowest_scoring_prompt: int | None  # the prompt that goes to test when the hash put none there
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def _chunks(rankings: Iterable[RankingJson], size: int) -> Iterator[list[RankingJson]]:
    """Group rankings (ordered by prompt) into lists of at most `size` prompts, each prompt's rankings together."""
    chunk: list[RankingJson] = []
    prompts = 0
    for _, group in groupby(rankings, key=lambda row: row[0]):
        chunk.extend(group)
        prompts += 1
        if prompts >= size:
            yield chunk
            chunk, prompts = [], 0
    if chunk:
        yield chunk


def _write_slices(pairs: PairColumns, prompts: Texts, rollouts: Texts) -> Iterator[PairColumns]:
    """`pairs` cut into consecutive runs of at most WRITE_BYTES of text (a single longer row goes alone)."""
    text_bytes = (
        prompts.json_bytes[prompts.rows(pairs.prompt_id)]
        + rollouts.json_bytes[rollouts.rows(pairs.chosen)]
        + rollouts.json_bytes[rollouts.rows(pairs.rejected)]
    )
    if pairs.rationale is not None:  # up to RATIONALE_MAX_CHARS a row: can outweigh short texts
        text_bytes = text_bytes + pc.binary_length(encoded_strings(pairs.rationale)[1]).to_numpy(zero_copy_only=False)
    ends = np.cumsum(text_bytes)
    start = 0
    while start < len(pairs):
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + WRITE_BYTES, "right")), start + 1)
        yield pairs.take(np.arange(start, stop))
        start = stop


#: Chunks handed to the writer thread and not yet written: one being written, one waiting. More would only hold
#: memory: the reader is never much ahead of the writer for long.
_CHUNKS_IN_FLIGHT = 2


def _write_chunk(
    writers: dict[str, _SplitWriter], pairs: PairColumns, prompts: Texts, rollouts: Texts, prompt_in_test: np.ndarray
) -> None:
    """Append a chunk's rows to their split's files (in the writer thread)."""
    pair_in_test = prompt_in_test[prompts.rows(pairs.prompt_id)]
    for name, rows in (("train", ~pair_in_test), ("test", pair_in_test)):
        for part in _write_slices(pairs.take(np.flatnonzero(rows)), prompts, rollouts):
            writers[name].write(part, prompts, rollouts)


def write_export(
    *,
    rankings: Iterable[RankingJson],
    options: ExportOptions,
    directory: Path,
    prompt_rows: Callable[[list[int]], list[PromptRow]],
    rollout_rows: Callable[[list[int]], list[RolloutRow]],
    cut_off_rollouts: Callable[[list[int]], list[int]] | None = None,
    on_progress: Callable[[int, int], None] = lambda rankings, pairs: None,
    forced_test_prompt: int | None = None,
    prompt_chunk: int | None = None,
) -> WrittenExport:
    """Stream `rankings` (ordered by prompt id) into train/test Parquet + JSONL files in `directory`.

    `prompt_rows` and `rollout_rows` read a chunk's prompts and their rollouts (sorted by id); `cut_off_rollouts`
    names those of a chunk's rollouts that were cut off at max_new_tokens, which `options.cut_off="never_chosen"`
    keeps out of the chosen column. The prompt text
    and responses are written exactly as stored (byte for byte); chat prompts go out as their message lists in
    the conversational format. The caller refuses chat prompts in the standard format before this runs
    (`export.check_selection`).

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
        # One writer thread lays out, compresses, hashes and writes a chunk (Arrow, Parquet, hashlib and file writes
        # release the GIL) while this thread reads and decodes the next one from the database: the database work
        # (this thread's connection, so it sees this transaction's rows) overlaps the encoding.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-writer") as pool:
            pending: deque[Future[None]] = deque()
            try:
                while True:
                    with clock.stage("rankings"):
                        chunk = next(chunks, None)
                    if chunk is None:
                        break
                    with clock.stage("pairs"):
                        pairs = pair_columns(chunk, options)
                    n_rankings += len(chunk)
                    if len(pairs) and options.cut_off == "never_chosen" and cut_off_rollouts is not None:
                        with clock.stage("texts"):
                            cut_off = cut_off_rollouts(np.unique(pairs.prompt_id).tolist())
                        if cut_off:
                            pairs = pairs.take(np.flatnonzero(~np.isin(pairs.chosen, np.asarray(cut_off))))
                    if len(pairs):
                        prompt_ids = np.unique(pairs.prompt_id)
                        with clock.stage("texts"):
                            prompt_data = prompt_rows(prompt_ids.tolist())
                            rollout_data = rollout_rows(prompt_ids.tolist())
                        with clock.stage("encode texts"):
                            prompts = prompt_texts(prompt_data, conversational)
                            rollouts = rollout_texts(rollout_data, conversational)
                        in_test = np.zeros(len(prompt_ids), dtype=bool)
                        for index, (pid, _, _, content_hash) in enumerate(prompt_data):
                            score = split_score(content_hash, options.seed)
                            lowest = min(lowest, (score, pid)) if lowest else (score, pid)
                            in_test[index] = score < options.test_fraction or pid == forced_test_prompt
                        prompts_seen += len(prompt_data)
                        if len(pending) >= _CHUNKS_IN_FLIGHT:
                            with clock.stage("waiting for the writer"):
                                pending.popleft().result()
                        pending.append(pool.submit(_write_chunk, writers, pairs, prompts, rollouts, in_test))
                        n_pairs += len(pairs)
                    on_progress(n_rankings, n_pairs)
                while pending:
                    with clock.stage("waiting for the writer"):
                        pending.popleft().result()
            except BaseException:
                for future in pending:  # the files are discarded anyway: write no more of them
                    future.cancel()
                raise
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
        stage_cpu_seconds=dict(clock.cpu_seconds),
    )
