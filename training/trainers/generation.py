"""Policy → rollouts: k samples per prompt, batched, every sampling setting explicit and each sample's finish recorded.

One interface, two engines: vLLM when it is installed and a GPU is present (fast continuous batching), Hugging Face
`generate` otherwise. No Django here.

- Prompts are token ids from `tokenization.prompt_ids`, the prompt exactly as DPO training tokenizes it (the BOS a
  Llama-3-style tokenizer adds, the chat template's generation prompt), never text re-encoded by the engine.
- Sampling is what `GenerationConfig` says and nothing else: transformers fills any setting left unset from the
  model's `generation_config.json` and then from its own defaults (top_k=50), so HF generation runs under a fresh
  generation config that holds only the token ids, with every sampling parameter passed explicitly.
- Each sample ends with a finish reason: "stop" (it emitted a stop token: the tokenizer's EOS, which training
  appends, or the model's end-of-turn ids) or "length" (cut off at max_new_tokens). A cut-off sample is not an
  answer that ended; TRL would train it as one (it appends EOS), so callers keep it apart.
- Reward scoring tokenizes with `tokenization.reward_sequence_ids`, the sequence `RewardTrainer` trained on.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from training.trainers.tokenization import Prompt, prompt_ids, reward_sequence_ids, stop_token_ids

FINISH_STOP = "stop"
FINISH_LENGTH = "length"

# Bounds a form or API request is checked against. They catch mistakes, not taste: past temperature 5 or a
# repetition penalty of 2 samples are noise; top_k above the size of any vocabulary in use is "off" spelled oddly.
MAX_SAMPLES = 64
MAX_TEMPERATURE = 5.0
MAX_TOP_K = 1_000_000
MIN_REPETITION_PENALTY = 0.5
MAX_REPETITION_PENALTY = 2.0
MAX_NEW_TOKENS = 8192
MAX_SEED = 2**32 - 1  # numpy's seed range; torch accepts more, but one bound for every engine
MAX_BATCH_SIZE = 1024

#: The settings that decide what is sampled, recorded with every rollout (batch_size and backend only decide speed).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings, all explicit: temperature 0 is greedy; top_k 0, top_p 1, repetition_penalty 1 are off."""

    n_samples: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 16
    backend: str = "auto"  # auto | hf | vllm

    def __post_init__(self) -> None:
        _check_int("n_samples", self.n_samples, 1, MAX_SAMPLES)
        _check_float("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        _check_int("top_k", self.top_k, 0, MAX_TOP_K)
        _check_float("repetition_penalty", self.repetition_penalty, MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY)
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_int("seed", self.seed, 0, MAX_SEED)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        if self.backend not in {"auto", "hf", "vllm"}:
            raise ValueError(f"backend must be auto, hf or vllm, not {self.backend!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def sampling(self) -> dict[str, Any]:
        """The settings that decide the samples, as recorded with each rollout."""
        return {key: getattr(self, key) for key in SAMPLING_KEYS} | {"do_sample": not self.greedy}


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}.")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, not {value!r}.")
    if value < low or value > high or (low_open and value == low):
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"{name} must be in {interval}, not {value}.")


@dataclass
class GenerationResult:
    samples: list[list[str]]  # per prompt, n_samples completions
    backend: str
    device: str
    new_tokens: int
    seconds: float
    #: Per prompt, per sample: FINISH_STOP or FINISH_LENGTH (parallel to `samples`).
    finish_reasons: list[list[str]] = field(default_factory=list)
    #: The ids that ended a sample (recorded with the rollouts: which "end" a "stop" means).
    stop_token_ids: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def generate(
    *,
    model_path: str,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    on_progress: Callable[[int, int], None] | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> GenerationResult:
    """Sample `config.n_samples` completions for every prompt.

    `engine_options` are the operator's settings for the vLLM engine (`gpu_memory_utilization`, `dtype`); they
    change where and how fast samples are drawn, never what is sampled.
    """
    if resolved_backend(config) == "vllm":
        return _generate_vllm(model_path, prompts, config, on_progress, engine_options or {})
    return _generate_hf(model_path, prompts, config, on_progress)


def resolved_backend(config: GenerationConfig) -> str:
    """ "vllm" or "hf": 'auto' means vLLM where it is installed and a GPU is present."""
    if config.backend != "auto":
        return config.backend
    return "vllm" if vllm_usable() else "hf"


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """The ids each prompt is continued from: the prompt exactly as DPO training tokenizes it (`prompt_ids`)."""
    return [prompt_ids(tokenizer, prompt) for prompt in prompts]


def finish_of(completion_ids: Sequence[int], stop_ids: Sequence[int]) -> tuple[int, str]:
    """(tokens that belong to the sample, finish reason) for one generated row.

    A row that holds a stop id ended there ("stop"; the stop token counts, what follows is padding). A row without one
    ran until the engine stopped it at max_new_tokens ("length"): generation only ends early once every row stopped.
    """
    stops = set(stop_ids)
    for index, token_id in enumerate(completion_ids):
        if token_id in stops:
            return index + 1, FINISH_STOP
    return len(completion_ids), FINISH_LENGTH


def hf_sampling_kwargs(config: GenerationConfig) -> dict[str, Any]:
    """Every parameter transformers' sampling reads, set: nothing left for the model's or the library's defaults."""
    if config.greedy:
        # Greedy ignores temperature/top-k/top-p; the repetition penalty still applies, so it is set like the rest.
        return {"do_sample": False, "repetition_penalty": config.repetition_penalty}
    return {
        "do_sample": True,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,  # 0 is off; left unset, transformers would apply top_k=50
        "repetition_penalty": config.repetition_penalty,
    }


def fresh_generation_config(*, stop_ids: list[int], pad_token_id: int, bos_token_id: int | None) -> Any:
    """A transformers `GenerationConfig` holding only token ids: what replaces the model's own before `generate`.

    `generate` fills every setting the call leaves unset from `model.generation_config` (a checkpoint's
    generation_config.json may carry top_k, repetition_penalty, min_p, no_repeat_ngram_size, bad words...), so
    passing our settings is not enough: the model's defaults must go too.
    """
    from transformers import GenerationConfig as HFGenerationConfig

    return HFGenerationConfig(bos_token_id=bos_token_id, eos_token_id=list(stop_ids), pad_token_id=pad_token_id)


def _generate_hf(model_path: str, prompts: Sequence[Prompt], config: GenerationConfig, on_progress) -> GenerationResult:
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    if not stops:
        raise ValueError(
            f"{model_path}: neither the tokenizer nor the model names an EOS token; samples could not end."
        )
    # Padding is masked out; any id does. The tokenizer's pad where it has one, else the first stop id.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    model.generation_config = fresh_generation_config(
        stop_ids=stops, pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id
    )
    encoded = encode_prompts(tokenizer, prompts)
    samples: list[list[str]] = [[] for _ in encoded]
    finishes: list[list[str]] = [[] for _ in encoded]
    new_tokens = 0
    started = time.perf_counter()
    # Each prompt is repeated n_samples times; rows are chunked by batch_size prompts' worth.
    per_batch = config.batch_size
    for start in range(0, len(encoded), per_batch):
        rows = [ids for ids in encoded[start : start + per_batch] for _ in range(config.n_samples)]
        input_ids, attention_mask = _left_padded(rows, pad_id, torch, device)
        torch.manual_seed(config.seed + start)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=config.max_new_tokens,
                **hf_sampling_kwargs(config),
            )
        for row, completion in enumerate(output[:, input_ids.shape[1] :].tolist()):
            used, reason = finish_of(completion, stops)
            new_tokens += used
            prompt_index = start + row // config.n_samples
            samples[prompt_index].append(tokenizer.decode(completion[:used], skip_special_tokens=True).strip())
            finishes[prompt_index].append(reason)
        if on_progress:
            on_progress(min(start + per_batch, len(encoded)), len(encoded))
    seconds = time.perf_counter() - started
    label = device if device == "cpu" else f"cuda:0 {torch.cuda.get_device_name(0)}"
    return GenerationResult(
        samples=samples,
        backend="hf",
        device=label,
        new_tokens=new_tokens,
        seconds=seconds,
        finish_reasons=finishes,
        stop_token_ids=stops,
    )


def _left_padded(rows: list[list[int]], pad_id: int, torch: Any, device: str) -> tuple[Any, Any]:
    """Decoder-only batches pad on the left, so every row continues its own prompt."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=device)
    return input_ids, attention_mask


def _generate_vllm(
    model_path: str,
    prompts: Sequence[Prompt],
    config: GenerationConfig,
    on_progress: Callable[[int, int], None] | None,
    engine_options: Mapping[str, Any],
) -> GenerationResult:
    import time

    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=config.seed, **engine_options)
    tokenizer = llm.get_tokenizer()
    stops = stop_token_ids(tokenizer, llm.llm_engine.model_config.hf_config.eos_token_id)
    # Explicit SamplingParams: vLLM applies the model's generation_config.json only to requests that bring none.
    params = SamplingParams(
        n=config.n_samples,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k or -1,  # -1 is "off" in every vLLM version (newer ones also accept 0)
        repetition_penalty=config.repetition_penalty,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
        stop_token_ids=stops,
    )
    started = time.perf_counter()
    # Token ids, not text: vLLM would encode text with its own special-token rule (a second BOS, or none).
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in encode_prompts(tokenizer, prompts)], params)
    seconds = time.perf_counter() - started
    samples = [[c.text.strip() for c in out.outputs] for out in outputs]
    finishes = [[FINISH_LENGTH if c.finish_reason == "length" else FINISH_STOP for c in out.outputs] for out in outputs]
    new_tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    if on_progress:
        on_progress(len(prompts), len(prompts))
    return GenerationResult(
        samples=samples,
        backend="vllm",
        device="cuda",
        new_tokens=new_tokens,
        seconds=seconds,
        finish_reasons=finishes,
        stop_token_ids=stops,
    )


def _reward_model(model_path: str) -> tuple[Any, Any]:
    """(tokenizer, model) on the best device, the model told its pad id as TRL tells it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
    text_config = model.config.get_text_config()
    if text_config.pad_token_id is None:
        # TRL pads with the tokenizer's pad, else EOS, and tells the model (which scores the last non-pad token).
        text_config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
    return tokenizer, model


def score_with_reward_model(
    *,
    model_path: str,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    batch_size: int = 16,
) -> list[float]:
    """Reward-model scores of (prompt, completion) pairs, on the token sequences the reward trainer trained on.

    Sequences are `reward_sequence_ids` (one BOS, EOS on standard rows, the chat template for conversational
    prompts), right-padded with the pad id the trainer saved in the model's config, as TRL's collator pads them.
    A sequence longer than the model's positions keeps its start (training would have dropped it).
    """
    tokenizer, model = _reward_model(model_path)
    return score_with_loaded_reward_model(tokenizer, model, prompts, completions, batch_size=batch_size)


def load_reward_model(model_path: str) -> tuple[Any, Any]:
    """(tokenizer, model) for `score_with_loaded_reward_model`, for callers that keep models loaded themselves."""
    return _reward_model(model_path)


def score_with_loaded_reward_model(
    tokenizer: Any, model: Any, prompts: Sequence[Prompt], completions: Sequence[str], *, batch_size: int = 16
) -> list[float]:
    """`score_with_reward_model` on a model already loaded (`load_reward_model`)."""
    import torch

    device = model.device
    text_config = model.config.get_text_config()
    pad_id = text_config.pad_token_id
    limit = getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)
    sequences = [
        reward_sequence_ids(tokenizer, prompt, completion)[:limit]
        for prompt, completion in zip(prompts, completions, strict=True)
    ]
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        rows = sequences[start : start + batch_size]
        width = max(len(ids) for ids in rows)
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in rows], device=device)
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows], device=device)
        with torch.no_grad():
            scores.extend(model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float().tolist())
    return scores
