"""Answer extraction, scoring and self-consistency (spec §3.5, §3.6).

Extraction follows the reference's SEDD branch: the generated text (after ``||``, up to the first end-of-text;
a sample that never ends is wrong), then the text after its last ``####``. Scoring deviates on purpose: the
reference's ``str.isnumeric`` can never accept ``-3`` or ``2.5``; here a number may carry a sign, a decimal
point and thousands separators, and numbers compare by value. Digit strings written with spaces (the reversed
multiplication answers) are joined first, so ``'8 5 6'`` reads as ``856``.
"""
from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation

from ..data.examples import ANSWER_MARKER

NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
TIE_RULES = ("first", "reference")


def extract_answer(generated: str | None) -> str | None:
    """Text after the last ``####`` of a generated target, stripped; None when there is no answer."""
    if generated is None or ANSWER_MARKER not in generated:
        return None
    return generated.rsplit(ANSWER_MARKER, 1)[1].strip()


def parse_number(text: str | None) -> Decimal | None:
    """``'-3'``, ``'2.5'``, ``'1,000'``, ``'8 5 6'`` → a Decimal; anything else → None."""
    if text is None:
        return None
    compact = re.sub(r"(?<=\d)[ ,](?=\d)", "", text.strip())
    if not NUMBER.match(compact):
        return None
    try:
        return Decimal(compact)
    except InvalidOperation:
        return None


def answers_match(predicted: str | None, gold: str) -> bool:
    """By value when the gold answer is a number (the prediction must parse as one); else exact text."""
    gold_value = parse_number(gold)
    if gold_value is None:
        return predicted is not None and predicted.strip() == gold.strip()
    value = parse_number(predicted)
    return value is not None and value == gold_value


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
