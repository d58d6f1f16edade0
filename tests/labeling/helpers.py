"""Small helpers shared by the import tests."""

from __future__ import annotations

import json

from labeling.models import Prompt, RankingTask, Rollout


def jsonl(*rows: object) -> str:
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n"


def nothing_written() -> bool:
    return not (Prompt.objects.exists() or Rollout.objects.exists() or RankingTask.objects.exists())
