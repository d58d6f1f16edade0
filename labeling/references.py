"""A prompt's references (expected answer, test script) as annotators may see them.

References are imported for judges (`Prompt.reference_answer`, `reference_tests`) and stay hidden from annotators
unless their prompt set says otherwise (`PromptSet.show_references`): the ranking page and the task API show them
only then. Both read them through `assignment_references`, so "only when the set says so" is decided in one place.
The lease statement (labeling.services.queue) reads them in its one round trip, already filtered by the set's flag
(`LEASE_REFERENCES_SQL`), and attaches the result to the assignment: a hidden set costs no extra query.
"""

from __future__ import annotations

import json
from typing import TypedDict

from labeling.models import Assignment, Prompt, PromptSet


class References(TypedDict):
    answer: str  # "" when the prompt has no reference answer
    tests: str  # "" when it has no test script


#: For the lease statement's final SELECT (`t` the task, `p` its prompt): the references as JSON text where the
#: task's set shows them, NULL otherwise.
LEASE_REFERENCES_SQL = (
    "(SELECT json_build_object('answer', p.reference_answer, 'tests', p.reference_tests) FROM {prompt_set} rs"
    " WHERE rs.id = t.prompt_set_id AND rs.show_references)::text"
)


def annotator_references(*, shown: bool, answer: str, tests: str) -> References | None:
    """The references to show, or None where the set hides them or the prompt has neither."""
    if not shown or not (answer or tests):
        return None
    return {"answer": answer, "tests": tests}


def references_for(prompt_set: PromptSet, prompt: Prompt) -> References | None:
    """The references annotators of `prompt_set` may see for `prompt`. The prompt's (possibly deferred) reference
    columns are read only when the set shows them."""
    if not prompt_set.show_references:
        return None
    return annotator_references(shown=True, answer=prompt.reference_answer, tests=prompt.reference_tests)


def assignment_references(assignment: Assignment) -> References | None:
    """The references to show with a leased assignment: those the lease statement read with it (Postgres), else read
    now from its task's set and prompt."""
    if hasattr(assignment, "references"):  # set by labeling.services.queue, already filtered by the set's flag
        return assignment.references
    return references_for(assignment.task.prompt_set, assignment.task.prompt)


def annotator_references_json(text: str | None) -> References | None:
    """`annotator_references` of what LEASE_REFERENCES_SQL read (NULL: the set hides them)."""
    if text is None:
        return None
    data = json.loads(text)
    return annotator_references(shown=True, answer=data["answer"] or "", tests=data["tests"] or "")
