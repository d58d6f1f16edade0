"""Fixtures for the pure-ML trainer tests: a tiny local GPT-2 and synthetic preference data with a learnable signal.

The signal: the chosen answer is polite, the rejected one is curt or rude; both carry the same factual content.
Phrases come from pools and are combined at random with many topics, and the test split uses topics the train split
never shows, so passing the held-out checks needs the politeness pattern, not memorised pairs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POLITE_OPENERS = (
    "Of course, happy to help!",
    "Great question, thank you for asking.",
    "Sure, I am glad to help.",
    "Thanks for asking, kindly note:",
    "Certainly, with pleasure.",
    "Good question, and thank you.",
)
POLITE_CLOSERS = (
    "I hope this helps, thank you!",
    "Please let me know if you need more.",
    "Thanks, and good luck!",
    "Kind regards and best wishes.",
    "Happy to help again anytime, thanks.",
)
RUDE_OPENERS = (
    "Ugh, obviously.",
    "Whatever.",
    "Figure it out yourself.",
    "That is a dumb question.",
    "Seriously? Fine.",
    "Do not waste my time.",
)
RUDE_CLOSERS = (
    "Stop asking me.",
    "Not my problem.",
    "Now go away.",
    "Is that so hard?",
    "Leave me alone.",
)
QUESTIONS = ("How do I {}?", "What is the best way to {}?", "Can you tell me how to {}?", "Any tips to {}?")
TASKS = (
    ("water the garden", "Water early in the morning and soak the roots."),
    ("bake bread", "Knead the dough well and let it rise for an hour."),
    ("fix a flat tire", "Find the hole, patch it and pump the tire again."),
    ("learn a language", "Practice a little every day and speak with people."),
    ("save money", "Track your spending and set a monthly budget."),
    ("sleep better", "Keep a regular schedule and avoid screens at night."),
    ("write an essay", "Plan the outline first, then draft and revise."),
    ("clean a window", "Use warm soapy water and dry it with a cloth."),
    ("start running", "Begin with short easy runs and rest between them."),
    ("cook rice", "Rinse the rice, add water and simmer with a lid."),
    ("paint a wall", "Clean the wall, tape the edges and use two coats."),
    ("plant a tree", "Dig a wide hole, water deeply and add mulch."),
    ("tune a guitar", "Tune each string to a reference note, low to high."),
    ("study for exams", "Review a little each day and test yourself often."),
    ("make coffee", "Grind fresh beans and pour hot water slowly."),
    ("organise a desk", "Remove clutter and give every item a place."),
    ("walk a dog", "Use a short leash and walk at a steady pace."),
    ("brew tea", "Heat the water, steep the leaves and strain them."),
    ("build a shelf", "Measure twice, drill pilot holes and use a level."),
    ("wash a car", "Rinse first, wash from top to bottom and dry it."),
    ("read faster", "Preview headings first and avoid rereading lines."),
    ("stay focused", "Work in short blocks and silence notifications."),
    ("clean an oven", "Spread baking soda paste and wipe it off later."),
    ("keep plants alive", "Give them light, water weekly and drain the pot."),
    ("pack a suitcase", "Roll your clothes and put heavy items at the bottom."),
    ("make pancakes", "Whisk the batter lightly and cook on medium heat."),
    ("learn to swim", "Start in shallow water and practise floating first."),
    ("draw a portrait", "Sketch light guide lines before adding any detail."),
    ("repair a zipper", "Realign the teeth and gently squeeze the slider."),
    ("calm down", "Breathe slowly and count to ten before answering."),
    ("boil an egg", "Simmer it for nine minutes, then cool it in water."),
    ("clean shoes", "Brush off the dirt and wipe them with a damp cloth."),
)
# The test split's topics never appear in training.
TRAIN_TASKS, TEST_TASKS = TASKS[:24], TASKS[24:]


def _pairs(tasks, count: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for index in range(count):
        task, answer = tasks[index % len(tasks)]
        question = rng.choice(QUESTIONS).format(task)
        chosen = f" {rng.choice(POLITE_OPENERS)} {answer} {rng.choice(POLITE_CLOSERS)}"
        rejected = f" {rng.choice(RUDE_OPENERS)} {answer} {rng.choice(RUDE_CLOSERS)}"
        rows.append({"prompt": f"Question: {question}\nAnswer:", "chosen": chosen, "rejected": rejected})
    return rows


def _as_conversation(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    question = row["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:")
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def _write_split(rows: list[dict], path: Path, rng: random.Random) -> None:
    from datasets import Dataset

    # Bookkeeping columns as the exporter writes them; the loader must drop them before TRL sees them.
    extras = {
        "weight": [1.0] * len(rows),
        "annotator": [f"annotator-{rng.randrange(5)}" for _ in rows],
        "prompt_id": list(range(len(rows))),
    }
    columns = {key: [row[key] for row in rows] for key in ("prompt", "chosen", "rejected")}
    Dataset.from_dict({**columns, **extras}).to_parquet(str(path))


def _write_dataset(directory: Path, train_rows: list[dict], test_rows: list[dict]) -> Path:
    rng = random.Random(7)
    directory.mkdir(parents=True, exist_ok=True)
    _write_split(train_rows, directory / "train.parquet", rng)
    _write_split(test_rows, directory / "test.parquet", rng)
    return directory


@pytest.fixture(scope="session")
def preference_rows() -> dict[str, list[dict[str, str]]]:
    """96 train and 32 test pairs in TRL's standard (string) format, test topics disjoint from train topics."""
    rng = random.Random(1234)
    return {"train": _pairs(TRAIN_TASKS, 96, rng), "test": _pairs(TEST_TASKS, 32, rng)}


@pytest.fixture(scope="session")
def standard_dataset(tmp_path_factory, preference_rows) -> Path:
    """Directory with train.parquet/test.parquet in standard format, with extra exporter columns."""
    return _write_dataset(tmp_path_factory.mktemp("standard"), preference_rows["train"], preference_rows["test"])


@pytest.fixture(scope="session")
def conversational_dataset(tmp_path_factory, preference_rows) -> Path:
    """The same pairs as lists of {"role", "content"} messages (TRL's conversational format)."""
    return _write_dataset(
        tmp_path_factory.mktemp("conversational"),
        [_as_conversation(row) for row in preference_rows["train"]],
        [_as_conversation(row) for row in preference_rows["test"]],
    )


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory, preference_rows) -> Path:
    """A 2-layer, 64-dim GPT-2 with a BPE tokenizer trained on the dataset's own text, saved as a local checkpoint."""
    from training.trainers.tiny import DEFAULT_CORPUS, build_tiny_causal_lm

    corpus = [
        f"{row['prompt']}{row[key]}"
        for split in preference_rows.values()
        for row in split
        for key in ("chosen", "rejected")
    ]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-gpt2"), corpus=[*corpus, *DEFAULT_CORPUS], seed=0)
