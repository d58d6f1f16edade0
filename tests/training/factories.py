"""Rankings made through the real services, for export and training tests."""

from __future__ import annotations

import json
import random

from labeling.models import PromptSet
from labeling.services.importing import import_file
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, PromptSetFactory


def ranked_prompt_set(
    *, n_prompts: int = 6, k: int = 3, overlap: int = 2, seed: int = 0, prefer=len, name: str | None = None
) -> PromptSet:
    """A set whose every task was ranked by `overlap` annotators, preferring higher `prefer(text)`."""
    rng = random.Random(seed)
    prompt_set = PromptSetFactory(rollouts_per_task=k, overlap=overlap, **({"name": name} if name else {}))
    lines = [
        json.dumps(
            {"prompt": f"Question {i}?", "responses": [f"answer {i}" + " more" * j for j in range(k)], "policy": "p0"}
        )
        for i in range(n_prompts)
    ]
    import_file(prompt_set=prompt_set, data="\n".join(lines))
    for annotator in AnnotatorFactory.create_batch(overlap):
        while (assignment := next_task_for(annotator, prompt_set=prompt_set, rng=rng)) is not None:
            texts = dict(assignment.task.rollouts.values_list("id", "text"))
            order = sorted(assignment.display_order, key=lambda rid: -prefer(texts[rid]))
            submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[rid] for rid in order])
    return prompt_set
