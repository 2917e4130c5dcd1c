"""Majority vote and self-consistency over sampled answers (Ye et al. 2024, arXiv 2402.07754).

Extraction and scoring are the book's one rule, ``reasoning_lib.answers`` (re-exported here): the generated text
(after ``||``, up to the first end-of-text; ``data.generated_text``, a sample that never ends is wrong), then the
answer after its first ``####``, exact on digit sequences and by value on GSM8K numbers.
"""
from __future__ import annotations

from collections import Counter

from ..answers import answers_match, extract_answer, parse_number

__all__ = ["TIE_RULES", "answers_match", "extract_answer", "majority_vote", "parse_number", "self_consistency"]

TIE_RULES = ("first", "reference")


def majority_vote(candidates: list[str | None], tie_rule: str = "first") -> str | None:
    """The most frequent candidate (exact text; None and empty answers vote too).

    Ties: ``'first'`` (ours) picks the tied candidate that appeared earliest; ``'reference'`` the one whose first
    appearance is latest, as the reference's stable ascending sort then last element does."""
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule={tie_rule!r}: expected one of {TIE_RULES}")
    if not candidates:
        raise ValueError("majority_vote needs at least one candidate")
    counts = Counter(candidates)
    best = max(counts.values())
    tied = [c for c in dict.fromkeys(candidates) if counts[c] == best]  # in order of first appearance
    return tied[0] if tie_rule == "first" else tied[-1]


def self_consistency(answers_per_run: list[list[str | None]], golds: list[str], tie_rule: str = "first") -> list[float]:
    """Accuracy of the majority vote over the first k runs, for k = 1 … K (``answers_per_run[r][i]``)."""
    if not answers_per_run:
        raise ValueError("self_consistency needs at least one run")
    if any(len(run) != len(golds) for run in answers_per_run):
        raise ValueError("every run must answer every question")
    curve = []
    for k in range(1, len(answers_per_run) + 1):
        votes = [majority_vote([run[i] for run in answers_per_run[:k]], tie_rule) for i in range(len(golds))]
        curve.append(sum(answers_match(v, g) for v, g in zip(votes, golds)) / len(golds))
    return curve
