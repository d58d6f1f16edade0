"""The streamed export writer against a row-by-row reference: same JSONL bytes, same Parquet rows, same hash.

The writer builds its files from pre-encoded pieces, in chunks of prompts, for speed; the reference here builds
every row as a dict and writes `json.dumps(row, ensure_ascii=False)` per line and `pa.Table.from_pylist`, which
is what the files are defined to be. Texts carry what JSON escaping and `%`-templates get wrong (quotes,
backslashes, control characters, U+2028, `%s`), rankings carry ties, flags and "all bad", and the writer runs
with tiny chunks so that prompts and splits cross chunk boundaries.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from labeling.models import Assignment, Prompt, PromptSet, Ranking, RankingTask, Rollout
from labeling.services.importing import import_file
from tests.factories import AnnotatorFactory, PromptSetFactory
from training.services import export_writer
from training.services.export import ExportOptions, collect_pairs, split_score
from training.services.export_worker import export_dataset

pytestmark = pytest.mark.django_db

TRICKY_TEXTS = (
    'He said "hi" \\ and left',
    "tab\there, new\nline, return\r\n",
    "control \x01\x08\x0c\x1f and delete \x7f",
    "Ünïcode ☃ and 😀 outside the BMP",
    "line\u2028separator\u2029paragraph\x85next line",
    "100% %s %(name)s {} {0}",
    " ",
    "",
)
TRICKY_POLICIES = ("p0", 'pol"icy\\1', "政策 %d")
CHAT = [
    {"role": "system", "content": 'Be "brief".\n'},
    {"role": "user", "content": "Hi\u2029there \\ %s"},
    {"role": "assistant", "content": "Hello!\t"},
    {"role": "user", "content": "Why is the sky blue?"},
]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    """Three prompts per chunk and ~100 bytes of text per write: every export here spans several chunks and
    writes, and some rows are longer than a write on their own."""
    monkeypatch.setattr(export_writer, "PROMPT_CHUNK", 3)
    monkeypatch.setattr(export_writer, "WRITE_BYTES", 100)


def ranked_prompt_set(*, n_prompts: int, k: int, overlap: int, seed: int, name: str = "") -> PromptSet:
    """A set whose every task was ranked (in a random order) by `overlap` annotators.

    The rankings are written directly, not through the queue: what is under test is how rankings become files.
    """
    rng = random.Random(seed)
    prompt_set = PromptSetFactory(rollouts_per_task=k, overlap=overlap, name=name or f"export writer {seed}")
    lines = [
        json.dumps({"prompt": f"Question {seed}-{i}?", "responses": [f"answer {i}-{j}" for j in range(k)]})
        for i in range(n_prompts)
    ]
    import_file(prompt_set=prompt_set, data="\n".join(lines))
    annotators = AnnotatorFactory.create_batch(overlap)
    now = timezone.now()
    tasks = RankingTask.objects.filter(prompt_set=prompt_set).order_by("id")  # the import built one per prompt
    assert tasks.count() == n_prompts
    for task in tasks:
        rollout_ids = sorted(task.rollouts.values_list("id", flat=True))
        for annotator in annotators:
            assignment = Assignment.objects.create(
                task=task,
                annotator=annotator,
                status=Assignment.Status.SUBMITTED,
                display_order=rollout_ids,
                leased_at=now,
                leased_until=now,
                finished_at=now,
            )
            Ranking.objects.create(
                assignment=assignment,
                task=task,
                annotator=annotator,
                tiers=[[rid] for rid in rng.sample(rollout_ids, k)],
                display_order=rollout_ids,
                time_spent_ms=1000,
            )
    tasks.update(active_count=overlap, completed_count=overlap, status=RankingTask.Status.DONE)
    return prompt_set


def scramble(prompt_set: PromptSet, *, seed: int, chats: bool = False) -> None:
    """Tricky texts and policies (some shared by several rollouts), and rankings with ties, flags and all-bad."""
    rng = random.Random(seed)
    for prompt in Prompt.objects.filter(prompt_set=prompt_set):
        prompt.text = "" if chats else f"{rng.choice(TRICKY_TEXTS)} #{prompt.pk}"
        prompt.messages = (
            [*CHAT[:3], {"role": "user", "content": f"{rng.choice(TRICKY_TEXTS)} #{prompt.pk}"}] if chats else None
        )
        prompt.save(update_fields=["text", "messages"])
    for rollout in Rollout.objects.filter(prompt__prompt_set=prompt_set):
        rollout.text = rng.choice(TRICKY_TEXTS) + (f" #{rollout.pk}" if rng.random() < 0.5 else "")
        rollout.policy = rng.choice(TRICKY_POLICIES)
        rollout.save(update_fields=["text", "policy"])
    for ranking in Ranking.objects.filter(task__prompt_set=prompt_set):
        tiers = [list(tier) for tier in ranking.tiers]
        while len(tiers) > 1 and rng.random() < 0.4:  # merge neighbouring tiers into ties
            at = rng.randrange(len(tiers) - 1)
            tiers[at : at + 2] = [tiers[at] + tiers[at + 1]]
        rng.shuffle(tiers[0])
        flat = [rid for tier in tiers for rid in tier]
        flags = {str(rid): rng.choice(("harmful", "broken")) for rid in flat if rng.random() < 0.2}
        Ranking.objects.filter(pk=ranking.pk).update(tiers=tiers, flags=flags, all_bad=rng.random() < 0.15)


def reference_export(options: ExportOptions) -> tuple[dict[str, bytes], dict[str, pa.Table], str]:
    """The export by its definition, row by row: (JSONL bytes per split, Arrow table per split, content hash)."""
    rankings = Ranking.objects.filter(task__prompt_set_id__in=options.prompt_set_ids)
    if options.since:
        rankings = rankings.filter(created_at__gte=options.since)
    if options.until:
        rankings = rankings.filter(created_at__lt=options.until)
    if options.annotator_ids:
        rankings = rankings.filter(annotator_id__in=options.annotator_ids)
    with_rationale = options.rationale == "include"
    rows_in = rankings.order_by("task__prompt_id", "id").values_list(
        "task__prompt_id", "annotator_id", "tiers", "all_bad", "flags", *(["rationale"] if with_rationale else [])
    )
    pairs, _ = collect_pairs(list(rows_in), options)
    prompts = Prompt.objects.in_bulk({pair.prompt_id for pair in pairs})
    rollouts = Rollout.objects.in_bulk({rid for pair in pairs for rid in (pair.chosen, pair.rejected)})
    scores = {pid: split_score(prompt.content_hash, options.seed) for pid, prompt in prompts.items()}
    test = {pid for pid, score in scores.items() if score < options.test_fraction}
    if options.test_fraction > 0 and not test and len(prompts) > 1:
        test = {min(scores, key=lambda pid: (scores[pid], pid))}
    conversational = options.format == "conversational"
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for pair in sorted(pairs, key=lambda p: (p.prompt_id, p.chosen, p.rejected, p.annotator, p.tie)):
        prompt, chosen, rejected = prompts[pair.prompt_id], rollouts[pair.chosen], rollouts[pair.rejected]
        row = {
            "prompt": (prompt.messages or [{"role": "user", "content": prompt.text}])
            if conversational
            else prompt.text,
            "chosen": [{"role": "assistant", "content": chosen.text}] if conversational else chosen.text,
            "rejected": [{"role": "assistant", "content": rejected.text}] if conversational else rejected.text,
            "prompt_id": pair.prompt_id,
            "chosen_id": pair.chosen,
            "rejected_id": pair.rejected,
            "chosen_policy": chosen.policy,
            "rejected_policy": rejected.policy,
            "annotator": pair.annotator,
            "weight": float(pair.weight),
        }
        if options.ties == "mark":
            row["tie"] = pair.tie
        if with_rationale:
            row["rationale"] = pair.rationale
        rows["test" if pair.prompt_id in test else "train"].append(row)
    text = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])) if conversational else pa.string()
    fields = [("prompt", text), ("chosen", text), ("rejected", text)]
    fields += [(name, pa.int64()) for name in ("prompt_id", "chosen_id", "rejected_id")]
    fields += [("chosen_policy", pa.string()), ("rejected_policy", pa.string()), ("annotator", pa.int64())]
    fields += [("weight", pa.float64())] + ([("tie", pa.bool_())] if options.ties == "mark" else [])
    fields += [("rationale", pa.string())] if with_rationale else []
    schema = pa.schema(fields)
    jsonl = {
        split: "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[split]).encode() for split in rows
    }
    tables = {split: pa.Table.from_pylist(rows[split], schema=schema) for split in rows}
    rules = {key: options.to_dict()[key] for key in ("ties", "all_bad", "flagged", "cut_off", "aggregation", "format")}
    if with_rationale:  # named in the hash only when included, so hashes without it are as before
        rules["rationale"] = "include"
    digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode())
    for split in ("train", "test"):
        digest.update(f"\n{split}:{hashlib.sha256(jsonl[split]).hexdigest()}".encode())
    return jsonl, tables, digest.hexdigest()


def assert_matches_reference(options: ExportOptions) -> None:
    jsonl, tables, content_hash = reference_export(options)
    assert jsonl["train"], "the reference holds no rows: the comparison would prove nothing"
    version = export_dataset(options=options).version
    path = Path(version.path)
    for split in ("train", "test"):
        written = (path / f"{split}.jsonl").read_bytes()
        assert written == jsonl[split], f"{split}.jsonl differs from the reference under {options}"
        table = pq.read_table(path / f"{split}.parquet")
        assert table.schema == tables[split].schema
        assert table.equals(tables[split]), f"{split}.parquet differs from the reference under {options}"
    assert (version.n_train, version.n_test) == (tables["train"].num_rows, tables["test"].num_rows)
    assert version.content_hash == content_hash


# Every ties x aggregation (they change the columns and weights the writer lays out), each flag and all-bad rule
# twice. Which pairs each rule yields is checked exhaustively, without a database, in test_export_pairs.py.
_SHAPES = [
    (ties, aggregation) for ties in ("drop", "mark") for aggregation in ("per_annotator", "majority", "bradley_terry")
]
_FLAG_RULES = [("never_chosen", "skip"), ("exclude", "keep"), ("ignore", "skip")] * 2
RULES = [
    {"ties": ties, "aggregation": aggregation, "flagged": flagged, "all_bad": all_bad}
    for (ties, aggregation), (flagged, all_bad) in zip(_SHAPES, _FLAG_RULES, strict=True)
]


def test_the_streamed_standard_export_equals_the_row_by_row_reference_under_every_rule():
    """Two prompt sets with tricky texts, ties, flags and all-bad: identical bytes, rows and hash under every rule."""
    sets = [ranked_prompt_set(n_prompts=7, k=4, overlap=3, seed=seed, name=f"set {seed}") for seed in (1, 2)]
    for seed, prompt_set in enumerate(sets):
        scramble(prompt_set, seed=seed)
    for rules in RULES:  # one data set for all of them: building it is most of the cost
        assert_matches_reference(
            ExportOptions(prompt_set_ids=tuple(s.pk for s in sets), test_fraction=0.3, seed=5, **rules)
        )


@pytest.mark.parametrize("ties", ["drop", "mark"])
def test_the_streamed_conversational_export_equals_the_row_by_row_reference(ties):
    """Chat prompts and wrapped answers: identical bytes, rows and hash."""
    prompt_set = ranked_prompt_set(n_prompts=8, k=4, overlap=2, seed=3)
    scramble(prompt_set, seed=3, chats=True)
    assert_matches_reference(
        ExportOptions(prompt_set_ids=(prompt_set.pk,), format="conversational", ties=ties, test_fraction=0.25)
    )
    plain = ranked_prompt_set(n_prompts=5, k=3, overlap=2, seed=4, name="plain")
    scramble(plain, seed=4)
    assert_matches_reference(ExportOptions(prompt_set_ids=(plain.pk,), format="conversational", ties=ties))
    both = (prompt_set.pk, plain.pk)  # chats and plain prompts in one chunk
    assert_matches_reference(ExportOptions(prompt_set_ids=both, format="conversational", ties=ties, test_fraction=0.2))


def test_annotator_and_time_filters_select_the_same_rows_as_the_reference():
    """Only the chosen annotators' rankings inside the window are exported."""
    prompt_set = ranked_prompt_set(n_prompts=8, k=3, overlap=3, seed=6)
    rankings = list(Ranking.objects.filter(task__prompt_set=prompt_set).order_by("id"))
    start = rankings[0].created_at
    for offset, ranking in enumerate(rankings):  # one minute apart, so a window cuts the set
        Ranking.objects.filter(pk=ranking.pk).update(created_at=start + timedelta(minutes=offset))
    annotators = sorted({ranking.annotator_id for ranking in rankings})[:2]
    options = ExportOptions(
        prompt_set_ids=(prompt_set.pk,),
        annotator_ids=tuple(annotators),
        since=start + timedelta(minutes=3),
        until=start + timedelta(minutes=len(rankings) - 3),
        test_fraction=0.0,
    )
    assert_matches_reference(options)
    all_rows = reference_export(ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0))[1]["train"]
    assert reference_export(options)[1]["train"].num_rows < all_rows.num_rows  # the filters did cut rows


def test_the_reference_comparison_sees_a_single_changed_byte():
    """Negative control: after one response gains a character, the earlier files no longer match the reference."""
    prompt_set = ranked_prompt_set(n_prompts=4, k=3, overlap=1, seed=8)
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0)
    version = export_dataset(options=options).version
    rollout = Rollout.objects.filter(prompt__prompt_set=prompt_set).first()
    Rollout.objects.filter(pk=rollout.pk).update(text=rollout.text + "!")
    jsonl, tables, content_hash = reference_export(options)
    path = Path(version.path)
    assert (path / "train.jsonl").read_bytes() != jsonl["train"]
    assert not pq.read_table(path / "train.parquet").equals(tables["train"])
    assert version.content_hash != content_hash


def test_a_failure_in_the_writer_thread_fails_the_export_and_leaves_no_files():
    """A ranking naming a rollout that is gone: the export fails with the reason, no version, no directory."""
    from training.models import DatasetExport, DatasetVersion
    from training.services.export import ExportError, datasets_dir

    prompt_set = ranked_prompt_set(n_prompts=9, k=3, overlap=1, seed=9)
    gone = Ranking.objects.filter(task__prompt_set=prompt_set).order_by("-id").first().tiers[0][0]
    Rollout.objects.filter(pk=gone).delete()
    with pytest.raises(ExportError, match=f"not found with their prompts: \\[{gone}\\]"):
        export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,)))
    assert DatasetExport.objects.get().status == DatasetExport.Status.FAILED
    assert not DatasetVersion.objects.exists() and not list(datasets_dir().iterdir())


def give_rationales(prompt_set: PromptSet, *, seed: int) -> None:
    """Tricky rationales on most rankings (none on some, as annotators leave it empty)."""
    rng = random.Random(seed)
    for ranking in Ranking.objects.filter(task__prompt_set=prompt_set):
        rationale = "" if rng.random() < 0.3 else f"{rng.choice(TRICKY_TEXTS)} r{ranking.pk}"
        Ranking.objects.filter(pk=ranking.pk).update(rationale=rationale)


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_rationales_are_exported_with_their_pairs_as_the_reference_writes_them(fmt):
    """rationale="include": each pair carries its ranking's rationale, identical bytes, rows and hash under the rules
    that shape per-annotator rows (ties marked or dropped, each flag and all-bad rule)."""
    prompt_set = ranked_prompt_set(n_prompts=7, k=4, overlap=2, seed=12)
    scramble(prompt_set, seed=12, chats=fmt == "conversational")
    give_rationales(prompt_set, seed=12)
    for ties, (flagged, all_bad) in zip(("drop", "mark", "mark"), _FLAG_RULES[:3], strict=True):
        assert_matches_reference(
            ExportOptions(
                prompt_set_ids=(prompt_set.pk,),
                format=fmt,
                ties=ties,
                flagged=flagged,
                all_bad=all_bad,
                rationale="include",
                test_fraction=0.3,
            )
        )


def test_the_rationale_column_is_only_there_when_asked_and_changes_the_hash():
    """Without the option the files have no rationale column (and keep their bytes); with it, every row has one."""
    prompt_set = ranked_prompt_set(n_prompts=5, k=3, overlap=2, seed=13)
    give_rationales(prompt_set, seed=13)
    plain = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0)).version
    with_reasons = export_dataset(
        options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0, rationale="include")
    ).version
    assert "rationale" not in pq.read_table(Path(plain.path) / "train.parquet").column_names
    assert "rationale" not in plain.options and with_reasons.options["rationale"] == "include"
    rows = [json.loads(line) for line in (Path(with_reasons.path) / "train.jsonl").read_text().splitlines()]
    stored = set(Ranking.objects.values_list("rationale", flat=True))
    assert all(isinstance(row["rationale"], str) for row in rows)
    assert {row["rationale"] for row in rows} <= stored and "" in stored and any(row["rationale"] for row in rows)
    assert [{k: v for k, v in row.items() if k != "rationale"} for row in rows] == [
        json.loads(line) for line in (Path(plain.path) / "train.jsonl").read_text().splitlines()
    ]
    assert with_reasons.content_hash != plain.content_hash
