"""The quality gate: degenerate samples stay out of the queue and are counted on the generation run, by reason."""

from __future__ import annotations

import json

import pytest

from labeling.models import Rollout
from labeling.services.importing import import_file
from tests.factories import PromptSetFactory
from training.models import GenerationRun, ModelVersion
from training.services import generation
from training.services.rollout_quality import (
    EMPTY,
    REPETITION,
    REPLACEMENT_CHARACTER,
    TRUNCATED,
    QualityGate,
    rejection_reason,
    screen_if_enabled,
    screen_samples,
)
from training.trainers.generation import GenerationResult

GOOD_ANSWER = (
    "Photosynthesis is how plants make their own food. Leaves catch sunlight with a green pigment called "
    "chlorophyll, take in water through the roots and carbon dioxide from the air, and turn them into sugar. "
    "The oxygen we breathe is what they give off."
)


@pytest.mark.parametrize(
    "text",
    [
        GOOD_ANSWER,
        "Paris.",
        "Wow!!!!",  # a short run of punctuation is not a loop
        "1. Mix the flour.\n2. Add the water.\n3. Knead the dough.\n4. Let it rise.\n5. Bake it.",
        "def f(x):\n    return x\n\n\ndef g(x):\n    return x\n",
        "Yes, yes, yes — I am sure.",
    ],
)
def test_ordinary_answers_pass_the_gate(text):
    """Answers, lists, code and a little emphatic repetition are queued."""
    assert rejection_reason(text, "stop") is None


@pytest.mark.parametrize(
    ("text", "finish_reason", "reason"),
    [
        ("", "stop", EMPTY),
        ("   \n\t", None, EMPTY),
        ("The answer is \ufffd\ufffd.", "stop", REPLACEMENT_CHARACTER),
        (GOOD_ANSWER, "length", TRUNCATED),
        ("Plants make food. " + "the the " * 30, "stop", REPETITION),
        ("I am sorry. " * 6, "stop", REPETITION),
        ("!" * 60, "stop", REPETITION),
        # Two sentences in turn: no back-to-back copy at the end, but few new word trigrams.
        ("Plants need light to grow. Water helps them grow tall. " * 3 + "Plants need light.", "stop", REPETITION),
    ],
)
def test_degenerate_samples_are_refused_with_their_reason(text, finish_reason, reason):
    """Each kind of broken sample is named by the reason the run page counts."""
    assert rejection_reason(text, finish_reason) == reason


def test_an_unknown_finish_reason_is_never_held_against_a_sample():
    """A missing finish reason (older generations, other backends) means unknown, not cut off."""
    assert rejection_reason(GOOD_ANSWER, None) is None
    assert rejection_reason(GOOD_ANSWER, "length", QualityGate(reject_truncated=False)) is None


def test_screening_keeps_order_and_counts_each_refusal_once():
    """Kept samples stay in order per prompt (finish reasons alongside); refusals are counted by reason."""
    screened = screen_samples(
        [[GOOD_ANSWER, "", "Paris."], ["x\ufffd", GOOD_ANSWER]],
        finish_reasons=[["stop", "stop", "length"], ["stop"]],  # the last sample's reason is missing: unknown
    )
    assert screened.kept == [[GOOD_ANSWER], [GOOD_ANSWER]]
    assert screened.kept_finish_reasons == [["stop"], [None]]
    assert dict(screened.rejected) == {EMPTY: 1, TRUNCATED: 1, REPLACEMENT_CHARACTER: 1}
    assert screened.rejected_total == 3


def test_the_gate_can_be_turned_off(settings):
    """PREFLOOP_ROLLOUT_QUALITY_GATE=0 queues every sample (the empty ones are still dropped by labeling)."""
    settings.PREFLOOP_ROLLOUT_QUALITY_GATE = False
    screened = screen_if_enabled([["x\ufffd", GOOD_ANSWER]])
    assert screened.kept == [["x\ufffd", GOOD_ANSWER]] and screened.rejected_total == 0
    settings.PREFLOOP_ROLLOUT_QUALITY_GATE = True
    assert screen_if_enabled([["x\ufffd", GOOD_ANSWER]]).rejected_total == 1


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="min_distinct_trigram_share"):
        QualityGate(min_distinct_trigram_share=1.5)


@pytest.mark.django_db
def test_a_generation_round_queues_only_what_passed_and_counts_the_rest_on_the_run():
    """The generation service writes the samples that passed and records the refusals on its run."""
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    lines = [json.dumps({"prompt": f"Explain topic {i}.", "responses": ["a", "b"], "policy": "old"}) for i in range(2)]
    import_file(prompt_set=prompt_set, data="\n".join(lines))
    policy = ModelVersion.objects.create(name="base", kind=ModelVersion.Kind.BASE, path="/unused")
    run = generation.start_generation(policy=policy, prompt_set=prompt_set, settings={"n_samples": 3}, dispatch=False)
    GenerationRun.objects.filter(pk=run.pk).update(status=GenerationRun.Status.RUNNING)
    prompt_ids = sorted(prompt_set.prompts.values_list("pk", flat=True))
    other_answer = GOOD_ANSWER.replace("Photosynthesis", "Respiration")
    result = GenerationResult(
        samples=[[GOOD_ANSWER, "loop " * 40, other_answer], ["\ufffd\ufffd", GOOD_ANSWER, ""]],
        backend="hf",
        device="cpu",
        new_tokens=100,
        seconds=1.0,
    )
    generation._write(run, prompt_ids, result)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED
    assert run.rollouts_rejected == 3
    assert run.rejected_reasons == {REPETITION: 1, REPLACEMENT_CHARACTER: 1, EMPTY: 1}
    queued = set(Rollout.objects.filter(policy="base").values_list("text", flat=True))
    assert queued == {GOOD_ANSWER, other_answer}
    assert run.rollouts_created == 3  # GOOD_ANSWER under each of the two prompts, and other_answer
