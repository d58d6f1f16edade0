"""Run-page presenters: progress and ETA, the held-out table, other metrics, and which charts are drawn."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.safestring import SafeString

from training.models import TrainingRun
from training.presenters import (
    format_duration,
    format_number,
    held_out_rows,
    history_charts,
    length_summary,
    other_metric_rows,
    run_progress,
)

# --- progress -------------------------------------------------------------------------------------------------------


def test_eta_comes_from_the_step_rate_since_the_run_started():
    """10 of 30 steps in 100 s leaves about 200 s."""
    now = timezone.now()
    run = TrainingRun(
        status=TrainingRun.Status.RUNNING, step=10, total_steps=30, started_at=now - timedelta(seconds=100)
    )
    progress = run_progress(run, now=now)
    assert progress.percent == pytest.approx(100 / 3) and progress.eta == "about 3 min 20 s"
    assert run_progress(TrainingRun(status=TrainingRun.Status.QUEUED), now=now).eta == "—"


def test_a_finished_run_counts_elapsed_time_up_to_its_end_and_says_done():
    """Elapsed stops at finished_at, not at the time the page is drawn; a success reads 'done'."""
    now = timezone.now()
    run = TrainingRun(
        status=TrainingRun.Status.SUCCEEDED,
        step=30,
        total_steps=30,
        started_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=1),
    )
    progress = run_progress(run, now=now)
    assert (progress.percent, progress.elapsed, progress.eta) == (100.0, "1 h 00 min", "done")


def test_a_run_without_a_known_length_has_no_percentage_and_no_eta():
    """Before the trainer reports its total steps there is nothing to divide by."""
    now = timezone.now()
    run = TrainingRun(status=TrainingRun.Status.RUNNING, step=0, total_steps=0, started_at=now - timedelta(seconds=5))
    progress = run_progress(run, now=now)
    assert (progress.percent, progress.elapsed, progress.eta) == (None, "5 s", "—")


def test_the_percentage_never_passes_one_hundred():
    """A trainer that overshoots its planned steps still shows a full bar, not 110%."""
    run = TrainingRun(status=TrainingRun.Status.RUNNING, step=11, total_steps=10)
    assert run_progress(run, now=timezone.now()).percent == 100.0


def test_a_failed_run_has_no_eta():
    """Only a running run gets an estimate; a failed one is neither 'done' nor pending."""
    now = timezone.now()
    run = TrainingRun(status=TrainingRun.Status.FAILED, step=3, total_steps=10, started_at=now - timedelta(seconds=9))
    assert run_progress(run, now=now).eta == "—"


def test_durations_show_their_two_largest_units():
    """Seconds alone, minutes with padded seconds, hours with padded minutes; fractions round."""
    assert format_duration(42.4) == "42 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(3900) == "1 h 05 min"


def test_numbers_show_four_significant_figures_and_other_values_as_they_are():
    """Floats are shortened for reading; ints and strings are left alone."""
    assert format_number(0.123456) == "0.1235"
    assert format_number(1e-6) == "1e-06"
    assert (format_number(12345), format_number("n/a")) == ("12345", "n/a")


# --- metric tables --------------------------------------------------------------------------------------------------


def test_held_out_metrics_pair_up_before_and_after_with_the_change():
    """One row per test_<name>, sorted by name, with after − before signed; a missing side is a dash."""
    rows = held_out_rows(
        {
            "test_reward_accuracy_before": 0.5,
            "test_reward_accuracy_after": 0.75,
            "test_loss_after": 0.4,
            "train_loss": 0.3,
        }
    )
    assert rows == [
        {"name": "loss", "before": "—", "after": "0.4", "change": "—"},
        {"name": "reward accuracy", "before": "0.5", "after": "0.75", "change": "+0.25"},
    ]


def test_a_metric_that_got_worse_shows_a_negative_change():
    """The sign is kept, so a drop reads as a drop."""
    rows = held_out_rows({"test_accuracy_before": 0.8, "test_accuracy_after": 0.6})
    assert rows[0]["change"] == "-0.2"


def test_other_metrics_are_everything_but_the_held_out_pairs():
    """Train loss and timings are listed, sorted; held-out before/after figures are left to their own table."""
    metrics = {"train_seconds": 1.5, "test_accuracy_before": 0.5, "test_accuracy_after": 0.7, "test_n": 8}
    assert other_metric_rows(metrics) == [("test_n", "8"), ("train_seconds", "1.5")]


def test_the_length_table_counts_what_max_length_did_to_each_split():
    """Pairs given = kept + dropped; counts carry their share; the warning names every affected split."""
    metrics = {
        "train_pairs": 14.0,
        "train_pairs_dropped": 2.0,
        "train_pairs_truncated": 5.0,
        "test_pairs": 8.0,
        "test_pairs_dropped": 0.0,
        "test_pairs_truncated": 0.0,
    }
    summary = length_summary(metrics, kind="dpo", max_length=64)
    assert summary is not None and summary.rows == [
        {"split": "training", "pairs": "16", "dropped": "2 (12.5%)", "truncated": "5 (31.2%)"},
        {"split": "held-out", "pairs": "8", "dropped": "0", "truncated": "0"},
    ]
    assert summary.warning == "At max_length 64, training pairs: 2 dropped and 5 truncated."
    assert "lose the end of their completion" in summary.rule
    assert other_metric_rows(metrics) == [("test_pairs", "8"), ("train_pairs", "14")]


def test_a_run_without_length_counts_has_no_length_table_and_a_clean_run_no_warning():
    """Runs recorded before the counts existed show nothing; zero affected pairs show the table without a warning."""
    assert length_summary({"train_pairs": 8.0}, kind="reward", max_length=1024) is None
    clean = length_summary(
        {"train_pairs": 8.0, "train_pairs_dropped": 0, "train_pairs_truncated": 0}, kind="reward", max_length=None
    )
    assert clean is not None and clean.warning == "" and clean.rows[0]["pairs"] == "8"
    assert "dropped" in clean.rule and "never truncates" in clean.rule


# --- charts ---------------------------------------------------------------------------------------------------------


def test_history_gives_a_loss_chart_and_an_accuracy_chart():
    """Train and eval loss share one chart, accuracies another; both are marked safe inline SVG."""
    charts = history_charts(
        [
            {"step": 1, "loss": 0.7},
            {"step": 2, "loss": 0.6, "rewards/accuracies": 0.5},
            {"step": 3, "eval_loss": 0.65, "eval_accuracy": 0.6},
        ]
    )
    assert len(charts) == 2 and all(isinstance(chart, SafeString) for chart in charts)
    assert "Loss" in charts[0] and "eval_loss" in charts[0]
    assert "Accuracy" in charts[1] and "rewards/accuracies" in charts[1] and "eval_accuracy" in charts[1]


def test_history_without_loss_or_accuracy_draws_nothing():
    """No points, junk points, or only other keys: no chart rather than an empty one."""
    assert history_charts([]) == []
    assert history_charts(["not a point", {"step": 1, "learning_rate": 1e-5}]) == []
