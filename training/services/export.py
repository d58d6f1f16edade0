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
- `rationale="include"` adds a `rationale` column: the free-text reason of the ranking the pair came from ("" when
  none); per-annotator rows only. Off by default, leaving the bytes and hashes of other exports as they were.
- a task an admin adjudicated (labeling.services.adjudication) is exported as its final order alone, by the
  adjudicator, in place of the human rankings it settled (its note is the rationale); not when the export picks
  annotators or judge rankings only.
The train/test split is by prompt (no prompt on both sides), decided by a hash of the prompt and
the seed, so it is deterministic and stable as data grows.

This module is the web side: it checks a selection and queues an export (`request_export`). The rows
are written in a worker by `export_worker.execute_export`, streaming through `export_writer`; the
web process never imports pyarrow or `datasets`. Prompt and responses are exported byte for byte as
imported: any separator a trainer needs between prompt and completion is added at training time.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from labeling.selectors import (
    RankingSelection,
    adjudication_stats,
    chat_prompts_in_selection,
    export_ranking_json,
    selection_stats,
)
from training.models import DatasetExport, DatasetVersion
from training.ratings import bradley_terry, win_probability
from training.services import dispatch

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

TIES = ("drop", "mark")
ALL_BAD = ("skip", "keep")
FLAGGED = ("never_chosen", "exclude", "ignore")
AGGREGATIONS = ("per_annotator", "majority", "bradley_terry")
FORMATS = ("standard", "conversational")
#: Whose rankings: people's (the default: a reward model learns from humans unless asked), judges' (tool feedback,
#: `auto_rank`), or both.
SOURCES = ("human", "judge", "all")
#: A rollout cut off at max_new_tokens never wins a pair by default: TRL appends EOS to a chosen answer, which would
#: teach the policy to stop mid-sentence (see labeling.services.rollout_finish). It may still be the rejected one.
CUT_OFF = ("never_chosen", "allow")
#: Rankings of gold tasks (labeling.services.gold) check known answers, they are not new labels: out by default.
GOLD = ("exclude", "include")
#: Annotators paused by their gold accuracy: their rankings are kept unless asked (`exclude`: in the set that pauses).
GOLD_PAUSED = ("keep", "exclude")
#: The annotator's free-text reason for their order (`Ranking.rationale`): `include` adds a `rationale` column (""
#: when none was given) to each pair the ranking produced. Off by default so that exports without it keep their
#: bytes and content hashes; per-annotator rows only (an aggregated row stands for several rankings).
RATIONALE = ("omit", "include")
#: Rules left out of `to_dict` at their default, so the options (and hashes) of exports that do not use them are as
#: they were before the rules existed.
_QUIET_DEFAULTS = {"gold": "exclude", "gold_paused": "keep", "rationale": "omit"}
#: The ExportOptions fields a form or an API body passes through as given (the selection's ids need converting).
RULE_FIELDS = (
    "ties",
    "all_bad",
    "flagged",
    "cut_off",
    "aggregation",
    "format",
    "test_fraction",
    "seed",
    "sources",
    "gold",
    "gold_paused",
    "rationale",
)
SPLITS = ("train", "test")
DOWNLOAD_FORMATS = ("jsonl", "parquet")


class ExportError(ValueError):
    """An export refused before it is queued; `field` names the option at fault where there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
    sources: str = "human"
    cut_off: str = "never_chosen"
    gold: str = "exclude"
    gold_paused: str = "keep"
    rationale: str = "omit"

    def __post_init__(self) -> None:
        if not self.prompt_set_ids:
            raise ExportError("Choose at least one prompt set.")
        for name, allowed in (
            ("ties", TIES),
            ("all_bad", ALL_BAD),
            ("flagged", FLAGGED),
            ("aggregation", AGGREGATIONS),
            ("format", FORMATS),
            ("sources", SOURCES),
            ("cut_off", CUT_OFF),
            ("gold", GOLD),
            ("gold_paused", GOLD_PAUSED),
            ("rationale", RATIONALE),
        ):
            if getattr(self, name) not in allowed:
                raise ExportError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}.")
        if not 0 <= self.test_fraction < 1:
            raise ExportError(f"test_fraction must be in [0, 1), not {self.test_fraction}.")
        if self.since and self.until and self.since >= self.until:
            raise ExportError("The time window is empty: 'since' must be before 'until'.")
        if self.rationale == "include" and self.aggregation != "per_annotator":
            raise ExportError(
                "Rationales go with per-annotator rows only: an aggregated row stands for several rankings "
                "(and their reasons). Choose aggregation per_annotator, or omit the rationale.",
                field="rationale",
            )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["prompt_set_ids"] = sorted(self.prompt_set_ids)
        data["annotator_ids"] = sorted(self.annotator_ids)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        for name, default in _QUIET_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data


@dataclass(frozen=True, slots=True)  # a million of these at a time: slots halve their memory
class Pair:
    prompt_id: int
    chosen: int
    rejected: int
    annotator: int  # -1 for aggregated rows
    weight: float = 1.0
    tie: bool = False
    rationale: str = ""  # the ranking's, for rationale="include"


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
    """Expand rankings (prompt_id, annotator_id, tiers, all_bad, flags[, rationale]) and aggregate.

    Returns (pairs, n_rankings). With `rationale="include"` each pair carries its ranking's rationale (a sixth item).
    """
    per_annotator: list[Pair] = []
    n_rankings = 0
    with_rationale = options.rationale == "include"
    for prompt_id, annotator_id, tiers, all_bad, flags, *rest in rankings:
        n_rankings += 1
        rationale = rest[0] if with_rationale else ""
        for better, worse, tie in ranking_pairs(tiers, all_bad=all_bad, flags=flags, options=options):
            per_annotator.append(Pair(prompt_id, better, worse, annotator_id, tie=tie, rationale=rationale))
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


def split_score(prompt_hash: str, seed: int) -> float:
    """A prompt's place in [0, 1): below the test fraction it is a test prompt. Stable as data grows."""
    digest = hashlib.sha256(f"{seed}:{prompt_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def datasets_dir() -> Path:
    path = Path(settings.PREFLOOP_DATA_DIR) / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Selection:
    """What an export would read: enough to refuse an empty one and to recognise one already exported."""

    n_rankings: int
    newest_ranking_id: int
    #: Adjudicated final orders the selection uses (count, latest recording time): recording again replaces one.
    adjudicated: tuple[int, str] = (0, "")

    def fingerprint(self, options: ExportOptions) -> str:
        # Rankings are immutable and ids only grow, so the same options over the same count and newest id
        # select the same rankings: an identical request can be answered with the version it made before.
        payload: dict = {"options": options.to_dict(), "n": self.n_rankings, "newest": self.newest_ranking_id}
        if self.adjudicated[0]:  # absent when none, so selections without adjudications keep their fingerprints
            payload["adjudicated"] = list(self.adjudicated)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_selection(options: ExportOptions) -> Selection:
    """Refuse, before anything is queued, a selection with no rankings or with chats in the standard format."""
    selection = _ranking_selection(options)
    n_rankings, newest = selection_stats(selection)
    adjudicated = adjudication_stats(selection)
    if n_rankings + adjudicated[0] == 0:
        raise ExportError("The selection holds no rankings: check the prompt sets, the time window and annotators.")
    if options.format == "standard":
        chats = chat_prompts_in_selection(selection)
        if chats:
            raise ExportError(
                f"{chats} selected prompt(s) are conversations (message lists): the standard format holds plain "
                "text only. Export them in the conversational format, which keeps every message as imported.",
                field="format",
            )
    return Selection(n_rankings=n_rankings, newest_ranking_id=newest, adjudicated=adjudicated)


def _ranking_selection(options: ExportOptions) -> RankingSelection:
    return RankingSelection(
        prompt_set_ids=list(options.prompt_set_ids),
        since=options.since,
        until=options.until,
        annotator_ids=list(options.annotator_ids),
        sources=options.sources,
        gold=options.gold,
        gold_paused=options.gold_paused,
    )


def selected_rankings(options: ExportOptions) -> Iterator[tuple]:
    """The selection's rankings, grouped by prompt, tiers and flags as JSON text (what the streaming writer needs);
    with `rationale="include"` each row ends with the ranking's rationale."""
    return export_ranking_json(_ranking_selection(options), with_rationale=options.rationale == "include")


@dataclass(frozen=True)
class ExportRequest:
    export: DatasetExport
    existing: bool  # True: an identical export already produced `export.dataset_version`; nothing was queued


def request_export(
    *,
    options: ExportOptions,
    name: str = "",
    created_by: User | None = None,
    then_run: dict | None = None,
    dispatch_now: bool = True,
) -> ExportRequest:
    """Check the selection and queue a background export, or return the finished one it repeats.

    `dispatch_now=False` leaves the queued export for the caller to run in-process (`export_worker.execute_export`),
    as the demo loop, the benchmark and auto-train (already in a worker) do.
    """
    selection = check_selection(options)
    fingerprint = selection.fingerprint(options)
    if then_run is None:
        done = (
            DatasetExport.objects.filter(
                fingerprint=fingerprint, status=DatasetExport.Status.SUCCEEDED, dataset_version__isnull=False
            )
            .select_related("dataset_version")
            .order_by("-finished_at")
            .first()
        )
        if done is not None:
            return ExportRequest(export=done, existing=True)
    export = DatasetExport.objects.create(
        name=name,
        options=options.to_dict(),
        fingerprint=fingerprint,
        rankings_total=selection.n_rankings,
        then_run=then_run,
        created_by=created_by,
    )
    if dispatch_now:
        dispatch.send_export_on_commit(export)
    return ExportRequest(export=export, existing=False)


def options_from_dict(data: dict[str, Any]) -> ExportOptions:
    """Rebuild the options a DatasetExport stored (the inverse of ExportOptions.to_dict)."""
    values = dict(data)
    for key in ("since", "until"):
        values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
    values["prompt_set_ids"] = tuple(values["prompt_set_ids"])
    values["annotator_ids"] = tuple(values.get("annotator_ids") or ())
    return ExportOptions(**values)


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
