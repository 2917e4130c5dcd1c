"""k×k multiplication with partial-product chains of thought, in the ICoT-KD release format.

Deng et al. 2023. Numbers are written least-significant digit
first with space-separated digits. For ``a * b`` the CoT lists ``a·b_i`` shifted by ``i`` zeros for each digit
``b_i`` of ``b``, with running sums ``( S_i )`` after the middle terms; the answer is ``a·b`` reversed and
zero-padded to ``2k`` digits. The generator is ours: seeded, with disjoint train/valid/test splits, and it
excludes any problems you pass (e.g. the BIG-bench test set), which the reference does not document.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Iterable

from ..config import check_range
from .examples import ANSWER_MARKER, Example, MalformedLineError, parse_line

MAX_DIGITS = 20


def reversed_digits(value: int, width: int) -> str:
    """``value`` zero-padded to ``width`` digits, written least-significant first, space-separated."""
    text = str(value).zfill(width)
    if len(text) > width:
        raise ValueError(f"{value} has more than {width} digits")
    return " ".join(reversed(text))


def format_example(a: int, b: int, n_digits: int) -> str:
    """The published line for ``a * b`` with ``n_digits``-digit operands (byte-exact, without newline)."""
    check_range("n_digits", n_digits, 1, MAX_DIGITS)
    for name, value in (("a", a), ("b", b)):
        if not 10 ** (n_digits - 1) <= value < 10**n_digits:
            raise ValueError(f"{name}={value} is not a {n_digits}-digit number")
    b_digits = [int(d) for d in reversed(str(b))]
    terms, running = [], 0
    for i, digit in enumerate(b_digits):
        partial = a * digit
        running += partial * 10**i
        term = " ".join(["0"] * i + [reversed_digits(partial, n_digits + 1)])
        if 0 < i < n_digits - 1:
            term += f" ( {reversed_digits(running, n_digits + 1 + i)} )"
        terms.append(term)
    cot = " + ".join(terms)
    answer = reversed_digits(a * b, 2 * n_digits)
    question = f"{reversed_digits(a, n_digits)} * {reversed_digits(b, n_digits)}"
    return f"{question}||{cot} {ANSWER_MARKER} {answer}"


def make_example(a: int, b: int, n_digits: int) -> Example:
    """``format_example`` parsed into an :class:`Example`."""
    return parse_line(format_example(a, b, n_digits))


def parse_operands(question: str) -> tuple[int, int]:
    """Inverse of the question format: ``'1 3 4 5 * 8 1 9 3'`` → ``(5431, 3918)``."""
    sides = question.split("*")
    if len(sides) != 2:
        raise MalformedLineError(f"not a multiplication question: {question!r}")
    try:
        return tuple(int("".join(reversed(side.split()))) for side in sides)  # type: ignore[return-value]
    except ValueError:
        raise MalformedLineError(f"non-digit operand in {question!r}") from None


def parse_task(task: str) -> int:
    """``'4x4'`` → 4. Only square tasks are supported, as in the paper."""
    left, _, right = task.lower().partition("x")
    if not (left.isdigit() and left == right):
        raise ValueError(f"task={task!r} is not a multiplication task like '3x3' or '4x4'")
    if not 1 <= int(left) <= MAX_DIGITS:
        raise ValueError(f"task={task!r}: operands must have 1 to {MAX_DIGITS} digits")
    return int(left)


@dataclass(frozen=True)
class MultiplicationSplits:
    """Disjoint train/valid/test problem sets of one size."""

    n_digits: int
    train: list[Example]
    valid: list[Example]
    test: list[Example]


def sample_pairs(n_digits: int, count: int, seed: int, exclude: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``count`` distinct operand pairs, uniformly at random, none of them in ``exclude``."""
    low, span = 10 ** (n_digits - 1), 9 * 10 ** (n_digits - 1)
    excluded = {(a, b) for a, b in exclude}
    available = span * span - sum(1 for a, b in excluded if low <= a < low + span and low <= b < low + span)
    if count > available:
        raise ValueError(f"asked for {count} distinct {n_digits}x{n_digits} problems but only {available} exist")
    rng = random.Random(seed)
    pairs: list[tuple[int, int]] = []
    seen = set(excluded)
    while len(pairs) < count:
        need = min(count - len(pairs) + len(excluded), span * span)
        # random.sample needs len(range) to fit a C ssize_t: from 10x10 on, draw codes one by one (repeats are
        # skipped below like excluded pairs)
        codes = (rng.sample(range(span * span), need) if span * span <= sys.maxsize
                 else [rng.randrange(span * span) for _ in range(need)])
        for code in codes:
            pair = (low + code // span, low + code % span)
            if pair not in seen:
                seen.add(pair)
                pairs.append(pair)
                if len(pairs) == count:
                    break
    return pairs


def make_splits(
    n_digits: int,
    num_train: int,
    num_valid: int,
    num_test: int,
    seed: int = 1234,
    exclude: Iterable[tuple[int, int]] = (),
) -> MultiplicationSplits:
    """Seeded, pairwise-disjoint splits; ``exclude`` (e.g. a published test set) never appears in any split."""
    pairs = sample_pairs(n_digits, num_train + num_valid + num_test, seed, exclude)
    examples = [make_example(a, b, n_digits) for a, b in pairs]
    return MultiplicationSplits(
        n_digits,
        train=examples[:num_train],
        valid=examples[num_train : num_train + num_valid],
        test=examples[num_train + num_valid :],
    )
