"""Policy → rollouts: k samples per prompt, batched, with the sampling settings recorded.

One interface, two engines: vLLM when it is installed and a GPU is present (fast continuous
batching), Hugging Face `generate` otherwise. No Django here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from training.trainers.formatting import completion_prompt

Prompt = str | list[dict]


@dataclass(frozen=True)
class GenerationConfig:
    n_samples: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 16
    backend: str = "auto"  # auto | hf | vllm

    def __post_init__(self) -> None:
        if not 1 <= self.n_samples <= 64:
            raise ValueError(f"n_samples must be between 1 and 64, not {self.n_samples}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}.")
        if not 1 <= self.max_new_tokens <= 8192:
            raise ValueError(f"max_new_tokens must be between 1 and 8192, not {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}.")
        if self.backend not in {"auto", "hf", "vllm"}:
            raise ValueError(f"backend must be auto, hf or vllm, not {self.backend!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    samples: list[list[str]]  # per prompt, n_samples completions
    backend: str
    device: str
    new_tokens: int
    seconds: float
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
) -> GenerationResult:
    """Sample `config.n_samples` completions for every prompt."""
    backend = config.backend
    if backend == "auto":
        backend = "vllm" if vllm_usable() else "hf"
    if backend == "vllm":
        return _generate_vllm(model_path, prompts, config, on_progress)
    return _generate_hf(model_path, prompts, config, on_progress)


def _render(tokenizer, prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return completion_prompt(prompt)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def _generate_hf(model_path: str, prompts: Sequence[Prompt], config: GenerationConfig, on_progress) -> GenerationResult:
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row continues its own prompt
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    texts = [_render(tokenizer, p) for p in prompts]
    generator_seed = config.seed
    samples: list[list[str]] = [[] for _ in texts]
    new_tokens = 0
    started = time.perf_counter()
    # Each prompt is repeated n_samples times; rows are chunked by batch_size prompts' worth.
    per_batch = max(1, config.batch_size)
    for start in range(0, len(texts), per_batch):
        chunk = texts[start : start + per_batch]
        batch = tokenizer(
            [t for t in chunk for _ in range(config.n_samples)],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(device)
        torch.manual_seed(generator_seed + start)
        with torch.no_grad():
            output = model.generate(
                **batch,
                do_sample=config.temperature > 0,
                temperature=config.temperature if config.temperature > 0 else None,
                top_p=config.top_p if config.temperature > 0 else None,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        completions = output[:, batch["input_ids"].shape[1] :]
        new_tokens += int((completions != tokenizer.pad_token_id).sum())
        decoded = tokenizer.batch_decode(completions, skip_special_tokens=True)
        for row, text in enumerate(decoded):
            samples[start + row // config.n_samples].append(text.strip())
        if on_progress:
            on_progress(min(start + per_batch, len(texts)), len(texts))
    seconds = time.perf_counter() - started
    label = device if device == "cpu" else f"cuda:0 {torch.cuda.get_device_name(0)}"
    return GenerationResult(samples=samples, backend="hf", device=label, new_tokens=new_tokens, seconds=seconds)


def _generate_vllm(
    model_path: str, prompts: Sequence[Prompt], config: GenerationConfig, on_progress
) -> GenerationResult:
    import time

    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=config.seed)
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(
        n=config.n_samples,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    started = time.perf_counter()
    outputs = llm.generate([_render(tokenizer, p) for p in prompts], params)
    seconds = time.perf_counter() - started
    samples = [[c.text.strip() for c in out.outputs] for out in outputs]
    new_tokens = sum(len(c.token_ids) for out in outputs for c in out.outputs)
    if on_progress:
        on_progress(len(prompts), len(prompts))
    return GenerationResult(samples=samples, backend="vllm", device="cuda", new_tokens=new_tokens, seconds=seconds)


def score_with_reward_model(
    *, model_path: str, prompts: Sequence[Prompt], completions: Sequence[str], batch_size: int = 16
) -> list[float]:
    """Reward-model scores of (prompt, completion) pairs, formatted as the reward trainer saw them."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
    texts = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if isinstance(prompt, str):
            texts.append(completion_prompt(prompt) + completion + (tokenizer.eos_token or ""))
        else:
            texts.append(
                tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
            )
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True).to(
            device
        )
        with torch.no_grad():
            scores.extend(model(**batch).logits[:, 0].float().tolist())
    return scores
