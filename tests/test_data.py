import random

import pytest

from reasoning_lib.data import (
    Example, MalformedLineError, extract_answer, format_example, make_splits, parse_line, parse_operands, parse_task,
    read_examples, write_examples,
)
from reasoning_lib.data.gsm8k import read_gsm8k, solution_to_example
from reasoning_lib.evaluate import is_correct


@pytest.mark.parametrize("relative,n_digits", [
    ("4_by_4_mult/valid.txt", 4), ("4_by_4_mult/test_bigbench.txt", 4),
    ("5_by_5_mult/valid.txt", 5), ("5_by_5_mult/test_bigbench.txt", 5),
])
def test_formatter_reproduces_published_lines_byte_for_byte(shared_file, relative, n_digits):
    lines = shared_file(relative).read_text(encoding="utf-8").split("\n")
    lines = [line for line in lines if line]
    assert len(lines) == 1000
    for number, line in enumerate(lines, start=1):
        a, b = parse_operands(line.split("||")[0])
        assert format_example(a, b, n_digits) == line, f"line {number} differs: check padding/shift of partial products"


@pytest.mark.parametrize("n_digits", [2, 3, 4, 5])
def test_lines_have_one_length_and_answer_reads_back_as_product(n_digits):
    rng = random.Random(n_digits)
    lengths = set()
    for _ in range(200):
        a, b = (rng.randrange(10 ** (n_digits - 1), 10**n_digits) for _ in range(2))
        line = format_example(a, b, n_digits)
        lengths.add(len(line))
        answer = parse_line(line).answer.split()[1:]
        assert len(answer) == 2 * n_digits
        assert int("".join(reversed(answer))) == a * b
    assert len(lengths) == 1
    if n_digits == 4:
        assert lengths == {131}


def test_format_rejects_operands_of_the_wrong_size():
    with pytest.raises(ValueError, match="a=99 is not a 3-digit number"):
        format_example(99, 123, 3)


def test_parse_line_removes_commas_and_keeps_marker():
    example = parse_line("q?||<<1000+234=1234>> #### 1,234")
    assert example == Example("q?", "<<1000+234=1234>>", "#### 1234")


@pytest.mark.parametrize("line,problem", [
    ("no separator #### 3", "exactly one '||'"),
    ("a||b||c #### 3", "exactly one '||'"),
    ("a||b without answer", "no '####'"),
    ("a||b ####   ", "empty answer"),
])
def test_malformed_lines_raise_with_location(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text("1 2 * 3 4||4 0 1 + 0 6 8 ( 4 6 9 ) #### 4 6 9 0\n\n" + line + "\n")
    with pytest.raises(MalformedLineError, match=f"bad.txt:3: .*{problem}"):
        read_examples(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_examples(tmp_path / "nothere.txt")


def test_splits_are_seeded_disjoint_and_exclude_given_problems():
    exclude = [(12, 34), (56, 78)]
    first = make_splits(2, 2000, 300, 300, seed=7, exclude=exclude)
    again = make_splits(2, 2000, 300, 300, seed=7, exclude=exclude)
    other = make_splits(2, 2000, 300, 300, seed=8, exclude=exclude)
    assert first == again and first.train != other.train
    sets = [{parse_operands(e.question) for e in split} for split in (first.train, first.valid, first.test)]
    assert [len(s) for s in sets] == [2000, 300, 300], "duplicates inside a split"
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert not (set(exclude) & (sets[0] | sets[1] | sets[2]))


def test_asking_for_more_problems_than_exist_raises():
    with pytest.raises(ValueError, match="only 8100 exist"):
        make_splits(2, 8000, 100, 1, seed=0)


def test_write_then_read_round_trips(tmp_path):
    examples = make_splits(3, 50, 0, 0, seed=1).train + [Example("q", "", "#### 5")]
    path = write_examples(tmp_path / "train.txt", examples)
    assert read_examples(path) == examples


def test_parse_task():
    assert parse_task("4x4") == 4
    with pytest.raises(ValueError, match="task='4x5'"):
        parse_task("4x5")


def test_scorer_gold_vs_gold_is_perfect_and_padding_zero_matters(shared_file):
    examples = read_examples(shared_file("4_by_4_mult/test_bigbench.txt"))
    assert all(is_correct(e.answer, e) for e in examples)
    padded = [e for e in examples if e.answer.endswith(" 0")]
    assert padded, "about 17% of answers end in a padding zero"
    assert not is_correct(padded[0].answer[:-2], padded[0])
    assert extract_answer("6 5 2 0 + 0 4 #### 6 9 2") == "6 9 2"
    assert extract_answer(" 1,000 ") is None  # no '####': no answer


def test_gsm8k_published_files_parse_in_formula_format(shared_file):
    test = read_gsm8k(shared_file("gsm8k/test.txt"))
    valid = read_gsm8k(shared_file("gsm8k/valid.txt"))
    assert (len(test), len(valid)) == (1319, 500)
    assert sum(1 for e in test if not e.cot) == 18
    assert all("," not in e.answer for e in test)
    assert test[0].answer == "#### 18" and test[0].cot == "<<16-3-4=9>> <<9*2=18>>"


def test_gsm8k_train_file_keeps_every_line_whole(shared_file):
    # Split on "\n" only: the U+2028 inside one question does not cut it (6,973 examples, none truncated).
    train = read_gsm8k(shared_file("gsm8k/train_no_aug_formula.txt"))
    assert len(train) == 6973
    assert any("\u2028" in e.question for e in train)


def test_natural_language_cot_is_rejected(tmp_path):
    path = tmp_path / "train_no_aug.txt"
    path.write_text("q?||She sold 48/2 = <<48/2=24>>24 clips. #### 72\n")
    with pytest.raises(ValueError, match="outside <<...>>"):
        read_gsm8k(path)


def test_hub_solution_conversion_keeps_annotations_in_order():
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether <<48+24=72>>72.\n#### 1,072"
    example = solution_to_example("How many?\n", solution)
    assert example == Example("How many?", "<<48/2=24>> <<48+24=72>>", "#### 1072")


def test_generated_reviews_parse_back_and_broken_ones_do_not():
    from reasoning_lib.data import reviews

    for review in reviews.make_reviews(300, seed=5):
        assert reviews.parse_review(review.text) == review
    good = reviews.make_reviews(1, seed=5)[0].text.split()
    for broken in (good[:-1], good + ["the"], ["a"] + good[1:], [w if w != "the" else "movie" for w in good]):
        assert reviews.parse_review(" ".join(broken)) is None
    assert reviews.parse_review("the plot was good and the plot is bad and the cast is fun") is None  # repeated subject
