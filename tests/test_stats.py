"""Wilson's interval against values computed independently, and its coverage by simulation."""
import random

import pytest

from reasoning_lib.stats import format_fraction, fraction_with_interval, wilson_interval


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
