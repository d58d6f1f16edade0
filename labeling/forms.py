"""Forms: the ranking form posted by the annotator page (works without JavaScript: one rank box per
response), and the admin's import form."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from django import forms

from labeling.models import Ranking
from labeling.services.errors import RankingRejected


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one prompt per line, or one rollout per line) or CSV.")
    format = forms.ChoiceField(choices=[("", "from the file name"), ("jsonl", "JSONL"), ("csv", "CSV")], required=False)
    skip_invalid = forms.BooleanField(
        required=False,
        label="Skip bad lines",
        help_text="Import the good lines and list every bad one with its reason. "
        "Unchecked, a file with any bad line is refused whole and nothing is written.",
    )


def tiers_from_ranks(post: Mapping[str, str], shown: list[int]) -> tuple[list[list[int]], dict[str, str], bool]:
    """Read `rank_<id>` (equal numbers tie), `flag_<id>` and `all_bad` from a posted form.

    Errors name responses by their on-screen number, which is what the annotator sees.
    """
    all_bad = post.get("all_bad") in {"on", "1", "true"}
    by_rank: dict[int, list[int]] = defaultdict(list)
    unranked = []
    for position, rollout_id in enumerate(shown, start=1):
        raw = (post.get(f"rank_{rollout_id}") or "").strip()
        if not raw:
            unranked.append(position)
            continue
        try:
            rank = int(raw)
        except ValueError:
            raise RankingRejected(
                f"Response {position}: rank {raw!r} is not a number.", code="malformed_ranking"
            ) from None
        if not 1 <= rank <= len(shown):
            raise RankingRejected(
                f"Response {position}: rank must be between 1 and {len(shown)}.", code="malformed_ranking"
            )
        by_rank[rank].append(rollout_id)
    if unranked and not (all_bad and not by_rank):
        missing = ", ".join(str(p) for p in unranked)
        raise RankingRejected(f"Rank every response (no rank yet: {missing}), or mark all as bad.", code="incomplete")
    tiers = [by_rank[rank] for rank in sorted(by_rank)]
    flags = {
        str(rollout_id): post[f"flag_{rollout_id}"]
        for rollout_id in shown
        if post.get(f"flag_{rollout_id}") in Ranking.FlagReason.values
    }
    return tiers, flags, all_bad
