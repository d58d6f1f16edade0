"""A small demo prompt set, used by `seed_demo`, the browser tests and the benchmarks."""

from __future__ import annotations

import json
import random

TOPICS = [
    "photosynthesis",
    "the French revolution",
    "binary search",
    "compound interest",
    "plate tectonics",
    "the immune system",
    "supply and demand",
    "recursion",
    "the water cycle",
    "black holes",
    "vaccines",
    "the printing press",
    "neural networks",
    "inflation",
    "volcanoes",
    "the Roman empire",
    "public-key cryptography",
    "climate change",
    "DNA replication",
    "the stock market",
]
STYLES = [
    "{topic} is a topic. It exists.",
    "Here is a clear explanation of {topic}: it works step by step, and each step follows from the last.",
    "I don't know about {topic}.",
    "Great question! In short, {topic} can be understood through a simple example, then the general rule.",
    "{topic}?? whatever. look it up",
    "Let me explain {topic} carefully, with one concrete example and a one-line summary at the end.",
]


def demo_jsonl(n_prompts: int = 20, responses_per_prompt: int = 4, seed: int = 0, *, chat: bool = False) -> str:
    """The demo set as JSON Lines; `chat` makes each prompt one user turn, which an instruct model (SmolLM2, the
    `make run` base model) answers through its chat template instead of continuing the text as a document."""
    rng = random.Random(seed)
    lines = []
    for index in range(n_prompts):
        topic = TOPICS[index % len(TOPICS)] + ("" if index < len(TOPICS) else f" (part {index // len(TOPICS) + 1})")
        styles = rng.sample(STYLES, k=min(responses_per_prompt, len(STYLES)))
        lines.append(
            json.dumps(
                {
                    "prompt": _prompt(topic, chat=chat),
                    "responses": [
                        {"text": style.format(topic=topic), "policy": f"demo-policy-{i % 2}"}
                        for i, style in enumerate(styles)
                    ],
                }
            )
        )
    return "\n".join(lines) + "\n"


def _prompt(topic: str, *, chat: bool) -> str | list[dict[str, str]]:
    if not chat:
        return f"Explain {topic} to a curious twelve-year-old."
    # "One short paragraph": SmolLM2 then mostly ends on its own within the demo's 256 new tokens (3 of 4 samples
    # did, against 1 of 4 without it), so the quality gate's cut-off rule keeps most samples in the queue.
    return [{"role": "user", "content": f"Explain {topic} to a curious twelve-year-old, in one short paragraph."}]
