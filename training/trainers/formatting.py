"""How a plain-text prompt meets its completion — one rule shared by export, training and generation.

TRL's standard format concatenates prompt and completion with nothing between them, so a prompt
that does not end in whitespace would train the model on "...?Answer". We end such prompts with a
newline, in the exported rows and when sampling, so training and generation see the same text.
"""

from __future__ import annotations


def completion_prompt(prompt: str) -> str:
    return prompt if not prompt or prompt[-1].isspace() else prompt + "\n"
