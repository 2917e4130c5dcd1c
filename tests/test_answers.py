"""The book's one answer rule: extraction after the first ``####``, exact digit sequences, GSM8K numbers by value,
and every chapter's scorer giving the same verdict."""
from types import SimpleNamespace

import pytest

from reasoning_lib import answers, data, dot, evaluate, frontier
from reasoning_lib.data.examples import Example
from reasoning_lib.dot.inference import Sampler

# (predicted answer, gold answer, right?): the table every scorer of the book must agree on
CASES = [
    ("0 5 6 1", "0 5 6 1", True),
    (" 0  5 6\t1 ", "0 5 6 1", True),
    ("5 6 1", "0 5 6 1", False),  # 165 against 1650: the units digit 0 is missing
    ("0 0 5 6 1", "0 5 6 1", False),
    ("0561", "0 5 6 1", False),  # a digit answer is written in the same spaced format
    ("1 6 5 0", "0 5 6 1", False),
    ("7", "7", True),
    ("1,000", "1000", True),
    ("1000.0", "1000", True),
    ("2.50", "2.5", True),
    ("-3", "-3", True),
    ("3", "-3", False),
    ("72", "72", True),
    ("7 2", "72", False),  # a number is written as one
    ("71", "72", False),
    ("2 #### 3", "3", False),  # what a sample writing two answers extracts to
    (None, "72", False),
    (None, "0 5 6 1", False),
    ("yes", "yes", True),
    ("twelve", "12", False),
]


def prediction_text(predicted):
    """A generated target that writes ``predicted`` after its rationale (no ``####`` when there is no answer)."""
    return "1 2 + 3 4" if predicted is None else f"1 2 + 3 4 #### {predicted}"


class Scripted(Sampler):
    """A DoT sampler whose single pass returns a fixed generated target per question (no model)."""

    def _pass(self, sources, generator, record):
        return [self.script[s] for s in sources], SimpleNamespace(nfe=1, chain=[], times=[])


def scripted_sampler(script: dict) -> Scripted:
    sampler = Scripted(model=None, graph=None, noise=None, tokenizer=None, layout=None)
    sampler.script = script
    return sampler


def test_units_digit_zero_products_do_not_match():
    assert not answers.answers_match("5 6 1", "0 5 6 1")
    assert not answers.answers_match("0 5 6 1", "5 6 1")
    assert answers.answers_match("0 5 6 1", "0 5 6 1")
    assert not answers.answers_match("1 2", "12") and not answers.answers_match("12", "1 2")


def test_gsm8k_numbers_match_across_commas_decimals_and_signs():
    assert answers.answers_match("1,000", "1000") and answers.answers_match("1000", "1,000")
    assert answers.answers_match("2.50", "2.5") and answers.answers_match("+5", "5.0")
    assert answers.answers_match("-3", "-3") and not answers.answers_match("3", "-3")
    assert not answers.answers_match("72 apples", "72") and not answers.answers_match(None, "72")
    assert answers.parse_number("1,234.5") == answers.parse_number("1234.50")
    assert answers.parse_number("8 5 6") is None and answers.parse_number("1e3") is None


def test_answer_kind_reads_the_gold_format():
    assert [answers.answer_kind(g) for g in ["0 5 6 1", " 8  5 "]] == ["digits"] * 2
    assert answers.answer_kind("7") == "number"  # a GSM8K answer 7 accepts 7.0; a spaced 0 7 is still wrong
    assert answers.answers_match("7.0", "7") and not answers.answers_match("0 7", "7")
    assert [answers.answer_kind(g) for g in ["1,000", "-3", "2.5", "72"]] == ["number"] * 4
    assert [answers.answer_kind(g) for g in ["twelve", "12 34", "1 2 a"]] == ["text"] * 3


def test_extraction_takes_the_first_marker_and_normalises_whitespace():
    assert answers.extract_answer("6 5 2 0 + 0 4 ####  6\t9 2 \n") == "6 9 2"
    assert answers.extract_answer("<<1+1=2>> #### 2 #### 3") == "2 #### 3"
    assert answers.extract_answer("1 2 + 3 4") is None and answers.extract_answer(None) is None
    assert answers.extract_answer("####") == ""
    assert data.extract_answer is answers.extract_answer and dot.extract_answer is answers.extract_answer


def test_is_correct_reads_both_targets_and_names_a_bad_gold():
    assert answers.is_correct("5 2 0 + 0 4 #### 0 5 6 1", "#### 0 5 6 1")
    assert not answers.is_correct("#### 5 6 1", "#### 0 5 6 1")
    assert not answers.is_correct(None, "#### 72") and not answers.is_correct("no answer", "#### 72")
    with pytest.raises(ValueError, match="has no '####'"):
        answers.is_correct("#### 72", "72")
    with pytest.raises(ValueError, match="non-empty"):
        answers.answers_match("72", " ")


def test_digit_positions():
    assert answers.digit_positions("0 5 6 1") == ["0", "5", "6", "1"]
    assert answers.digit_positions(None) == []


def test_every_scorer_of_the_book_gives_the_same_verdict():
    expected = [right for _, _, right in CASES]
    examples = [Example(f"q{i}", "", f"#### {gold}") for i, (_, gold, _) in enumerate(CASES)]
    texts = {e.question: prediction_text(p) for e, (p, _, _) in zip(examples, CASES)}
    assert [answers.answers_match(p, g) for p, g, _ in CASES] == expected
    assert [evaluate.is_correct(texts[e.question], e) for e in examples] == expected
    batched = evaluate.evaluate_generator(lambda chunk: [texts[e.question] for e in chunk], examples, 4, "cpu")
    assert batched.correct == expected
    assert [frontier.answer_correct(p, g) for p, g, _ in CASES] == expected
    assert [dot.answers_match(p, g) for p, g, _ in CASES] == expected
    assert [dot.self_consistency([[p]], [g]) == [1.0] for p, g, _ in CASES] == expected
    sampler = scripted_sampler(texts)
    assert [dot.evaluate(sampler, "dot", [e]).accuracy == 1.0 for e in examples] == expected


def test_dot_evaluation_no_longer_credits_a_product_that_dropped_its_units_zero():
    # the old numeric reading joined the digits and dropped leading zeros: 561 == 0561, so this scored 1.0
    examples = [Example("3 3 * 5 0", "", "#### 0 5 6 1"), Example("3 3 * 5 1", "", "#### 3 8 6 1")]
    sampler = scripted_sampler({"3 3 * 5 0": "0 5 6 1 + 0 0 0 0 #### 5 6 1", "3 3 * 5 1": "#### 3 8 6 1"})
    result = dot.evaluate(sampler, "dot", examples)
    assert result.answers == ["5 6 1", "3 8 6 1"] and result.accuracy == pytest.approx(0.5)


def test_frontier_measure_scores_with_the_shared_rule():
    examples = [Example(f"q{i}", "", f"#### {gold}") for i, (_, gold, _) in enumerate(CASES)]
    predicted = {e.question: p for e, (p, _, _) in zip(examples, CASES)}
    method = frontier.TrainedMethod("fake", lambda batch: [predicted[e.question] for e in batch], 1, 1)
    result = frontier.measure(method, examples, batch_size=8, throughput_examples=3)
    assert result["accuracy"] == pytest.approx(sum(right for _, _, right in CASES) / len(CASES))
