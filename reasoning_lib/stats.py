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
