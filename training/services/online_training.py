"""The worker's part of an online RL run: load the prompt set and the judges, train with `trainers.grpo`.

Called by `runs.execute_run` (inside the shared lifecycle) for GRPO and RLOO runs; `online_runs` validates and queues
them. Prompts are read through labeling's selectors and services, never its models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeling.selectors import prompt_inputs_of_set
from labeling.services.judge_rankings import prompt_references
from training.models import RunJudge, TrainingRun
from training.trainers.config import RUN_CONFIGS
from training.trainers.result import TrainResult


def run_prompts(prompt_set_id: int) -> list[Any]:
    """The set's prompts as the trainer takes them: id, model input (text or messages), references."""
    from training.trainers.grpo import OnlinePrompt

    references = prompt_references(sorted(prompt_inputs_of_set(prompt_set_id=prompt_set_id)))
    return [
        OnlinePrompt(prompt_id=pk, prompt=ref.prompt, answer=ref.answer, tests=ref.tests)
        for pk, ref in sorted(references.items())
    ]


def run_judges(run: TrainingRun) -> list[Any]:
    """The run's judges, built and named as its curves and rollout log call them (`<judge name>`)."""
    from training.judges.build import build_judge
    from training.trainers.grpo import WeightedJudge

    out = []
    for link in RunJudge.objects.filter(run=run).select_related("judge__reward_model").order_by("pk"):
        judge = link.judge
        runnable = build_judge(
            judge.kind, judge.config, model_path=judge.reward_model.path if judge.reward_model else None
        )
        out.append(WeightedJudge(name=_curve_name(judge.name), judge=runnable, weight=link.weight))
    return out


def _curve_name(name: str) -> str:
    # TRL logs rewards/<name>/mean and we log heldout/<name>: keep names free of the separator and of spaces.
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "judge"


def train_online_run(
    run: TrainingRun,
    staging: Path,
    *,
    on_log: Any,
    should_stop: Any,
    checkpoint_dir: Path | None = None,
    tensorboard_dir: Path | None = None,
) -> TrainResult:
    """The worker's part of an online run (called by `runs.execute_run` inside its lifecycle)."""
    from training.trainers.grpo import train_online

    config = RUN_CONFIGS[run.kind].from_dict(run.config)
    assert run.prompt_set_id is not None  # the check constraint keeps it
    return train_online(
        run.kind,
        prompts=run_prompts(run.prompt_set_id),
        judges=run_judges(run),
        policy_model=run.starting_model_path,
        output_dir=staging,
        config=config,  # type: ignore[arg-type]
        on_log=on_log,
        should_stop=should_stop,
        checkpoint_dir=checkpoint_dir,
        tensorboard_dir=tensorboard_dir,
    )
