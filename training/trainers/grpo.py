"""Online RL over TRL: GRPO and RLOO on a prompt set, rewarded by judges (`training.judges`).

One run: the policy samples `num_generations` completions per training prompt, every judge scores them, TRL turns
the weighted sum into advantages and updates the policy (a KL term towards the starting policy: beta > 0). What
we add around TRL's trainers:

- Prompts are tokenized by `tokenization.prompt_ids` (`_tokenize_prompts` is overridden), the same function DPO
  training and generation use, so a policy samples from the context it was trained and will be served on.
- Each judge is a reward callable; a judge that raises gives None ("no opinion") with the reason, never a crashed
  run (`training.judges.base.Judge.score_batch` already does this; `_JudgeReward` guards the call too). A judge with
  weight 0 is a monitor: TRL logs its mean, the weighted sum ignores it.
- Held-out prompts (never trained on) are answered greedily before, every `eval_steps` and after training, and each
  judge's mean score on them is logged as `heldout/<judge>` (history) and `test_<judge>_{before,after}` (metrics).
- Every sampled completion is kept with each judge's score and reason in `rollouts.jsonl` beside the saved model:
  the hook for audits (humans ranking what RL produced).
- Timing for the benchmark: rollouts generated, seconds generating+scoring, seconds in judges, seconds per step.

Saved output is a plain causal LM (a LoRA adapter is merged), like DPO's, so generation and the next run load it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from training.judges.base import Judge, JudgeInput, JudgeResult, Reference, combine, not_applicable

from ._runtime import RunClock, build_result, load_tokenizer, quiet_console, release_memory, resolve_device
from ._runtime import trl_arguments as _trl_arguments
from .config import GRPORunConfig, RLOORunConfig
from .formatting import completion_prompt
from .generation import vllm_usable
from .lifecycle import latest_checkpoint
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult
from .tokenization import Prompt, prompt_ids, stop_token_ids

ROLLOUTS_FILE = "rollouts.jsonl"
#: Held-out prompts answered per generate call: enough to use a CPU's cores, few enough for a GPU's memory.
_HELDOUT_BATCH = 32


@dataclass(frozen=True)
class OnlinePrompt:
    """A prompt of the set: its id (kept in the rollout log), the model input and its references for the judges."""

    prompt_id: int
    prompt: Prompt
    answer: str | None = None
    tests: str | None = None


@dataclass(frozen=True)
class WeightedJudge:
    """A judge in a run: `name` is what the curves and the rollout log call it; weight 0 makes it a monitor."""

    name: str
    judge: Judge
    weight: float


@dataclass
class _Timing:
    rollouts: int = 0
    completion_tokens: int = 0
    generate_and_score_seconds: float = 0.0
    judge_seconds: float = 0.0
    step_seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        total = self.step_seconds or float("nan")
        return {
            "rollouts": float(self.rollouts),
            "rollouts_per_second": self.rollouts / total if self.step_seconds else 0.0,
            "judge_time_share": self.judge_seconds / total if self.step_seconds else 0.0,
            "generation_time_share": (self.generate_and_score_seconds - self.judge_seconds) / total
            if self.step_seconds
            else 0.0,
            "update_time_share": (self.step_seconds - self.generate_and_score_seconds) / total
            if self.step_seconds
            else 0.0,
        }


@dataclass
class _RolloutLog:
    """Collects each judge's results on a generation batch; once the last judge reported, writes one line each."""

    judges: Sequence[WeightedJudge]
    stream: TextIO | None = None
    _pending: dict[int, list[JudgeResult]] = field(default_factory=dict)

    def record(self, index: int, *, step: int, prompt_ids: Sequence[Any], completions: Sequence[str], results) -> None:
        self._pending[index] = list(results)
        if len(self._pending) < len(self.judges):
            return
        per_judge = [self._pending[i] for i in range(len(self.judges))]
        self._pending = {}
        combined = combine([[r.score for r in rs] for rs in per_judge], [j.weight for j in self.judges])
        if self.stream is None:
            return
        for row, (prompt_id, completion) in enumerate(zip(prompt_ids, completions, strict=True)):
            line = {
                "step": step,
                "prompt_id": prompt_id,
                "completion": completion,
                "reward": combined[row],
                "scores": {j.name: rs[row].score for j, rs in zip(self.judges, per_judge, strict=True)},
                "reasons": {j.name: rs[row].reason for j, rs in zip(self.judges, per_judge, strict=True)},
            }
            self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()


class _JudgeReward:
    """One judge as a TRL reward function `(prompts, completions, **columns) -> list[float | None]`."""

    def __init__(self, index: int, judge: WeightedJudge, log: _RolloutLog, timing: _Timing) -> None:
        self.index = index
        self.judge = judge
        self.log = log
        self.timing = timing
        self.__name__ = judge.name  # TRL logs rewards/<__name__>/mean

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        texts = [_completion_text(c) for c in completions]
        answers = columns.get("answer") or [None] * len(prompts)
        tests = columns.get("tests") or [None] * len(prompts)
        items = [
            JudgeInput(p, t, Reference(a or None, s or None))
            for p, t, a, s in zip(prompts, texts, answers, tests, strict=True)
        ]
        started = time.perf_counter()
        try:
            results = self.judge.judge.score_batch(items)
        except Exception as error:  # score_batch never raises by contract; a run must not crash if one does
            results = [not_applicable("judge_error", error=f"{type(error).__name__}: {error}"[:500])] * len(items)
        self.timing.judge_seconds += time.perf_counter() - started
        state = columns.get("trainer_state")
        self.log.record(
            self.index,
            step=int(state.global_step) + 1 if state is not None else 0,
            prompt_ids=columns.get("prompt_id") or [None] * len(prompts),
            completions=texts,
            results=results,
        )
        return [r.score if r.score is None or math.isfinite(r.score) else None for r in results]


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


class _OnlineMixin:
    """What GRPO and RLOO share here: our prompt tokenization, counters, held-out metrics merged into the logs."""

    timing: _Timing
    pending_logs: dict[str, float]

    def _tokenize_prompts(self, prompts: list):  # TRL: (prompt_ids, images, multimodal_fields)
        return [prompt_ids(self.processing_class, prompt) for prompt in prompts], None, {}  # type: ignore[attr-defined]

    def _generate_and_score_completions(self, inputs):
        started = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        self.timing.generate_and_score_seconds += time.perf_counter() - started
        self.timing.rollouts += int(output["completion_ids"].shape[0])
        self.timing.completion_tokens += int(output["completion_mask"].sum())
        return output

    def training_step(self, model, inputs, num_items_in_batch=None):
        started = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        self.timing.step_seconds += time.perf_counter() - started
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.pending_logs:
            logs = {**logs, **self.pending_logs}
            self.pending_logs = {}
        super().log(logs, start_time)  # type: ignore[misc]

    @property
    def train_pairs_seen(self) -> int:  # `build_result` reads these names: completions and their tokens here
        return self.timing.rollouts

    @property
    def train_tokens_seen(self) -> int:
        return self.timing.completion_tokens


class _GRPOTrainer(_OnlineMixin, GRPOTrainer):
    pass


class _RLOOTrainer(_OnlineMixin, RLOOTrainer):
    pass


class _HeldOutCallback(TrainerCallback):
    """Every `eval_steps`, measure the judges on the held-out prompts and hand the numbers to the next log."""

    def __init__(self, measure, every: int | None) -> None:
        self.measure = measure
        self.every = every
        self.trainer: Any = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.trainer.pending_logs.update(self.measure())
            control.should_log = True


def split_prompts(
    prompts: Sequence[OnlinePrompt], *, heldout_fraction: float, seed: int
) -> tuple[list[OnlinePrompt], list[OnlinePrompt]]:
    """(train, held-out): a seeded shuffle by prompt id, at least one prompt held out when the fraction is > 0."""
    ordered = sorted(prompts, key=lambda p: p.prompt_id)
    random.Random(seed).shuffle(ordered)
    n_heldout = math.ceil(len(ordered) * heldout_fraction) if heldout_fraction > 0 else 0
    n_heldout = min(n_heldout, max(0, len(ordered) - 1))
    return ordered[n_heldout:], ordered[:n_heldout]


def train_online(
    kind: str,
    *,
    prompts: Sequence[OnlinePrompt],
    judges: Sequence[WeightedJudge],
    policy_model: str,
    output_dir: str | Path,
    config: GRPORunConfig | RLOORunConfig,
    on_log: OnLog | None = None,
    should_stop: ShouldStop | None = None,
    heartbeat: Heartbeat | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Train `policy_model` with GRPO (`kind="grpo"`) or RLOO (`"rloo"`) and save the (merged) causal LM.

    Metrics: `test_<judge>_{before,after}` (mean score of greedy answers to held-out prompts, over the prompts the
    judge had an opinion on), `train_prompts`, `heldout_prompts`, `train_prompts_dropped` (too long for
    max_length), the timing shares, and TRL's summary. A run cancelled through `should_stop` saves nothing.
    """
    if kind not in ("grpo", "rloo"):
        raise ValueError(f"train_online trains 'grpo' or 'rloo', not {kind!r}.")
    if not judges or not any(j.weight != 0 for j in judges):
        raise ValueError("An online run needs at least one judge with a non-zero weight (weight 0 only monitors).")
    output_dir = Path(output_dir)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else output_dir.with_name(f"{output_dir.name}.checkpoints")
    resume_from = latest_checkpoint(checkpoints) if config.save_steps else None
    device = resolve_device(config.device)
    backend = online_generation_backend(config, device)  # before loading anything: a refusal costs nothing
    clock = RunClock.start(device)
    progress = ProgressReporter(on_log=on_log, should_stop=should_stop, heartbeat=heartbeat)
    progress.beat()
    set_seed(config.seed)

    tokenizer = load_tokenizer(policy_model)
    train, heldout = split_prompts(prompts, heldout_fraction=config.heldout_fraction, seed=config.seed)
    budget = None if config.max_length is None else config.max_length - config.max_completion_length
    fits = [p for p in train if budget is None or len(prompt_ids(tokenizer, _model_input(p.prompt))) <= budget]
    heldout = [p for p in heldout if budget is None or len(prompt_ids(tokenizer, _model_input(p.prompt))) <= budget]
    if not fits:
        raise ValueError(
            f"No training prompt fits: all {len(train)} are longer than max_length - max_completion_length "
            f"= {budget} tokens."
        )
    metrics: dict[str, float] = {
        "train_prompts": float(len(fits)),
        "train_prompts_dropped": float(len(train) - len(fits)),
        "heldout_prompts": float(len(heldout)),
        "generation_on_vllm": float(backend == "vllm"),
    }

    timing = _Timing()
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / ROLLOUTS_FILE).open("w") as rollout_stream:
        rollout_log = _RolloutLog(judges, rollout_stream)
        rewards = [_JudgeReward(i, judge, rollout_log, timing) for i, judge in enumerate(judges)]
        trainer = _build_trainer(
            kind,
            config=config,
            policy_model=policy_model,
            tokenizer=tokenizer,
            train_dataset=_dataset(fits),
            rewards=rewards,
            weights=[j.weight for j in judges],
            output_dir=checkpoints if config.save_steps else output_dir,
            device=device,
            progress=progress,
            backend=backend,
        )
        trainer.timing = timing
        trainer.pending_logs = {}

        def measure(trainer: Any = trainer) -> dict[str, float]:
            return _heldout_scores(trainer, tokenizer, heldout, judges, config, progress)

        if config.eval and heldout:
            callback = _HeldOutCallback(measure, config.eval_steps)
            callback.trainer = trainer
            trainer.add_callback(callback)
        try:
            if config.eval and heldout:
                before = measure()
                metrics |= {f"test_{k.split('/', 1)[1]}_before": v for k, v in before.items() if v is not None}
                progress.history.append({"step": 0.0, **before})
                if on_log is not None:
                    on_log(0, int(config.max_steps or 0), dict(before))
            train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            metrics |= {
                k: float(v)
                for k, v in train_output.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            metrics |= timing.metrics()
            if not progress.stopped_early:
                if config.eval and heldout:
                    after = measure()
                    metrics |= {f"test_{k.split('/', 1)[1]}_after": v for k, v in after.items() if v is not None}
                    step = int(trainer.state.global_step)
                    progress.history.append({"step": float(step), **after})
                    if on_log is not None:
                        on_log(step, int(trainer.state.max_steps), dict(after))
                _save(trainer, output_dir)
            return build_result(
                trainer=trainer,
                progress=progress,
                output_dir=output_dir,
                metrics=metrics,
                train_seconds=float(train_output.metrics.get("train_runtime", 0.0)),
                clock=clock,
            )
        finally:
            del trainer
            release_memory(device)


def online_generation_backend(config: GRPORunConfig | RLOORunConfig, device: str) -> str:
    """The backend for this worker, "vllm" or "hf"; a run insisting on vLLM where there is none fails, saying why."""
    if config.generation_backend == "hf":
        return "hf"
    usable = device.startswith("cuda") and vllm_usable()
    if config.generation_backend == "vllm" and not usable:
        missing = "no CUDA device" if not device.startswith("cuda") else "vLLM is not installed"
        raise ValueError(
            f"generation_backend is 'vllm', but this worker cannot run it ({missing}): run it on a GPU worker "
            "with requirements-gpu.txt installed, or set generation_backend to 'auto' or 'hf'."
        )
    return "vllm" if usable else "hf"


def vllm_arguments(config: GRPORunConfig | RLOORunConfig, backend: str) -> dict[str, Any]:
    """TRL's vLLM settings: colocated in the trainer's process, sharing its GPU (no separate vLLM server to run)."""
    if backend != "vllm":
        return {"use_vllm": False}
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": config.vllm_gpu_memory_utilization,
    }


def _model_input(prompt: Prompt) -> Prompt:
    # Plain-text prompts get the separator every other path gives them (idempotent), so TRL's completions and the
    # judges see the prompt text generation sees.
    return completion_prompt(prompt) if isinstance(prompt, str) else prompt


def _dataset(prompts: Sequence[OnlinePrompt]) -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": _model_input(p.prompt),
                "prompt_id": p.prompt_id,
                "answer": p.answer or "",
                "tests": p.tests or "",
            }
            for p in prompts
        ]
    )


def _build_trainer(
    kind: str,
    *,
    config: GRPORunConfig | RLOORunConfig,
    policy_model: str,
    tokenizer: Any,
    train_dataset: Dataset,
    rewards: list[_JudgeReward],
    weights: list[float],
    output_dir: Path,
    device: str,
    progress: ProgressReporter,
    backend: str = "hf",
) -> Any:
    shared = _trl_arguments(config, output_dir=output_dir, device=device)
    shared |= vllm_arguments(config, backend)
    shared.pop("max_length")  # prompts were filtered above; completions are capped by max_completion_length
    shared |= {
        "eval_strategy": "no",  # held-out prompts are measured by _HeldOutCallback, greedily, once per judge
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "beta": config.beta,
        "reward_weights": weights,
        "model_init_kwargs": {"dtype": torch.float32},  # float32 like the DPO path; autocast handles bf16
        "log_completions": False,
        "remove_unused_columns": False,  # prompt_id, answer and tests reach the judges
    }
    if kind == "grpo":
        assert isinstance(config, GRPORunConfig)
        args: Any = GRPOConfig(**shared, loss_type=config.loss_type)
        trainer_class: Any = _GRPOTrainer
    else:
        args = RLOOConfig(**shared)
        trainer_class = _RLOOTrainer
    peft = (
        LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        if config.lora
        else None
    )
    trainer = trainer_class(
        model=policy_model,
        reward_funcs=rewards,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=[progress],
    )
    quiet_console(trainer)
    return trainer


@torch.no_grad()
def _heldout_scores(
    trainer: Any,
    tokenizer: Any,
    heldout: Sequence[OnlinePrompt],
    judges: Sequence[WeightedJudge],
    config: GRPORunConfig | RLOORunConfig,
    progress: ProgressReporter,
) -> dict[str, float]:
    """{"heldout/<judge>": mean score} of greedy answers to the held-out prompts (None scores left out)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))
    texts: list[str] = []
    try:
        for start in range(0, len(heldout), _HELDOUT_BATCH):
            progress.beat()
            batch = [prompt_ids(tokenizer, _model_input(p.prompt)) for p in heldout[start : start + _HELDOUT_BATCH]]
            width = max(len(row) for row in batch)
            device = next(model.parameters()).device
            input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in batch], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=config.max_completion_length,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad_id,
            )
            texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    scores: dict[str, float] = {}
    for judge in judges:
        items = [
            JudgeInput(_model_input(p.prompt), text, Reference(p.answer or None, p.tests or None))
            for p, text in zip(heldout, texts, strict=True)
        ]
        values = [r.score for r in judge.judge.score_batch(items) if r.score is not None and math.isfinite(r.score)]
        if values:
            scores[f"heldout/{judge.name}"] = sum(values) / len(values)
    return scores


def _save(trainer: Any, output_dir: Path) -> None:
    """A plain causal LM and its tokenizer (a LoRA adapter merged first)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model.merge_and_unload().save_pretrained(output_dir)
        trainer.processing_class.save_pretrained(output_dir)
    else:
        trainer.save_model(str(output_dir))
