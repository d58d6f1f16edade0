"""A registered reward model as a judge: the scalar score of (prompt, completion), rendered as it was trained.

The rendering and tokenization are those of `training.trainers.generation.score_with_reward_model` (EOS appended
as TRL's RewardTrainer does; chat prompts through the tokenizer's template). `_score_texts` is the one call site,
so when training's single tokenization module replaces that function, only this line changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.judges.base import Judge, JudgeInput, JudgeResult, Prompt
from training.judges.config import RewardModelConfig


def _score_texts(
    model_path: str, prompts: Sequence[Prompt], completions: Sequence[str], batch_size: int
) -> list[float]:
    from training.trainers.generation import score_with_reward_model

    return score_with_reward_model(
        model_path=model_path, prompts=prompts, completions=completions, batch_size=batch_size
    )


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
