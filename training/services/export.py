"""Rankings → pairwise preference rows → an immutable, content-hashed DatasetVersion.

Rules (documented in README.md, recorded in each version's `options`):
- a ranking's tiers expand to every (better, worse) pair across tiers; rollouts in one tier are
  tied: no pair (`ties="drop"`, default) or a row with `tie=True` (`ties="mark"`);
- "all bad" rankings give no pairs (`all_bad="skip"`, default: an order among bad answers teaches
  little) or their order as given (`all_bad="keep"`);
- a flagged rollout is never the chosen one (`flagged="never_chosen"`, default), is removed before
  pairing (`flagged="exclude"`), or is treated like any other (`flagged="ignore"`);
- several annotators of a prompt: one row per annotator's pair (`aggregation="per_annotator"`), one
  row per rollout pair by majority vote (`"majority"`, weight = vote margin), or one row per pair
  ordered by Bradley–Terry strengths fitted on all annotators' pairs (`"bradley_terry"`, weight =
  P(chosen ≻ rejected)).
The train/test split is by prompt (no prompt on both sides), decided by a hash of the prompt and
the seed, so it is deterministic and stable as data grows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from labeling.models import prompt_as_text
from labeling.selectors import export_rankings, prompts_by_id, rollout_texts
from training.models import DatasetVersion
from training.ratings import bradley_terry, win_probability
from training.trainers.formatting import completion_prompt

TIES = ("drop", "mark")
ALL_BAD = ("skip", "keep")
FLAGGED = ("never_chosen", "exclude", "ignore")
AGGREGATIONS = ("per_annotator", "majority", "bradley_terry")
FORMATS = ("standard", "conversational")
SPLITS = ("train", "test")
DOWNLOAD_FORMATS = ("jsonl", "parquet")
_HASH_SLICE = 10_000


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class ExportOptions:
    prompt_set_ids: tuple[int, ...]
    since: datetime | None = None
    until: datetime | None = None
    annotator_ids: tuple[int, ...] = ()
    ties: str = "drop"
    all_bad: str = "skip"
    flagged: str = "never_chosen"
    aggregation: str = "per_annotator"
    format: str = "standard"
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompt_set_ids:
            raise ExportError("Choose at least one prompt set.")
        for name, allowed in (
            ("ties", TIES),
            ("all_bad", ALL_BAD),
            ("flagged", FLAGGED),
            ("aggregation", AGGREGATIONS),
            ("format", FORMATS),
        ):
            if getattr(self, name) not in allowed:
                raise ExportError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}.")
        if not 0 <= self.test_fraction < 1:
            raise ExportError(f"test_fraction must be in [0, 1), not {self.test_fraction}.")
        if self.since and self.until and self.since >= self.until:
            raise ExportError("The time window is empty: 'since' must be before 'until'.")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prompt_set_ids"] = sorted(self.prompt_set_ids)
        data["annotator_ids"] = sorted(self.annotator_ids)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        return data


@dataclass(frozen=True, slots=True)  # a million of these at a time: slots halve their memory
class Pair:
    prompt_id: int
    chosen: int
    rejected: int
    annotator: int  # -1 for aggregated rows
    weight: float = 1.0
    tie: bool = False


@dataclass
class ExportResult:
    version: DatasetVersion
    created: bool
    counts: dict = field(default_factory=dict)


def ranking_pairs(
    tiers: list[list[int]], *, all_bad: bool, flags: dict, options: ExportOptions
) -> Iterator[tuple[int, int, bool]]:
    """(better, worse, is_tie) for one ranking, under the export rules."""
    if all_bad and options.all_bad == "skip":
        return
    flagged = {int(k) for k in flags} if options.flagged != "ignore" else set()
    if options.flagged == "exclude":
        tiers = [[r for r in tier if r not in flagged] for tier in tiers]
        tiers = [tier for tier in tiers if tier]
    for i, better_tier in enumerate(tiers):
        if options.ties == "mark":
            ordered = sorted(better_tier)
            for a_index, a in enumerate(ordered):
                for b in ordered[a_index + 1 :]:
                    yield a, b, True
        for worse_tier in tiers[i + 1 :]:
            for better in better_tier:
                if better in flagged:
                    continue
                for worse in worse_tier:
                    yield better, worse, False


def collect_pairs(rankings: Iterable[tuple], options: ExportOptions) -> tuple[list[Pair], int]:
    """Expand rankings (prompt_id, annotator_id, tiers, all_bad, flags) and aggregate; returns (pairs, n_rankings)."""
    per_annotator: list[Pair] = []
    n_rankings = 0
    for prompt_id, annotator_id, tiers, all_bad, flags in rankings:
        n_rankings += 1
        for better, worse, tie in ranking_pairs(tiers, all_bad=all_bad, flags=flags, options=options):
            per_annotator.append(Pair(prompt_id, better, worse, annotator_id, tie=tie))
    if options.aggregation == "per_annotator":
        return per_annotator, n_rankings
    return _aggregate(per_annotator, options), n_rankings


def _aggregate(pairs: list[Pair], options: ExportOptions) -> list[Pair]:
    by_prompt: dict[int, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_prompt[pair.prompt_id].append(pair)
    out: list[Pair] = []
    for prompt_id, prompt_pairs in by_prompt.items():
        votes: dict[tuple[int, int], int] = defaultdict(int)
        for p in prompt_pairs:
            if not p.tie:
                votes[(p.chosen, p.rejected)] += 1
        met = {tuple(sorted(key)) for key in votes} | {
            tuple(sorted((p.chosen, p.rejected))) for p in prompt_pairs if p.tie
        }
        strengths = {}
        if options.aggregation == "bradley_terry" and votes:
            strengths = bradley_terry(list(votes), weights=list(votes.values()))
        for a, b in sorted(met):
            ab, ba = votes[(a, b)], votes[(b, a)]
            if options.aggregation == "majority":
                if ab == ba:
                    if options.ties == "mark":
                        out.append(Pair(prompt_id, a, b, -1, weight=0.0, tie=True))
                    continue
                winner, loser = (a, b) if ab > ba else (b, a)
                out.append(Pair(prompt_id, winner, loser, -1, weight=abs(ab - ba) / (ab + ba)))
            else:
                if ab + ba == 0:
                    if options.ties == "mark":
                        out.append(Pair(prompt_id, a, b, -1, weight=0.5, tie=True))
                    continue
                sa, sb = strengths.get(a, 0.0), strengths.get(b, 0.0)
                winner, loser = (a, b) if (sa, ab) >= (sb, ba) else (b, a)
                out.append(
                    Pair(
                        prompt_id,
                        winner,
                        loser,
                        -1,
                        weight=round(win_probability(strengths.get(winner, 0.0), strengths.get(loser, 0.0)), 6),
                    )
                )
    return out


def _split_score(prompt_hash: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{prompt_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(prompt_hashes: dict[int, str], *, seed: int, test_fraction: float) -> dict[int, str]:
    """prompt id → "train" | "test", by a hash of the prompt: stable as data grows.

    With few prompts the hash may put none in test; then the lowest-scoring prompt goes there, so a
    requested test split is never silently empty (a trainer evaluating on it would refuse the run).
    """
    scores = {pid: _split_score(digest, seed) for pid, digest in prompt_hashes.items()}
    splits = {pid: "test" if score < test_fraction else "train" for pid, score in scores.items()}
    if test_fraction > 0 and len(scores) > 1 and "test" not in splits.values():
        splits[min(scores, key=lambda pid: (scores[pid], pid))] = "test"
    return splits


def _message_list(prompt) -> list[dict]:
    return prompt["messages"] if prompt["messages"] is not None else [{"role": "user", "content": prompt["text"]}]


def _prompt_text(prompt) -> str:
    return completion_prompt(prompt_as_text(prompt["text"], prompt["messages"]))


def build_rows(pairs: list[Pair], options: ExportOptions) -> dict[str, dict[str, list]]:
    """Columnar rows per split in TRL's preference format, plus provenance columns trainers drop."""
    prompts = prompts_by_id({p.prompt_id for p in pairs})
    texts = rollout_texts({r for p in pairs for r in (p.chosen, p.rejected)})
    columns = [
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
        columns.append("tie")
    splits = {name: {c: [] for c in columns} for name in SPLITS}
    conversational = options.format == "conversational"
    split_of = assign_splits(
        {pid: prompt["content_hash"] for pid, prompt in prompts.items()},
        seed=options.seed,
        test_fraction=options.test_fraction,
    )
    for pair in sorted(pairs, key=lambda p: (p.prompt_id, p.chosen, p.rejected, p.annotator, p.tie)):
        prompt = prompts[pair.prompt_id]
        rows = splits[split_of[pair.prompt_id]]
        chosen_text, chosen_policy = texts[pair.chosen]
        rejected_text, rejected_policy = texts[pair.rejected]
        if conversational:
            rows["prompt"].append(_message_list(prompt))
            rows["chosen"].append([{"role": "assistant", "content": chosen_text}])
            rows["rejected"].append([{"role": "assistant", "content": rejected_text}])
        else:
            rows["prompt"].append(_prompt_text(prompt))
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
    return splits


def content_hash(splits: dict[str, dict[str, list]], options: ExportOptions) -> str:
    """Hash of what a trainer sees (rows per split, format, rules) — not of the filters that found them."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {k: options.to_dict()[k] for k in ("ties", "all_bad", "flagged", "aggregation", "format")}, sort_keys=True
        ).encode()
    )
    for name in SPLITS:
        digest.update(name.encode())
        for column in sorted(splits[name]):
            digest.update(column.encode())
            values = splits[name][column]
            # In slices: one json.dumps of a million texts would hold a second copy of them all.
            for start in range(0, len(values), _HASH_SLICE):
                digest.update(
                    json.dumps(values[start : start + _HASH_SLICE], ensure_ascii=False, separators=(",", ":")).encode()
                )
    return digest.hexdigest()


def datasets_dir() -> Path:
    path = Path(settings.PREFLOOP_DATA_DIR) / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write(splits: dict[str, dict[str, list]], meta: dict, final_dir: Path) -> None:
    """Write train/test as Parquet + JSONL with `datasets`, in a staging dir renamed into place."""
    import datasets  # worker-side dependency; kept out of module import for the web process

    staging = final_dir.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        for name in SPLITS:
            split = datasets.Dataset.from_dict(splits[name])
            split.to_parquet(str(staging / f"{name}.parquet"))
            split.to_json(str(staging / f"{name}.jsonl"), lines=True, force_ascii=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            os.rename(staging, final_dir)
        except OSError:
            if not final_dir.exists():
                raise
            shutil.rmtree(staging)  # same hash, same content: an earlier export already put it there
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_dataset(
    *, options: ExportOptions, name: str = "", created_by: AbstractBaseUser | None = None
) -> ExportResult:
    """Export the rankings `options` select; an identical export returns the existing version."""
    rankings = export_rankings(
        prompt_set_ids=list(options.prompt_set_ids),
        since=options.since,
        until=options.until,
        annotator_ids=list(options.annotator_ids),
    )
    pairs, n_rankings = collect_pairs(rankings, options)
    if not pairs:
        raise ExportError(f"The selection holds no comparisons ({n_rankings} rankings, no pairs under these rules).")
    splits = build_rows(pairs, options)
    digest = content_hash(splits, options)
    counts = {"rankings": n_rankings, "train": len(splits["train"]["prompt"]), "test": len(splits["test"]["prompt"])}
    existing = DatasetVersion.objects.filter(content_hash=digest).first()
    if existing is not None:
        return ExportResult(existing, created=False, counts=counts)

    final_dir = datasets_dir() / digest
    meta = {"content_hash": digest, "options": options.to_dict(), "counts": counts, "format": options.format}
    if not final_dir.exists():
        _write(splits, meta, final_dir)
    try:
        with transaction.atomic():
            version = DatasetVersion.objects.create(
                name=name or f"pairs-{digest[:8]}",
                content_hash=digest,
                options=options.to_dict(),
                path=str(final_dir),
                n_rankings=n_rankings,
                n_train=counts["train"],
                n_test=counts["test"],
                created_by=created_by,
            )
            version.prompt_sets.set(options.prompt_set_ids)
    except IntegrityError:
        return ExportResult(DatasetVersion.objects.get(content_hash=digest), created=False, counts=counts)
    return ExportResult(version, created=True, counts=counts)


def dataset_file(version: DatasetVersion, split: str, fmt: str) -> Path:
    """The file holding one split of a version. Only whitelisted names, so no path can be smuggled in.

    Raises FileNotFoundError for an unknown split/format or a file missing on this server.
    """
    if split not in SPLITS or fmt not in DOWNLOAD_FORMATS:
        raise FileNotFoundError(f"Unknown split or format {split}.{fmt}; use train|test and jsonl|parquet.")
    path = Path(version.path) / f"{split}.{fmt}"
    if not path.is_file():
        raise FileNotFoundError(f"{split}.{fmt} is missing from this version's directory.")
    return path
