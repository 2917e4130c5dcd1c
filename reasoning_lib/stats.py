"""Intervals for what the book measures: a fraction over test problems or samples (Wilson's score interval).

Wilson (1927) inverts the normal test of a binomial proportion; unlike the plain ±1.96·SE interval it stays inside
[0, 1] and keeps close to its nominal coverage at 0% or 100% and at the few hundred problems a chapter's tiny run
scores, which is where the book's numbers sit.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95%


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) for the fraction ``successes / total``; ``total`` must be positive."""
    if total <= 0:
        raise ValueError(f"wilson_interval needs at least one trial, got total={total}")
    if not 0 <= successes <= total:
        raise ValueError(f"successes={successes} must lie in [0, total={total}]")
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges (rounding leaves 1 - 1e-16)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def fraction_with_interval(successes: int, total: int, z: float = Z95) -> dict:
    """``{"value", "low", "high", "n"}``: a fraction as metrics.json records it."""
    low, high = wilson_interval(successes, total, z)
    return {"value": successes / total, "low": low, "high": high, "n": total}


def format_fraction(successes: int, total: int, z: float = Z95) -> str:
    """``'14% (9-22%, n = 64)'``: a fraction in percent with its 95% interval and sample size."""
    low, high = wilson_interval(successes, total, z)
    return f"{100 * successes / total:.0f}% ({100 * low:.0f}-{100 * high:.0f}%, n = {total})"


def paired_difference_interval(correct_a, correct_b, z: float = Z95) -> tuple[float, float, float]:
    """(difference, low, high) of accuracy A - accuracy B scored on the same problems (one bool per problem each).

    Newcombe's (1998) score interval for paired proportions (his method 10): the two Wilson intervals are combined
    with the correlation phi of the 2x2 table of outcomes, so problems both methods get right or wrong narrow it,
    as they should. Scoring two methods on the same problems makes a difference visible that two separate
    intervals would hide (or show where there is none)."""
    a_list, b_list = [bool(x) for x in correct_a], [bool(x) for x in correct_b]
    if len(a_list) != len(b_list) or not a_list:
        raise ValueError(f"paired scores need the same non-empty problems: got {len(a_list)} and {len(b_list)}")
    n = len(a_list)
    both = sum(x and y for x, y in zip(a_list, b_list))
    only_a = sum(x and not y for x, y in zip(a_list, b_list))
    only_b = sum(y and not x for x, y in zip(a_list, b_list))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    product = both * neither - only_a * only_b
    denominator = math.sqrt((both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither))
    # continuity-corrected numerator, as Newcombe defines phi for this interval
    numerator = max(product - n / 2, 0.0) if product > 0 else product
    phi = numerator / denominator if denominator else 0.0
    difference = p1 - p2
    low = difference - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = difference + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return difference, max(-1.0, low), min(1.0, high)


def compare_paired(correct_a, correct_b, z: float = Z95) -> str:
    """``'+4.0 points (1.2 to 6.9)'`` followed by ``apart`` when the paired interval excludes zero, else
    ``not distinguishable at this test size``."""
    difference, low, high = paired_difference_interval(correct_a, correct_b, z)
    verdict = "apart" if low > 0 or high < 0 else "not distinguishable at this test size"
    return f"{100 * difference:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f}): {verdict}"


def paired_difference(correct_a, correct_b, z: float = Z95) -> dict:
    """``{"difference", "low", "high", "n", "apart"}``: a paired difference as metrics.json records it."""
    difference, low, high = paired_difference_interval(correct_a, correct_b, z)
    return {"difference": difference, "low": low, "high": high, "n": len(list(correct_a)), "apart": low > 0 or high < 0}


def fraction_interval(fraction: float, total: int, z: float = Z95) -> list[float] | None:
    """``[low, high]``: the Wilson interval of a fraction measured over ``total`` items (None for NaN, an empty set)."""
    if fraction != fraction:
        return None
    return list(wilson_interval(round(fraction * total), total, z))


# ------------------------------------------------------------------------------------------------ wording
# What a chapter's summary cell states: a measured fraction (accuracy, share of well-formed samples) over the
# ``total`` test items it was scored on, and whether two such fractions are told apart at that size.


def _successes(fraction: float, total: int) -> int:
    if not 0 <= fraction <= 1:  # also refuses NaN (a split that was empty)
        raise ValueError(f"fraction={fraction} must lie in [0, 1]: state an empty split (NaN) in words instead")
    return round(fraction * total)


def format_accuracy(fraction: float, total: int, z: float = Z95) -> str:
    """``'14% (9-22%, n = 64)'``: a fraction measured over ``total`` items, as :func:`format_fraction` words it."""
    return format_fraction(_successes(fraction, total), total, z)


def format_interval(fraction: float, total: int, z: float = Z95) -> str:
    """``'38% (34-42%)'``: a fraction with its 95% interval, for lists that state ``n`` once."""
    low, high = wilson_interval(_successes(fraction, total), total, z)
    return f"{100 * fraction:.0f}% ({100 * low:.0f}-{100 * high:.0f}%)"


def intervals_apart(a: float, b: float, total: int, z: float = Z95) -> bool:
    """Whether the Wilson intervals of two fractions, each over ``total`` items, are disjoint."""
    (a_low, a_high), (b_low, b_high) = (wilson_interval(_successes(x, total), total, z) for x in (a, b))
    return a_low > b_high or b_low > a_high


def verdict(a: float, b: float, total: int, z: float = Z95) -> str:
    """``'apart'`` when :func:`intervals_apart`, else ``'not distinguishable at this test size'``."""
    return "apart" if intervals_apart(a, b, total, z) else "not distinguishable at this test size"


def format_count(count: float, noun: str) -> str:
    """``'1 epoch'``, ``'2.5 epochs'``: a count and its noun, plural unless the count is 1."""
    return f"{count:g} {noun}{'' if count == 1 else 's'}"
