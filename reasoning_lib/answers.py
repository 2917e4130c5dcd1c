"""Answer extraction and scoring for every chapter of the book: one rule, one place.

Every task writes its target as ``rationale #### answer``. Two conventions meet here:

* Implicit CoT (Deng et al. 2023, arXiv 2311.01460; ``da03/implicit_chain_of_thought``): the answer is the text
  after the *first* ``####`` and a prediction is right when it equals the gold answer exactly, so every digit of a
  reversed, zero-padded product must be right (``0 5 6 1`` is 1650 written least-significant digit first).
* Diffusion of Thoughts (Ye et al. 2024, arXiv 2402.07754; ``HKUNLP/diffusion-of-thoughts``,
  ``cal_acc_gsm.py``): GSM8K answers are compared as numbers. Its script accepts only ``str.isnumeric`` answers,
  so ``-3`` and ``2.5`` can never be right; here a number may carry a sign, a decimal point and thousands commas,
  and numbers compare by ``Decimal`` value (``1,000`` == ``1000``, ``2.50`` == ``2.5``).

Why one rule: the chapters compare methods against each other (chapter 8 puts them in one table), so a verdict
must not depend on which chapter's scorer ran. Two earlier scorers disagreed: one read numbers out of spaced digits,
so ``5 6 1`` matched ``0 5 6 1`` (165 against 1650), crediting a product that dropped its units digit 0.

The rule, decided by the gold answer (``answer_kind``):

* ``digits`` (a space-separated sequence of two digits or more): the prediction must be the same sequence,
  written the same way; ``1 2`` is not ``12`` and a missing padding zero is wrong;
* ``number`` (GSM8K, and any one-digit answer): the prediction must parse as a number of equal value, so a GSM8K
  answer ``5`` accepts ``5.0`` as Ye et al.'s numeric check does (a spaced ``0 5`` is not a number);
* ``text``: exact text after whitespace normalisation.

A missing answer (None) is always wrong. Extraction takes the first ``####`` in every chapter, as Deng et al. do;
DoT's script takes the last one. The two differ only for a sample that writes ``####`` more than once (a
single-pass DoT sample or an autoregressive one; DoT-MP stops at the first thought that carries it): under the first
marker ``#### 2 #### 3`` answers ``2 #### 3``, which is wrong whatever the gold answer, instead of being credited
with its later answer.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

ANSWER_MARKER = "####"
ANSWER_KINDS = ("digits", "number", "text")

DIGITS = re.compile(r"^\d( \d)+$")  # two digits or more: one digit alone is a number
NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d)")


def normalize(text: str) -> str:
    """Runs of whitespace become single spaces; leading and trailing whitespace goes."""
    return " ".join(text.split())


def extract_answer(text: str | None) -> str | None:
    """The text after the first ``####``, whitespace-normalised; None when ``text`` is None or has no ``####``."""
    if text is None or ANSWER_MARKER not in text:
        return None
    return normalize(text.split(ANSWER_MARKER, 1)[1])


def parse_number(text: str | None) -> Decimal | None:
    """``'-3'``, ``'2.5'``, ``'1,000'`` → a Decimal; spaced digits (``'8 5 6'``), words and None → None."""
    if text is None:
        return None
    compact = THOUSANDS_COMMA.sub("", text.strip())
    if not NUMBER.match(compact):
        return None
    try:
        return Decimal(compact)
    except InvalidOperation:  # the pattern admits only valid literals; kept so a bad one is never a crash
        return None


def answer_kind(gold: str) -> str:
    """``'digits'`` for ``'0 5 6 1'``, ``'number'`` for ``'7'``, ``'1,000'``, ``'-3'``, ``'2.5'``, else ``'text'``."""
    gold = normalize(gold)
    if DIGITS.match(gold):
        return "digits"
    return "number" if parse_number(gold) is not None else "text"


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether an extracted answer is right, by the rule of the gold answer's kind (module docstring)."""
    if gold is None or not normalize(gold):
        raise ValueError(f"gold answer {gold!r}: expected the non-empty text after the gold target's "
                         f"'{ANSWER_MARKER}' (extract_answer of the example's answer)")
    if predicted is None:
        return False
    kind = answer_kind(gold)
    if kind == "number":
        value = parse_number(predicted)
        return value is not None and value == parse_number(gold)
    return normalize(predicted) == normalize(gold)  # digits and text: the same symbols, the same spacing


def is_correct(prediction_text: str | None, gold_answer_text: str) -> bool:
    """``answers_match`` of the answers after ``####`` in a prediction and in a gold target (``'… #### 0 5 6 1'``)."""
    gold = extract_answer(gold_answer_text)
    if gold is None:
        raise ValueError(f"gold target {gold_answer_text[-60:]!r} has no '{ANSWER_MARKER}': pass the example's "
                         "answer field (e.g. '#### 0 5 6 1'), or score extracted answers with answers_match")
    return answers_match(extract_answer(prediction_text), gold)


def digit_positions(answer: str | None) -> list[str]:
    """The answer's space-separated symbols in written order (position 0 = the ones digit of a reversed product);
    [] for no answer."""
    return [] if answer is None else answer.split()
