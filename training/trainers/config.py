"""Run configurations for reward-model and DPO training.

A config is what a researcher sets on a `TrainingRun` (stored as JSON): `from_dict` turns that JSON into a validated
dataclass, `to_dict` turns it back. The web process imports this module to validate admin forms, so it must stay
light: no torch, transformers, trl or datasets import here (a test enforces it).

Each field's `metadata["help"]` documents it, in the manner of TRL's own configs, so a form can show it as help text.
Invalid values raise `ConfigError` (a `ValueError`) whose `field` attribute names the offending key, so a form can
attach the message to the right input.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

__all__ = [
    "DPO_LOSS_TYPES",
    "GRPO_LOSS_TYPES",
    "ONLINE_KINDS",
    "RUN_CONFIGS",
    "ConfigError",
    "DPORunConfig",
    "GRPORunConfig",
    "RLOORunConfig",
    "RewardRunConfig",
]

_ConfigT = TypeVar("_ConfigT", bound="_RunConfig")

#: DPO losses we expose. TRL also has "exo_pair" and "robust" (both need a label_smoothing we do not expose) and
#: "sft" (not a preference loss on its own).
DPO_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid",
    "hinge",
    "ipo",
    "sigmoid_norm",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
#: Above this many parameters a DPO run with `lora` unset trains a LoRA adapter: full DPO costs ~18 bytes per
#: parameter (fp32 weights, gradients, two AdamW moments, a reference copy), ~18 GB at 1B.
LORA_AUTO_PARAMETERS = 1_000_000_000
#: Trackers that install beside the pinned stack without pulling a web framework (trackio brings gradio, mlflow a
#: server); transformers' own TensorBoard callback writes the events.
REPORT_TO: tuple[str, ...] = ("none", "tensorboard")

# Upper bounds, far above any sensible run but low enough that a typo (10**30) is refused here rather than
# allocating, looping or overflowing in a worker hours later.
#: AdamW diverges at once above a step size of 1.
MAX_LEARNING_RATE = 1.0
MAX_EPOCHS = 1_000.0
MAX_STEPS = 10_000_000
#: Pairs per forward pass (or passes per step): beyond this no accelerator holds the activations.
MAX_BATCH = 4_096
#: Tokens per sequence: 2**20, above any model's context window.
MAX_SEQUENCE_LENGTH = 1_048_576
#: numpy's seeds (transformers' set_seed seeds numpy) are 32-bit.
MAX_SEED = 2**32 - 1
#: beta, sft_weight, center_rewards_coefficient: a loss weight a hundred times the loss is a typo.
MAX_LOSS_WEIGHT = 100.0
MAX_LORA_RANK = 4_096
MAX_LORA_ALPHA = 100_000.0
MAX_LORA_MODULES = 256
MAX_MODULE_NAME_CHARS = 200
#: Processes for one run: one per GPU, and no single node holds more than a few dozen.
MAX_PROCESSES = 64


class ConfigError(ValueError):
    """A run configuration is invalid; `field` names the offending key (None when the problem spans keys)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def refuse_unknown_keys(config_class: type, data: object) -> None:
    """Refuse what is not a JSON object, or names a key `config_class` (a dataclass) lacks, with a "did you mean".

    Silently dropping a misspelt key ("learning_rte") would train with the default and waste a GPU run.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{config_class.__name__} expects a JSON object (dict), got {type(data).__name__}.")
    allowed = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise ConfigError(
            f"Unknown {config_class.__name__} key(s): {', '.join(hints)}. "
            f"Allowed keys: {', '.join(allowed) or 'none'}.",
            field=unknown[0] if len(unknown) == 1 else None,
        )


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class _RunConfig:
    """Fields shared by every trainer; subclasses add their own and may change defaults."""

    learning_rate: float = field(default=1e-5, metadata=_help("Peak AdamW learning rate, in (0, 1]."))
    num_train_epochs: float = field(
        default=1.0, metadata=_help("Passes over the train split, in (0, 1000]. Ignored when max_steps is set.")
    )
    max_steps: int | None = field(
        default=None,
        metadata=_help("If set (1 to 10,000,000), train exactly this many optimizer steps, overriding epochs."),
    )
    per_device_batch_size: int = field(
        default=8, metadata=_help("Preference pairs per forward pass (train and evaluation), 1 to 4,096.")
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata=_help("Forward passes per optimizer step (1 to 4,096); effective batch = this x batch size."),
    )
    max_length: int | None = field(
        default=1024,
        metadata=_help(
            "Token limit per prompt+completion sequence, EOS included (8 to 1,048,576), or None for no limit. "
            "When the starting model is a local directory it is at most the model's positions (its config.json); "
            "left unset, it is then the lower of 1024 and those positions. Reward runs "
            "drop every pair whose chosen or rejected sequence is longer. DPO runs truncate a longer sequence "
            "from its end: the completion loses its last tokens and the prompt is kept whole; a pair whose prompt "
            "alone reaches the limit is dropped. The run form estimates the share affected before queueing; the "
            "run page shows the counts."
        ),
    )
    seed: int = field(default=42, metadata=_help("Random seed for initialisation and data order (0 to 4,294,967,295)."))
    logging_steps: int = field(
        default=10, metadata=_help("Report loss and metrics every this many steps (1 to 10,000,000).")
    )
    eval: bool = field(
        default=True,
        metadata=_help("Measure held-out (test split) metrics before and after training."),
    )
    eval_steps: int | None = field(
        default=None,
        metadata=_help("If set (1 to 10,000,000), also run TRL's evaluation on the test split every this many steps."),
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help("bf16 mixed precision. None = automatic: on for CUDA devices that support it, off on CPU."),
    )
    dtype: str = field(
        default="auto",
        metadata=_help(
            f"Precision the weights load in (policy and reference alike), one of: {', '.join(DTYPES)}. 'auto' = "
            "bfloat16 on CUDA devices that support it (half the memory of float32), float32 elsewhere."
        ),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("Recompute activations in the backward pass: less memory, about 20% slower."),
    )
    device: str = field(
        default="auto",
        metadata=_help("'auto' (CUDA when available, else CPU), 'cpu' or 'cuda'."),
    )
    num_processes: int | None = field(
        default=None,
        metadata=_help(
            f"Processes that train this one run together through `accelerate launch` (1 to {MAX_PROCESSES}), one per "
            "GPU. None = every GPU the worker sees on CUDA, 1 on CPU; 1 trains inside the worker process itself."
        ),
    )
    save_steps: int | None = field(
        default=None,
        metadata=_help(
            "If set (1 to 10,000,000), save a checkpoint (weights, optimizer, scheduler, RNG) every this many steps, "
            "keeping the latest, so that a run whose worker died can be resumed from it instead of starting over."
        ),
    )
    report_to: str = field(
        default="none",
        metadata=_help(
            f"Experiment tracking, one of: {', '.join(REPORT_TO)}. 'tensorboard' writes the run's logs under the data "
            "directory's tensorboard/run-<id> (`tensorboard --logdir <data dir>/tensorboard`)."
        ),
    )
    fsdp: bool = field(
        default=False,
        metadata=_help(
            "Shard weights, gradients and optimizer state over the processes (FSDP) instead of a full copy per GPU "
            "(DDP): for models that do not fit one GPU. Needs CUDA and more than one process."
        ),
    )

    def __post_init__(self) -> None:
        self.learning_rate = _positive_float(self, "learning_rate", high=MAX_LEARNING_RATE)
        self.num_train_epochs = _positive_float(self, "num_train_epochs", high=MAX_EPOCHS)
        self.max_steps = _int_at_least(self, "max_steps", 1, maximum=MAX_STEPS, optional=True)
        self.per_device_batch_size = _int_at_least(self, "per_device_batch_size", 1, maximum=MAX_BATCH)
        self.gradient_accumulation_steps = _int_at_least(self, "gradient_accumulation_steps", 1, maximum=MAX_BATCH)
        self.max_length = _int_at_least(self, "max_length", 8, maximum=MAX_SEQUENCE_LENGTH, optional=True)
        self.seed = _int_at_least(self, "seed", 0, maximum=MAX_SEED)
        self.logging_steps = _int_at_least(self, "logging_steps", 1, maximum=MAX_STEPS)
        _require_bool(self, "eval")
        self.eval_steps = _int_at_least(self, "eval_steps", 1, maximum=MAX_STEPS, optional=True)
        _require_bool(self, "bf16", optional=True)
        _require_choice(self, "dtype", DTYPES)
        _require_bool(self, "gradient_checkpointing")
        _require_choice(self, "device", DEVICES)
        self.save_steps = _int_at_least(self, "save_steps", 1, maximum=MAX_STEPS, optional=True)
        _require_choice(self, "report_to", REPORT_TO)
        self.num_processes = _int_at_least(self, "num_processes", 1, maximum=MAX_PROCESSES, optional=True)
        _require_bool(self, "fsdp")
        if self.fsdp and (self.device == "cpu" or self.num_processes == 1):
            raise ConfigError(
                f"{type(self).__name__}.fsdp shards a model over several GPUs: it needs device 'cuda' or 'auto' "
                "and num_processes unset or above 1.",
                field="fsdp",
            )

    @classmethod
    def from_dict(cls: type[_ConfigT], data: Mapping[str, Any]) -> _ConfigT:
        """Build a validated config from JSON-like data; unknown keys are an error, not silently ignored."""
        refuse_unknown_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, the inverse of `from_dict`."""
        return dataclasses.asdict(self)


@dataclass
class RewardRunConfig(_RunConfig):
    """Bradley-Terry reward-model training (TRL `RewardTrainer`). Defaults follow TRL's `RewardConfig`."""

    learning_rate: float = field(default=1e-4, metadata=_help("Peak AdamW learning rate, in (0, 1]. TRL's default."))
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata=_help(
            "If set (0 to 100), penalise the squared mean reward so scores stay centred on zero; 0.01 is typical."
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.center_rewards_coefficient is not None:
            self.center_rewards_coefficient = _float_in(
                self, "center_rewards_coefficient", low=0.0, high=MAX_LOSS_WEIGHT
            )


@dataclass
class DPORunConfig(_RunConfig):
    """Direct Preference Optimization (TRL `DPOTrainer`), optionally with a LoRA adapter merged before saving."""

    learning_rate: float = field(
        default=1e-6,
        metadata=_help("Peak AdamW learning rate, in (0, 1]. TRL's default for full fine-tuning; use ~1e-5 with LoRA."),
    )
    beta: float = field(
        default=0.1,
        metadata=_help("Strength of the pull towards the reference model, in (0, 100]; higher stays closer to it."),
    )
    loss_type: str = field(
        default="sigmoid",
        metadata=_help(f"DPO loss variant, one of: {', '.join(DPO_LOSS_TYPES)}. 'sigmoid' is the original DPO."),
    )
    sft_weight: float = field(
        default=0.0,
        metadata=_help(
            "Weight (0 to 100) of an NLL term on the chosen answers added to the DPO loss (RPO). It stops DPO from "
            "pushing probability off both answers at once, which degrades small policies; 0 is pure DPO."
        ),
    )
    lora: bool | None = field(
        default=None,
        metadata=_help(
            "Train a LoRA adapter instead of all weights; the reference is then the adapter-free base. None = "
            f"automatic: LoRA for policies above {LORA_AUTO_PARAMETERS:,} parameters, where full DPO (weights, "
            "gradients, AdamW moments and a reference copy) no longer fits one GPU."
        ),
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata=_help(
            "Compute the reference's log-probs of every pair once before training, so no reference model stays "
            "in memory while training (without LoRA it would be a full second copy of the policy)."
        ),
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank, 1 to 4,096."))
    lora_alpha: float = field(
        default=32.0, metadata=_help("LoRA scaling numerator, in (0, 100000]; the scale is alpha / r.")
    )
    lora_dropout: float = field(default=0.05, metadata=_help("Dropout on the LoRA input, in [0, 1)."))
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata=_help(
            "Module names to adapt (up to 256, each letters, digits, '_', '.' or '-'); None means every linear layer "
            "except the output head ('all-linear')."
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.beta = _positive_float(self, "beta", high=MAX_LOSS_WEIGHT)
        _require_choice(self, "loss_type", DPO_LOSS_TYPES)
        self.sft_weight = _float_in(self, "sft_weight", low=0.0, high=MAX_LOSS_WEIGHT)
        _require_bool(self, "lora", optional=True)
        _require_bool(self, "precompute_ref_log_probs")
        self.lora_r = _int_at_least(self, "lora_r", 1, maximum=MAX_LORA_RANK)
        self.lora_alpha = _positive_float(self, "lora_alpha", high=MAX_LORA_ALPHA)
        self.lora_dropout = _float_in(self, "lora_dropout", low=0.0, high=1.0, high_inclusive=False)
        modules = self.lora_target_modules
        if modules is not None:
            if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
                raise ConfigError(
                    f"{type(self).__name__}.lora_target_modules must be a list of module names or None, "
                    f"got {modules!r}.",
                    field="lora_target_modules",
                )
            if not modules or not all(isinstance(name, str) and name.strip() for name in modules):
                raise ConfigError(
                    f"{type(self).__name__}.lora_target_modules must be a non-empty list of non-empty names, "
                    f"got {modules!r}.",
                    field="lora_target_modules",
                )
            # Module names are Python attribute paths; anything else (a NUL, which Postgres' JSON refuses, a
            # megabyte of text) is a mistake to report here, not in PEFT or the database.
            bad = [name for name in modules if not _MODULE_NAME.fullmatch(name)]
            if len(modules) > MAX_LORA_MODULES or bad:
                shown = repr(bad[0][:40]) if bad else f"{len(modules)} names"
                raise ConfigError(
                    f"{type(self).__name__}.lora_target_modules must be at most {MAX_LORA_MODULES} module names of "
                    f"1 to {MAX_MODULE_NAME_CHARS} letters, digits, '_', '.' or '-', got {shown}.",
                    field="lora_target_modules",
                )
            self.lora_target_modules = list(modules)


#: GRPO losses we expose (TRL 1.16 `GRPOConfig.loss_type`); the rest (sapo, luspo, vespo...) need knobs we do not.
GRPO_LOSS_TYPES: tuple[str, ...] = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo")
#: Completions sampled per prompt: 2 is the least a group comparison needs; beyond 256 no batch holds a group.
MAX_GENERATIONS = 256
#: Where an online run samples: "auto" is vLLM where it is installed and CUDA is present, else transformers'
#: `generate`; "vllm" insists (a worker without it fails the run with the reason, before loading anything).
GENERATION_BACKENDS: tuple[str, ...] = ("auto", "hf", "vllm")
#: A sampling temperature above 10 is uniform noise; 0 would be greedy, which gives a group nothing to compare.
MAX_TEMPERATURE = 10.0


@dataclass
class _OnlineRunConfig(_RunConfig):
    """Online RL (GRPO, RLOO): the policy samples `num_generations` completions per prompt, judges score them.

    `per_device_batch_size` counts completions, not prompts: a step sees batch x accumulation / num_generations
    prompts. The prompts come from a prompt set; `heldout_fraction` of them (chosen by the seed) are never trained
    on and are answered greedily before, during (every `eval_steps`) and after training to measure each judge.
    """

    learning_rate: float = field(default=1e-6, metadata=_help("Peak AdamW learning rate, in (0, 1]. TRL's default."))
    max_steps: int | None = field(
        default=100, metadata=_help("Optimizer steps (1 to 10,000,000); None trains num_train_epochs over the prompts.")
    )
    max_length: int | None = field(
        default=1024,
        metadata=_help(
            "Token limit per prompt + completion (8 to 1,048,576), or None: prompts longer than max_length - "
            "max_completion_length tokens are left out (counted as train_prompts_dropped)."
        ),
    )
    logging_steps: int = field(default=1, metadata=_help("Report rewards, KL and lengths every this many steps."))
    num_generations: int = field(
        default=4,
        metadata=_help(
            "Completions sampled per prompt (2 to 256); per_device_batch_size x gradient_accumulation_steps must "
            "divide by it."
        ),
    )
    max_completion_length: int = field(default=128, metadata=_help("Most tokens sampled per completion, 1 to 32,768."))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature, in (0, 10]."))
    heldout_fraction: float = field(
        default=0.1,
        metadata=_help(
            "Share of the prompt set's prompts kept out of training, in [0, 0.9]: each judge is measured on them "
            "(greedy answers). 0 leaves no held-out prompts; then set eval to false."
        ),
    )
    lora: bool = field(
        default=False, metadata=_help("Train a LoRA adapter (merged before saving) instead of all weights.")
    )
    lora_r: int = field(default=16, metadata=_help("LoRA rank, 1 to 4,096."))
    lora_alpha: float = field(default=32.0, metadata=_help("LoRA scaling numerator, in (0, 100000]."))
    lora_dropout: float = field(default=0.05, metadata=_help("Dropout on the LoRA input, in [0, 1)."))
    generation_backend: str = field(
        default="auto",
        metadata=_help(
            "Where completions are sampled: auto (vLLM when installed and on CUDA, else transformers' generate), "
            "hf, or vllm (the GPU extra, requirements-gpu.txt; colocated with training on the same GPU)."
        ),
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata=_help("Share of the GPU's memory vLLM may take beside training, in (0, 1]. TRL's default."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_generations = _int_at_least(self, "num_generations", 2, maximum=MAX_GENERATIONS)
        _require_choice(self, "generation_backend", GENERATION_BACKENDS)
        self.vllm_gpu_memory_utilization = _positive_float(self, "vllm_gpu_memory_utilization", high=1.0)
        self.max_completion_length = _int_at_least(self, "max_completion_length", 1, maximum=32_768)
        self.temperature = _positive_float(self, "temperature", high=MAX_TEMPERATURE)
        self.heldout_fraction = _float_in(self, "heldout_fraction", low=0.0, high=0.9)
        _require_bool(self, "lora")
        self.lora_r = _int_at_least(self, "lora_r", 1, maximum=MAX_LORA_RANK)
        self.lora_alpha = _positive_float(self, "lora_alpha", high=MAX_LORA_ALPHA)
        self.lora_dropout = _float_in(self, "lora_dropout", low=0.0, high=1.0, high_inclusive=False)
        name = type(self).__name__
        completions = self.per_device_batch_size * self.gradient_accumulation_steps
        if completions % self.num_generations:
            raise ConfigError(
                f"{name}: per_device_batch_size x gradient_accumulation_steps = {completions} completions per step "
                f"must divide by num_generations = {self.num_generations} (whole groups of one prompt's samples); "
                f"e.g. per_device_batch_size {self.num_generations * max(1, completions // self.num_generations)}.",
                field="num_generations",
            )
        if self.max_length is not None and self.max_completion_length >= self.max_length:
            raise ConfigError(
                f"{name}.max_completion_length ({self.max_completion_length}) leaves no room for the prompt within "
                f"max_length ({self.max_length}).",
                field="max_completion_length",
            )
        # The online trainers run inside the worker process (no `accelerate launch` path yet).
        if self.num_processes not in (None, 1) or self.fsdp:
            raise ConfigError(
                f"{name} trains in one process: set num_processes to 1 (or null) and fsdp to false.",
                field="fsdp" if self.fsdp else "num_processes",
            )
        if self.eval and self.heldout_fraction == 0:
            raise ConfigError(
                f"{name}: eval measures the judges on held-out prompts, but heldout_fraction is 0; raise it or set "
                "eval to false.",
                field="heldout_fraction",
            )


@dataclass
class GRPORunConfig(_OnlineRunConfig):
    """Group Relative Policy Optimization (TRL `GRPOTrainer`): advantages are rewards normalised within a group."""

    beta: float = field(
        default=0.04,
        metadata=_help(
            "KL penalty towards the starting policy, in (0, 100]. TRL's default is 0 (no reference, no KL logged); "
            "ours is > 0 so the KL curve is always there."
        ),
    )
    loss_type: str = field(
        default="dapo", metadata=_help(f"GRPO loss, one of: {', '.join(GRPO_LOSS_TYPES)}. TRL's default is 'dapo'.")
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.beta = _positive_float(self, "beta", high=MAX_LOSS_WEIGHT)
        _require_choice(self, "loss_type", GRPO_LOSS_TYPES)


@dataclass
class RLOORunConfig(_OnlineRunConfig):
    """REINFORCE Leave-One-Out (TRL `RLOOTrainer`): each completion's baseline is its group's other rewards."""

    num_generations: int = field(
        default=2, metadata=_help("Completions sampled per prompt (2 to 256); TRL's RLOO default is 2.")
    )
    beta: float = field(default=0.05, metadata=_help("KL penalty towards the starting policy, in (0, 100]."))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.beta = _positive_float(self, "beta", high=MAX_LOSS_WEIGHT)


#: Config class for each `TrainingRun.kind`.
RUN_CONFIGS: dict[str, type[_RunConfig]] = {
    "reward": RewardRunConfig,
    "dpo": DPORunConfig,
    "grpo": GRPORunConfig,
    "rloo": RLOORunConfig,
}
#: Run kinds that train on a prompt set with judges, not on a dataset version.
ONLINE_KINDS: tuple[str, ...] = ("grpo", "rloo")


# --- validation helpers: each returns the normalised value or raises ConfigError naming the field -------------------


_MODULE_NAME = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_MODULE_NAME_CHARS}}}")


def _fail(config: _RunConfig, name: str, expectation: str) -> ConfigError:
    value = getattr(config, name)
    try:
        shown = repr(value)
    except ValueError:  # an int over Python's 4,300-digit conversion limit
        shown = "an integer too long to print"
    if len(shown) > 60:  # 10**1000 or a long string: the message names the field, not the whole value
        shown = f"{shown[:40]}… ({len(shown):,} characters)"
    return ConfigError(f"{type(config).__name__}.{name} must be {expectation}, got {shown}.", field=name)


def _is_number(value: Any) -> bool:
    # bool is an int subclass: `True` as a learning rate is a bug, not 1.0.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_float(config: _RunConfig, name: str, *, high: float) -> float:
    value = getattr(config, name)
    if not _is_number(value) or not math.isfinite(value) or value <= 0 or value > high:
        raise _fail(config, name, f"a finite number > 0 and <= {high:g}")
    return float(value)


def _float_in(
    config: _RunConfig, name: str, *, low: float, high: float | None = None, high_inclusive: bool = True
) -> float:
    value = getattr(config, name)
    ok = _is_number(value) and math.isfinite(value) and value >= low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        if high is None:
            expectation = f"a finite number >= {low}"
        else:
            expectation = f"a number in [{low}, {high}{']' if high_inclusive else ')'}"
        raise _fail(config, name, expectation)
    return float(value)


@overload
def _int_at_least(
    config: _RunConfig, name: str, minimum: int, *, maximum: int, optional: Literal[False] = False
) -> int: ...


@overload
def _int_at_least(
    config: _RunConfig, name: str, minimum: int, *, maximum: int, optional: Literal[True]
) -> int | None: ...


def _int_at_least(config: _RunConfig, name: str, minimum: int, *, maximum: int, optional: bool = False) -> int | None:
    value = getattr(config, name)
    if value is None and optional:
        return None
    # JSON has one number type: accept 3.0 for 3, but not 3.5.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_number(value) or not isinstance(value, int) or not minimum <= value <= maximum:
        expectation = f"an integer >= {minimum} and <= {maximum:,}" + (" or null" if optional else "")
        raise _fail(config, name, expectation)
    return value


def _require_bool(config: _RunConfig, name: str, *, optional: bool = False) -> None:
    value = getattr(config, name)
    if not (isinstance(value, bool) or (optional and value is None)):
        raise _fail(config, name, "true or false" + (" or null" if optional else ""))


def _require_choice(config: _RunConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise _fail(config, name, f"one of {', '.join(repr(c) for c in choices)}")
