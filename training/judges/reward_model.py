"""A registered reward model as a judge: the scalar score of (prompt, completion), rendered as it was trained.

The rendering and tokenization are those of `training.trainers.generation.score_with_reward_model` (EOS appended
as TRL's RewardTrainer does; chat prompts through the tokenizer's template): `_score_texts` scores through
`score_with_loaded_reward_model`, the same code on a model kept loaded.

Loaded models are kept per process (`_loaded`): an online run scores every generation batch with the same judge, and
loading the weights each time cost more than scoring. The cache is keyed by the path and the newest modification
time of the folder's files, so weights replaced in place are loaded again, and holds at most `CACHE_SIZE` models.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.judges.base import Judge, JudgeInput, JudgeResult, Prompt
from training.judges.config import RewardModelConfig

#: Reward models kept loaded per process: a run may train on one and watch another (a monitor), so two; more would
#: hold several models' weights in a worker that may also be training a policy.
CACHE_SIZE = 2
_cache: OrderedDict[tuple[str, float], tuple[Any, Any]] = OrderedDict()
_cache_lock = threading.Lock()
#: Loads since the process started (the cache's misses): what the tests count.
loads = 0


def _modified(model_path: str) -> float:
    """The newest modification time of the folder and its files (a hub id or a missing path: 0, so it loads once)."""
    path = Path(model_path)
    try:
        times = [path.stat().st_mtime, *(child.stat().st_mtime for child in path.iterdir())]
    except OSError:
        return 0.0
    return max(times)


def _loaded(model_path: str) -> tuple[Any, Any]:
    """(tokenizer, model) of this path, loaded once per process while its files stay the same."""
    global loads
    from training.trainers.generation import load_reward_model

    key = (str(Path(model_path).resolve()) if Path(model_path).exists() else model_path, _modified(model_path))
    with _cache_lock:  # one load at a time: two threads asking for the same model load it once
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        for stale in [k for k in _cache if k[0] == key[0]]:  # the same folder with older files
            del _cache[stale]
        loaded = load_reward_model(model_path)
        loads += 1
        _cache[key] = loaded
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return loaded


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _score_texts(
    model_path: str, prompts: Sequence[Prompt], completions: Sequence[str], batch_size: int
) -> list[float]:
    from training.trainers.generation import score_with_loaded_reward_model

    tokenizer, model = _loaded(model_path)
    return score_with_loaded_reward_model(tokenizer, model, prompts, completions, batch_size=batch_size)


class RewardModelJudge(Judge):
    kind = "reward_model"

    def __init__(self, config: RewardModelConfig, *, model_path: str) -> None:
        self.config = config
        self.model_path = model_path

    def _score_batch(self, items: Sequence[JudgeInput]) -> list[JudgeResult]:
        if not items:
            return []
        scores = _score_texts(
            self.model_path,
            [item.prompt for item in items],
            [item.completion for item in items],
            self.config.batch_size,
        )
        return [JudgeResult(float(score), {"reason": "scored"}) for score in scores]
