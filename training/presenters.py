"""What the run page shows, as pure functions of a run's fields: progress, the held-out table, other metrics, charts.

Nothing here touches the database or the admin, so a new run kind adds its presenter here and tests it
without a request; the admin only puts the results into the templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.safestring import SafeString, mark_safe

from training.models import TrainingRun
from training.plots import line_chart_svg
from training.trainers.lengths import what_happens

_HELD_OUT_PREFIX = "test_"
_HELD_OUT_SUFFIXES = ("_before", "_after")


def format_number(value: object) -> str:
    """Floats to four significant figures (a metric table is read, not diffed); anything else as is."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_duration(seconds: float) -> str:
    """A duration in the two largest units that matter: "1 h 05 min", "3 min 20 s", "42 s"."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@dataclass(frozen=True)
class RunProgress:
    step: int
    total_steps: int
    percent: float | None
    elapsed: str
    eta: str


def run_progress(run: TrainingRun, *, now: datetime) -> RunProgress:
    """Step / total, percentage, and an ETA from the step rate since the run started.

    The rate includes model loading and the "before" evaluation, so early ETAs run long and settle as
    steps accumulate — pessimistic rather than promising.
    """
    percent = min(100.0, 100.0 * run.step / run.total_steps) if run.total_steps else None
    end = run.finished_at or now
    elapsed_seconds = (end - run.started_at).total_seconds() if run.started_at else None
    elapsed = format_duration(elapsed_seconds) if elapsed_seconds is not None else "—"
    eta = "—"
    if run.status == TrainingRun.Status.RUNNING and run.step > 0 and run.total_steps > run.step and elapsed_seconds:
        remaining = (run.total_steps - run.step) * elapsed_seconds / run.step
        eta = f"about {format_duration(remaining)}"
    elif run.status == TrainingRun.Status.SUCCEEDED:
        eta = "done"
    return RunProgress(step=run.step, total_steps=run.total_steps, percent=percent, elapsed=elapsed, eta=eta)


def _is_held_out(key: str) -> bool:
    return key.startswith(_HELD_OUT_PREFIX) and key.endswith(_HELD_OUT_SUFFIXES)


def held_out_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """test_<name>_before / test_<name>_after pairs as table rows with the change between them."""
    names = sorted(
        {
            key[len(_HELD_OUT_PREFIX) : -len(suffix)]
            for key in metrics
            for suffix in _HELD_OUT_SUFFIXES
            if key.startswith(_HELD_OUT_PREFIX) and key.endswith(suffix)
        }
    )
    rows = []
    for name in names:
        before, after = metrics.get(f"test_{name}_before"), metrics.get(f"test_{name}_after")
        change = "—"
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            change = f"{after - before:+.4g}"
        rows.append(
            {
                "name": name.replace("_", " "),
                "before": format_number(before) if before is not None else "—",
                "after": format_number(after) if after is not None else "—",
                "change": change,
            }
        )
    return rows


def other_metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Every metric that is not a held-out before/after figure nor a length count (train loss, timings, memory...)."""
    return [
        (key, format_number(value))
        for key, value in sorted(metrics.items())
        if not _is_held_out(key) and not key.endswith(_LENGTH_SUFFIXES)
    ]


_LENGTH_SPLITS = (("train", "training"), ("test", "held-out"))
_LENGTH_SUFFIXES = ("_pairs_dropped", "_pairs_truncated")


@dataclass(frozen=True)
class LengthSummary:
    """What max_length did to each split a run read: the run page's "Length" table and its warning."""

    max_length: int | None
    #: One per split the run counted: {"split", "pairs", "dropped", "truncated"}, numbers already formatted.
    rows: list[dict[str, str]]
    #: The sentence for the warning box, or "" when no pair was dropped or truncated.
    warning: str
    #: What TRL does to a pair over max_length for this run's kind.
    rule: str


def length_summary(metrics: dict[str, Any], *, kind: str, max_length: int | None) -> LengthSummary | None:
    """The length counts the trainer recorded (`{split}_pairs_dropped` / `_truncated`); None for runs without them.

    Pairs per split are what TRL was given: the pairs it kept (`train_pairs`, `test_pairs`) plus those it dropped.
    """
    rows, affected = [], []
    for split, label in _LENGTH_SPLITS:
        dropped, truncated = metrics.get(f"{split}_pairs_dropped"), metrics.get(f"{split}_pairs_truncated")
        if not isinstance(dropped, (int, float)) or not isinstance(truncated, (int, float)):
            continue
        kept = metrics.get(f"{split}_pairs")
        pairs = int(kept + dropped) if isinstance(kept, (int, float)) else None
        rows.append(
            {
                "split": label,
                "pairs": str(pairs) if pairs is not None else "—",
                "dropped": _count_with_share(int(dropped), pairs),
                "truncated": _count_with_share(int(truncated), pairs),
            }
        )
        effects = [f"{int(count)} {verb}" for count, verb in ((dropped, "dropped"), (truncated, "truncated")) if count]
        if effects:
            affected.append(f"{label} pairs: {' and '.join(effects)}")
    if not rows:
        return None
    warning = ""
    if affected:
        warning = f"At max_length {max_length}, {'; '.join(affected)}."
    return LengthSummary(max_length=max_length, rows=rows, warning=warning, rule=what_happens(kind))


def _count_with_share(count: int, pairs: int | None) -> str:
    if not count or not pairs:
        return str(count)
    return f"{count} ({100 * count / pairs:.1f}%)"


def _series(history: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[float, float]]]:
    return {key: [(point["step"], point[key]) for point in history if key in point and "step" in point] for key in keys}


def history_charts(history: list[dict[str, Any]]) -> list[SafeString]:
    """Loss curves (train and eval) and accuracy curves from a run's logged points, as inline SVG."""
    points = [point for point in history if isinstance(point, dict)]
    keys = sorted({key for point in points for key in point if key != "step"})
    charts = []
    loss_keys = [key for key in ("loss", "eval_loss") if key in keys]
    if loss_keys:
        charts.append(line_chart_svg(_series(points, loss_keys), title="Loss"))
    accuracy_keys = [key for key in keys if "accurac" in key]
    if accuracy_keys:
        charts.append(line_chart_svg(_series(points, accuracy_keys), title="Accuracy"))
    charts += _online_charts(points, keys)
    # line_chart_svg builds its markup from formatted numbers and escaped labels only.
    return [mark_safe(chart) for chart in charts]


#: Online runs (GRPO, RLOO): one chart per question a researcher asks of a live run. Keys are TRL's log names
#: (`rewards/<judge>/mean`, `kl`, ...) and ours (`heldout/<judge>`, greedy answers to held-out prompts).
_ONLINE_CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("KL to the starting policy", ("kl",)),
    ("Share of groups with zero reward variance (nothing to learn from)", ("frac_reward_zero_std",)),
    ("Completion length (tokens)", ("completions/mean_length",)),
    ("Entropy", ("entropy",)),
)


def _online_charts(points: list[dict[str, Any]], keys: list[str]) -> list[str]:
    charts = []
    train_rewards = [key for key in keys if key.startswith("rewards/") and key.endswith("/mean")]
    if train_rewards or "reward" in keys:
        series = _series(points, (["reward"] if "reward" in keys else []) + train_rewards)
        renamed = {("reward (weighted sum)" if k == "reward" else k.split("/")[1]): v for k, v in series.items()}
        charts.append(line_chart_svg(renamed, title="Reward per judge, training prompts (sampled)"))
    heldout = [key for key in keys if key.startswith("heldout/")]
    if heldout:
        series = {key.split("/", 1)[1]: values for key, values in _series(points, heldout).items()}
        charts.append(line_chart_svg(series, title="Reward per judge, held-out prompts (greedy)"))
    for title, wanted in _ONLINE_CHARTS:
        present = [key for key in wanted if key in keys]
        if present:
            charts.append(line_chart_svg(_series(points, present), title=title))
    return charts
