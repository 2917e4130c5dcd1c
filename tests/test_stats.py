"""Wilson's interval against values computed independently, and its coverage by simulation."""
import random

import pytest

from reasoning_lib.stats import (Z95, compare_paired, format_fraction, fraction_with_interval, paired_difference,
                                 paired_difference_interval, wilson_interval)


def test_known_values():
    # 81/263: the worked example of Newcombe (1998, Stat. Med. 17:857), method 3: 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.27 < wilson_interval(0, 10)[1] < 0.31
    assert wilson_interval(10, 10)[1] == 1.0


def test_coverage_is_close_to_95_percent():
    rng = random.Random(0)
    hits = 0
    for _ in range(2000):
        successes = sum(rng.random() < 0.2 for _ in range(100))
        low, high = wilson_interval(successes, 100)
        hits += low <= 0.2 <= high
    assert 0.93 <= hits / 2000 <= 0.97


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="total=0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes=5"):
        wilson_interval(5, 3)


def test_formats():
    assert fraction_with_interval(1, 4)["value"] == 0.25
    assert format_fraction(9, 64).startswith("14% (")


def _correlated_pairs(rng, n, p_a, p_b, shared):
    """Two methods' scores on n problems: with probability ``shared`` a problem's outcome is the same draw for both."""
    a, b = [], []
    for _ in range(n):
        u = rng.random()
        if rng.random() < shared:
            a.append(u < p_a), b.append(u < p_b)
        else:
            a.append(u < p_a), b.append(rng.random() < p_b)
    return a, b


def test_paired_difference_covers_the_true_difference():
    # outcomes shared on 70% of problems (the true difference of marginals is p_a - p_b either way)
    rng = random.Random(1)
    hits, trials = 0, 1500
    for _ in range(trials):
        a, b = _correlated_pairs(rng, 200, 0.7, 0.6, shared=0.7)
        _, low, high = paired_difference_interval(a, b)
        hits += low <= 0.1 <= high
    assert 0.93 <= hits / trials <= 0.975


def test_pairing_narrows_the_interval_and_is_antisymmetric():
    rng = random.Random(2)
    a, b = _correlated_pairs(rng, 300, 0.8, 0.74, shared=0.9)
    difference, low, high = paired_difference_interval(a, b)
    reverse = paired_difference_interval(b, a)
    assert reverse == pytest.approx((-difference, -high, -low))
    # unpaired: the same marginals on independent problems give a wider interval
    unpaired_width = 2 * Z95 * ((sum(a) / 300 * (1 - sum(a) / 300) + sum(b) / 300 * (1 - sum(b) / 300)) / 300) ** 0.5
    assert high - low < 0.7 * unpaired_width
    same = paired_difference_interval(a, a)
    assert same[0] == 0 and same[1] <= 0 <= same[2] and same[2] - same[1] < 0.03  # phi < 1 by its continuity correction


def test_compare_paired_words_the_verdict():
    apart = [True] * 90 + [False] * 10, [True] * 40 + [False] * 60
    assert compare_paired(*apart).endswith(": apart")
    close = [True] * 50 + [False] * 50, [True] * 49 + [False] * 51
    assert compare_paired(*close).endswith("not distinguishable at this test size")
    assert paired_difference(*apart)["apart"] is True and paired_difference(*close)["n"] == 100
    with pytest.raises(ValueError, match="same non-empty problems"):
        paired_difference_interval([True], [True, False])


def test_summary_wording_of_a_measured_fraction():
    from reasoning_lib.stats import format_accuracy, format_interval

    assert format_accuracy(9 / 64, 64) == format_fraction(9, 64) == "14% (8-25%, n = 64)"
    assert format_accuracy(0.141, 64) == format_fraction(9, 64)  # rounded to a whole number of items
    assert format_interval(9 / 64, 64) == "14% (8-25%)"
    assert format_interval(1.0, 10) == "100% (72-100%)"
    with pytest.raises(ValueError, match="fraction=nan"):
        format_accuracy(float("nan"), 64)
    with pytest.raises(ValueError, match="fraction=1.5"):
        format_interval(1.5, 64)


def test_intervals_apart_and_the_verdict():
    from reasoning_lib.stats import intervals_apart, verdict

    # 90/100 is 83-94%, 40/100 is 31-50%: disjoint either way round; 50/100 and 45/100 overlap
    assert intervals_apart(0.9, 0.4, 100) and intervals_apart(0.4, 0.9, 100)
    assert not intervals_apart(0.5, 0.45, 100)
    assert verdict(0.9, 0.4, 100) == "apart"
    assert verdict(0.5, 0.45, 100) == "not distinguishable at this test size"
    # the same gap is apart over many items and not over a few
    assert intervals_apart(0.6, 0.5, 2000) and not intervals_apart(0.6, 0.5, 20)


def test_format_count_is_plural_unless_one():
    from reasoning_lib.stats import format_count

    assert format_count(1, "epoch") == "1 epoch"
    assert format_count(2, "epoch") == "2 epochs"
    assert format_count(0.5, "epoch") == "0.5 epochs"
