"""Judges: each kind on hand-checked cases, not-applicable cases, failures that never raise, weights, TRL shape."""

from __future__ import annotations

import threading

import pytest

from training.judges.base import JudgeInput, Reference, combine, reward_function
from training.judges.build import build_judge
from training.judges.config import ConfigError, judge_config
from training.judges.unit_tests import extract_code

ANSWER_42 = Reference(answer="42")


def test_exact_compares_with_the_reference_answer_and_is_not_applicable_without_one():
    judge = build_judge("exact", {"extract": "last_line"})
    assert judge.score("6*7?", "Let me think.\n 42 ", ANSWER_42).score == 1.0
    assert judge.score("6*7?", "Let me think.\n41", ANSWER_42).score == 0.0  # negative control
    missing = judge.score("6*7?", "42")
    assert missing.score is None and missing.reason == "no_reference_answer"


def test_regex_matches_a_pattern_with_the_answer_escaped_into_it():
    judge = build_judge("regex", {"pattern": r"answer is {answer}\b"})
    assert judge.score("q", "The answer is 3.5.", Reference(answer="3.5")).score == 1.0
    assert judge.score("q", "The answer is 305.", Reference(answer="3.5")).score == 0.0  # "." is escaped
    assert judge.score("q", "The answer is 3.5.").score is None


def test_a_catastrophic_regex_times_out_as_zero_instead_of_hanging():
    judge = build_judge("regex", {"pattern": r"^(a|aa)+$", "timeout_seconds": 0.05})
    result = judge.score("q", "a" * 40 + "b")
    assert result.score == 0.0 and result.reason == "timeout"


def test_math_judges_final_answer_equivalence():
    judge = build_judge("math", {})
    assert judge.score("6*7?", "So the result is $\\frac{84}{2}$.", ANSWER_42).score == 1.0
    assert judge.score("6*7?", "I get 43.", ANSWER_42).score == 0.0
    assert judge.score("6*7?", "no idea", ANSWER_42).reason == "no_answer_found"
    assert judge.score("6*7?", "42").score is None


def test_math_judge_works_off_the_main_thread_with_its_signal_timeouts_off():
    """math-verify's SIGALRM timeouts would raise in a worker thread; the judge turns them off there."""
    judge = build_judge("math", {})
    results = []
    worker = threading.Thread(target=lambda: results.append(judge.score("q", "It is 42.", ANSWER_42)))
    worker.start()
    worker.join()
    assert results[0].score == 1.0 and results[0].details["timeouts"].startswith("off")


def test_length_scores_one_inside_the_range_and_shrinks_outside():
    judge = build_judge("length", {"unit": "words", "min": 4, "max": 8})
    assert judge.score("q", "one two three four five").score == 1.0
    assert judge.score("q", "one two").score == pytest.approx(2 / 4)
    assert judge.score("q", " ".join(["w"] * 16)).score == pytest.approx(8 / 16)


def test_format_checks_json_code_blocks_and_whole_patterns():
    assert build_judge("format", {"require": "json"}).score("q", '{"a": [1, 2]}').score == 1.0
    assert build_judge("format", {"require": "json"}).score("q", "{'a': 1}").score == 0.0
    code = build_judge("format", {"require": "code_block"})
    assert code.score("q", "Here:\n```python\nprint(1)\n```").score == 1.0
    assert code.score("q", "print(1)").score == 0.0
    tags = build_judge("format", {"require": "regex", "pattern": r"<think>.*?</think>\s*<answer>.*?</answer>"})
    assert tags.score("q", "<think>a\nb</think> <answer>4</answer>").score == 1.0
    assert tags.score("q", "<answer>4</answer>").score == 0.0


def test_code_is_extracted_from_python_fences_first():
    text = "Sure:\n```js\nno()\n```\n```python\ndef f():\n    return 1\n```\nand\n```py\nX = 2\n```"
    assert extract_code(text) == "def f():\n    return 1\n\n\nX = 2\n"
    assert extract_code("def g(): return 3") == "def g(): return 3"
    assert extract_code("Just prose, no code.") is None


TESTS = "from solution import add\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_unit_tests_judge_passes_right_code_and_fails_wrong_code_with_the_reason():
    judge = build_judge("unit_tests", {"wall_seconds": 5})
    right = judge.score("Write add.", "```python\ndef add(a, b):\n    return a + b\n```", Reference(tests=TESTS))
    wrong = judge.score("Write add.", "```python\ndef add(a, b):\n    return a - b\n```", Reference(tests=TESTS))
    assert right.score == 1.0 and right.reason == "passed"
    assert wrong.score == 0.0 and wrong.reason == "exit code 1" and "AssertionError" in wrong.details["stderr"]
    assert judge.score("Write add.", "def add(a, b): return a + b").score is None  # no tests to run


def test_unit_tests_judge_scores_a_hanging_solution_zero_with_timeout():
    judge = build_judge("unit_tests", {"wall_seconds": 1, "cpu_seconds": 1})
    hang = "```python\ndef add(a, b):\n    while True:\n        pass\n```"
    result = judge.score("Write add.", hang, Reference(tests=TESTS))
    assert result.score == 0.0 and result.reason in {"timeout", "killed by SIGXCPU"}


def test_a_crashing_judge_gives_none_with_the_error_never_an_exception():
    judge = build_judge("reward_model", {}, model_path="/nonexistent/reward-model")
    results = judge.score_batch([JudgeInput("q", "a"), JudgeInput("q", "b")])
    assert [r.score for r in results] == [None, None]
    assert results[0].reason == "judge_error" and "nonexistent" in results[0].details["error"]


def test_configs_name_the_key_at_fault():
    with pytest.raises(ConfigError) as error:
        judge_config("regex", {"pattren": "x"})
    assert error.value.field == "pattren" and "did you mean 'pattern'" in str(error.value)
    with pytest.raises(ConfigError, match="does not compile"):
        judge_config("regex", {"pattern": "(unclosed"})
    with pytest.raises(ConfigError) as error:
        judge_config("unit_tests", {"wall_seconds": 10**9})
    assert error.value.field == "wall_seconds"
    with pytest.raises(ConfigError) as error:
        judge_config("oracle", {})
    assert error.value.field == "kind"


def test_weighted_combination_skips_judges_without_an_opinion_and_monitors():
    """Hand-worked: 0.5*1 + 2*0.25 = 1.0; a None is skipped; weight 0 (a monitor) never counts; all None -> None."""
    math_scores = [1.0, None, None]
    length_scores = [0.25, 0.5, None]
    monitor = [100.0, 100.0, 100.0]
    assert combine([math_scores, length_scores, monitor], [0.5, 2.0, 0.0]) == [1.0, 1.0, None]


def test_a_judge_is_a_trl_reward_function_reading_reference_columns():
    """TRL calls reward_funcs(prompts=, completions=, completion_ids=, **dataset columns); conversational
    completions are message lists."""
    reward = reward_function(build_judge("math", {}), name="math_judge")
    scores = reward(
        prompts=["2+2?", "3+3?", "no reference"],
        completions=[[{"role": "assistant", "content": "It is 4."}], "It is 7.", "5"],
        completion_ids=[[1], [2], [3]],
        answer=["4", "6", None],
        trainer_state=None,
    )
    assert reward.__name__ == "math_judge" and scores == [1.0, 0.0, None]


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_base_model, tmp_path_factory):
    """A reward model (fresh scalar head) on the tiny GPT-2, saved with its tokenizer like a registered one."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    config = AutoConfig.from_pretrained(tiny_base_model, num_labels=1)
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    path = tmp_path_factory.mktemp("tiny-reward")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_reward_model_judge_scores_the_tokens_the_reward_trainer_trains_on(tiny_reward_model, tmp_path):
    """Token level: TRL's own RewardTrainer preparation (EOS appended, prompt + completion tokenized) gives the ids;
    the judge's score equals the model's score of exactly those ids, and not of the same text without the EOS
    (the control: the check can tell the two apart)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from training.trainers.formatting import completion_prompt

    prompt, completion = "Why is the sky blue?", "Because of Rayleigh scattering, thank you for asking."
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    rows = Dataset.from_list([{"prompt": completion_prompt(prompt), "chosen": completion, "rejected": "No."}])
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, dataset_num_proc=None)
    trained_ids = RewardTrainer._prepare_dataset(None, rows, tokenizer, args, "train")[0]["chosen_ids"]  # type: ignore[arg-type]
    assert trained_ids[-1] == tokenizer.eos_token_id

    def score(ids: list[int]) -> float:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    judged = build_judge("reward_model", {}, model_path=str(tiny_reward_model)).score(prompt, completion)
    assert judged.reason == "scored"
    assert judged.score == pytest.approx(score(trained_ids), abs=1e-5)
    assert abs(score(trained_ids[:-1]) - score(trained_ids)) > 1e-4  # without the EOS the score differs
