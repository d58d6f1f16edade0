"""Direct Preference Optimization: the shared lifecycle (setup -> evaluate -> train -> evaluate -> save) over TRL.

The reference policy is loaded separately and frozen: from `ref_model` when given, else from `policy_model` itself
(TRL's own fallback reloads by config name, which breaks for some local setups). With `lora=True` and no `ref_model`
there is no second copy at all: TRL computes reference log-probs with the adapter disabled; with
`precompute_ref_log_probs` none either: TRL scores every pair under the starting policy once, before training.
`lora=None` decides by size (`use_lora`). Weights load in the config's `dtype` (bfloat16 on CUDA by default), the
reference in the same one. Either way the saved
output is a plain causal LM (a LoRA adapter is merged first), so generation and the next DPO round load it with
`AutoModelForCausalLM` and nothing else.

Pairs are tokenized by `tokenization` (TRL's rules: prompt/completion split at the common prefix, EOS on standard
completions, BOS once), the same function generation takes its prompts from, so a policy samples from exactly the
context it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from trl import DPOConfig, DPOTrainer

from ._runtime import ThroughputMixin, load_tokenizer, phase_metrics, quiet_console, resolve_dtype, trl_arguments
from .config import LORA_AUTO_PARAMETERS, DPORunConfig
from .evaluation import dpo_metrics, sequence_logps
from .lifecycle import run_preference_training
from .progress import Heartbeat, OnLog, ProgressReporter, ShouldStop
from .result import TrainResult
from .tokenization import DPO, is_tokenized, tokenize_preference_dataset


class _DPOTrainer(ThroughputMixin, DPOTrainer):
    """TRL's DPOTrainer, counting pairs and tokens for throughput, taking pairs tokenized by `tokenization`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not is_tokenized(dataset, DPO):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        # Already tokenized: what remains of TRL's preparation is its filter of pairs whose prompt alone fills
        # max_length (keep_start truncation would leave them no completion token; dpo_trainer.py:1134-1140).
        if args.max_length is not None and args.truncation_mode == "keep_start":
            dataset = dataset.filter(lambda prompt: len(prompt) < args.max_length, input_columns="prompt_ids")
        return dataset


def train_dpo(
    *,
    dataset_path: str | Path,
    policy_model: str,
    output_dir: str | Path,
    config: DPORunConfig,
    ref_model: str | None = None,
    on_log: OnLog | None = None,
    should_stop: ShouldStop | None = None,
    heartbeat: Heartbeat | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainResult:
    """Fine-tune `policy_model` with DPO on the train split and save the (merged) causal LM + tokenizer.

    Metrics, on the test split before and after training: mean completion log-prob of chosen and rejected answers
    under the policy, their mean margin and how often chosen wins (`logp_*`), and DPO's implicit reward
    beta * (log pi - log pi_ref) margin and accuracy (`reward_*`). A run cancelled through `should_stop` saves
    nothing and returns `stopped_early=True`.
    """
    return run_preference_training(
        _DPORecipe(policy_model=policy_model, ref_model=ref_model, config=config),
        dataset_path=dataset_path,
        output_dir=output_dir,
        config=config,
        on_log=on_log,
        should_stop=should_stop,
        heartbeat=heartbeat,
        checkpoint_dir=checkpoint_dir,
        tensorboard_dir=tensorboard_dir,
    )


@dataclass
class _DPORecipe:
    kind: ClassVar[str] = "dpo"
    policy_model: str
    ref_model: str | None
    config: DPORunConfig
    # The reference never changes during a run: its held-out log-probs are computed once, at the first evaluation.
    _reference_logps: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False)
    _lora: bool = field(default=False, init=False)
    _parameters: int = field(default=0, init=False)

    def setup(
        self,
        *,
        train_dataset: Dataset,
        eval_dataset: Dataset | None,
        output_dir: Path,
        device: str,
        progress: ProgressReporter,
    ) -> _DPOTrainer:
        config = self.config
        self._parameters = count_parameters(self.policy_model)
        self._lora = use_lora(config, parameters=self._parameters)
        args = DPOConfig(
            **trl_arguments(config, output_dir=output_dir, device=device),
            precompute_ref_log_probs=config.precompute_ref_log_probs,
            beta=config.beta,
            # RPO: TRL sums the listed losses with these weights; "sft" is the NLL of the chosen answers.
            loss_type=[config.loss_type, "sft"] if config.sft_weight > 0 else [config.loss_type],
            loss_weights=[1.0, config.sft_weight] if config.sft_weight > 0 else None,
        )
        tokenizer = load_tokenizer(self.policy_model)
        if eval_dataset is not None:
            eval_dataset = tokenize_preference_dataset(eval_dataset, tokenizer, kind=DPO)
        trainer = _DPOTrainer(
            model=self.policy_model,
            ref_model=_reference_model(
                self.ref_model,
                self.policy_model,
                lora=self._lora,
                precompute=config.precompute_ref_log_probs,
                dtype=resolve_dtype(config, device),
            ),
            args=args,
            train_dataset=tokenize_preference_dataset(train_dataset, tokenizer, kind=DPO),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=_lora_config(config) if self._lora else None,
            callbacks=[progress],
        )
        quiet_console(trainer)
        return trainer

    def run_metrics(self) -> dict[str, float]:
        """What `lora=None` decided, and on how big a policy."""
        return {"lora": float(self._lora), "policy_parameters": float(self._parameters)}

    def held_out_metrics(self, trainer: _DPOTrainer, progress: ProgressReporter, phase: str) -> dict[str, float]:
        if self._reference_logps is None:
            if phase != "before" and trainer.ref_model is None and not self._lora:
                raise RuntimeError("The reference's held-out log-probs must be measured before training changes it.")
            self._reference_logps = _test_logps(trainer, progress, reference=True)
        policy_chosen, policy_rejected = _test_logps(trainer, progress, reference=False)
        metrics = {"test_pairs": float(len(policy_chosen))}
        if len(policy_chosen):
            ref_chosen, ref_rejected = self._reference_logps
            metrics |= phase_metrics(
                dpo_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=self.config.beta), phase
            )
        return metrics

    def save(self, trainer: _DPOTrainer, output_dir: Path) -> None:
        """Save a plain causal LM: merge a LoRA adapter into the base weights first."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if isinstance(model, PeftModel):
            if not trainer.accelerator.is_main_process:
                return  # one writer under a multi-process launch (Trainer.save_model guards itself)
            model.merge_and_unload().save_pretrained(output_dir)
            trainer.processing_class.save_pretrained(output_dir)
        else:
            trainer.save_model(str(output_dir))  # model + tokenizer


def count_parameters(model_path: str) -> int:
    """The policy's parameter count, from its config alone: built on the meta device, no weights read."""
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def use_lora(config: DPORunConfig, *, parameters: int, threshold: int = LORA_AUTO_PARAMETERS) -> bool:
    """The config's choice, or for `lora=None`: LoRA above `threshold` parameters."""
    return config.lora if config.lora is not None else parameters > threshold


def _reference_model(
    ref_model: str | None, policy_model: str, *, lora: bool, precompute: bool, dtype: str
) -> PreTrainedModel | None:
    """A frozen copy of `ref_model` (default: the starting policy), or None when no copy is needed.

    With LoRA, TRL computes reference log-probs by disabling the adapter; with precomputed log-probs it scores every
    pair under the starting policy before training. A second copy would then only cost memory.
    """
    if ref_model is None and (lora or precompute):
        return None
    # The policy's dtype, so reference and policy log-probs agree exactly at step 0.
    reference = AutoModelForCausalLM.from_pretrained(ref_model or policy_model, dtype=getattr(torch, dtype))
    reference.requires_grad_(False)
    return reference.eval()


def _lora_config(config: DPORunConfig) -> LoraConfig:
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        # "all-linear": every Linear/Conv1D except the output head, which TRL refuses to adapt.
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def _test_logps(
    trainer: _DPOTrainer, progress: ProgressReporter, *, reference: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) completion log-probs on the test split under the policy, or under the reference."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    loader = trainer.get_eval_dataloader()
    kwargs = {
        "autocast": trainer.accelerator.autocast,
        "heartbeat": progress.beat,
        "gather": trainer.accelerator.gather_for_metrics,  # every pair once under a multi-process launch
    }
    if not reference:
        return sequence_logps(model, loader, **kwargs)
    if trainer.ref_model is not None:
        return sequence_logps(trainer.ref_model, loader, **kwargs)
    if not isinstance(model, PeftModel):  # precomputed reference: before training the policy is the reference
        return sequence_logps(model, loader, **kwargs)
    with model.disable_adapter():  # LoRA without an explicit reference: the base model is the reference
        return sequence_logps(model, loader, **kwargs)
