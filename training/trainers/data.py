"""Load an exported preference dataset (a `DatasetVersion` directory) into the shape TRL expects.

The export writes `train.parquet` and `test.parquet` with `prompt`/`chosen`/`rejected` in one of TRL's two formats
("standard": strings; "conversational": lists of {"role", "content"} messages) plus bookkeeping columns (`weight`,
`annotator`, `prompt_id`, ...). TRL would try to tokenize or collate those extras, so they are dropped here, and a
malformed export fails now with a message naming the file and column rather than deep inside a tokenizer.
Standard-format prompts get the prompt/completion separator of `formatting.completion_prompt` here, at training
time, so the exported files stay exactly what was imported. Token ids come next, from `tokenization` (the reward and
DPO recipes call it with the run's tokenizer), by the rules generation and reward scoring use too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, LargeList, List, Value
from datasets.table import InMemoryTable

from training.trainers.formatting import completion_prompt

PREFERENCE_COLUMNS: tuple[str, ...] = ("prompt", "chosen", "rejected")
SPLITS: tuple[str, ...] = ("train", "test")

STANDARD = "standard"
CONVERSATIONAL = "conversational"


def load_preference_splits(dataset_path: str | Path) -> DatasetDict:
    """Return {"train", "test"} datasets holding only `prompt`, `chosen` and `rejected`, in one consistent format.

    Raises FileNotFoundError for a missing directory or file, ValueError for missing/mistyped/null columns, mixed
    formats, or an empty train split. An empty test split is allowed here; trainers that need it say so.
    """
    root = Path(dataset_path)
    if not root.is_dir():
        raise FileNotFoundError(f"Preference dataset directory {root} does not exist.")
    splits: dict[str, Dataset] = {}
    formats: dict[str, str] = {}
    for split in SPLITS:
        parquet_file = root / f"{split}.parquet"
        if not parquet_file.is_file():
            raise FileNotFoundError(
                f"{parquet_file} is missing: a preference dataset directory needs "
                f"{' and '.join(f'{name}.parquet' for name in SPLITS)}."
            )
        dataset = _read_parquet(parquet_file)
        _check_columns_present(dataset, parquet_file)
        if len(dataset):  # an empty split written from empty lists has untyped (null) columns: nothing to check
            formats[split] = _check_column_types(dataset, parquet_file)
        if "tie" in dataset.column_names:
            # Tie rows (an export option) say "neither is better": no preference to learn from.
            dataset = dataset.filter(lambda is_tie: not is_tie, input_columns="tie")
        dataset = dataset.select_columns(list(PREFERENCE_COLUMNS))
        if formats.get(split) == STANDARD:
            # The export holds prompts byte for byte as imported; the separator TRL's plain concatenation needs
            # is added here, by the rule generation and reward scoring use too.
            dataset = dataset.map(lambda prompt: {"prompt": completion_prompt(prompt)}, input_columns="prompt")
        splits[split] = dataset
    if len(set(formats.values())) > 1:
        raise ValueError(
            f"train.parquet is {formats['train']} but test.parquet is {formats['test']} in {root}; "
            "both splits must use the same format."
        )
    if len(splits["train"]) == 0:
        raise ValueError(f"{root / 'train.parquet'} has no rows: nothing to train on.")
    return DatasetDict(splits)


def preference_format(dataset: Dataset) -> str:
    """ "standard" or "conversational", from the `chosen` column's type."""
    return _column_format(dataset.features["chosen"]) or "unknown"


def _read_parquet(parquet_file: Path) -> Dataset:
    """Read with pyarrow into memory rather than `Dataset.from_parquet`.

    `from_parquet` fails on an empty file ('Instruction "train" corresponds to no data!'), which is what the exporter
    writes for an empty test split, and it copies every file into the shared HF cache. Human-preference datasets are
    megabytes, so holding them in memory costs nothing.
    """
    return Dataset(InMemoryTable(pq.read_table(parquet_file)))


def _check_columns_present(dataset: Dataset, parquet_file: Path) -> None:
    missing = [name for name in PREFERENCE_COLUMNS if name not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{parquet_file} lacks column(s) {', '.join(missing)}; found {', '.join(dataset.column_names)}. "
            f"A preference dataset needs {', '.join(PREFERENCE_COLUMNS)}."
        )


def _check_column_types(dataset: Dataset, parquet_file: Path) -> str:
    column_formats = {}
    for name in PREFERENCE_COLUMNS:
        column_format = _column_format(dataset.features[name])
        if column_format is None:
            raise ValueError(
                f"Column {name!r} of {parquet_file} has type {dataset.features[name]}; expected strings (standard "
                "format) or lists of {'role', 'content'} messages (conversational format)."
            )
        nulls = dataset.data.column(name).null_count
        if nulls:
            raise ValueError(f"Column {name!r} of {parquet_file} has {nulls} null value(s).")
        column_formats[name] = column_format
    if len(set(column_formats.values())) > 1:
        described = ", ".join(f"{name} is {fmt}" for name, fmt in column_formats.items())
        raise ValueError(f"{parquet_file} mixes formats ({described}); use one format for all three columns.")
    return column_formats["chosen"]


def _column_format(feature: Any) -> str | None:
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return STANDARD
    is_list = isinstance(feature, (List, LargeList))
    if is_list and isinstance(feature.feature, dict) and {"role", "content"} <= set(feature.feature):
        return CONVERSATIONAL
    return None
