"""Generated three-clause movie reviews: a small English-like corpus with a known grammar and a known causal
structure, used offline by the causal-distillation chapter (as a classification task) and the discrete
diffusion chapter (as a corpus whose samples can be checked for grammaticality).

A review is three clauses joined by connectives, e.g.::

    the plot was not very dull but the music felt awful and the cast is clever

Each clause has a sentiment: the polarity of its adjective, flipped by ``not``. The label is the majority
of the three clause sentiments (1 = positive). So the label depends on many positions (every adjective and
every negation), and swapping one clause's internal state for another's flips the label exactly when that
clause was the deciding vote: interchange interventions have a real effect for the student to copy, unlike on
SST-2, where they flip a fine-tuned teacher's label in only 0-3% of cases (``figures/iit_efficacy_label.png`` of
the reference ``frankaging/Causal-Distill-XXS``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import check_positive

SUBJECTS = ["movie", "plot", "acting", "music", "ending", "cast", "script", "story", "dialogue", "camera"]
VERBS = ["was", "is", "felt", "seemed"]
INTENSIFIERS = ["very", "really", "quite", "so"]
POSITIVE = ["good", "great", "fun", "brilliant", "moving", "clever", "charming", "superb"]
NEGATIVE = ["bad", "dull", "boring", "awful", "weak", "clumsy", "bland", "poor"]
CONNECTIVES = ["and", "but", "while", "yet"]
NEGATION = "not"
NUM_CLAUSES = 3
WORDS = ["the", NEGATION, *SUBJECTS, *VERBS, *INTENSIFIERS, *POSITIVE, *NEGATIVE, *CONNECTIVES]


@dataclass(frozen=True)
class Review:
    """One generated example: its text, label and the causal variables behind the label."""

    text: str
    label: int
    clause_sentiments: tuple[int, ...]  # +1 / -1 per clause, after negation
    negated: tuple[bool, ...]


def clause_sentiment(adjective: str, negated: bool) -> int:
    """+1 or -1: the adjective's polarity, flipped by a negation."""
    if adjective not in POSITIVE and adjective not in NEGATIVE:
        raise ValueError(f"{adjective!r} is not a sentiment adjective of the task")
    polarity = 1 if adjective in POSITIVE else -1
    return -polarity if negated else polarity


def label_of(sentiments: tuple[int, ...]) -> int:
    """Majority vote of an odd number of clause sentiments: 1 positive, 0 negative."""
    if len(sentiments) % 2 == 0:
        raise ValueError("the majority label needs an odd number of clauses")
    return int(sum(sentiments) > 0)


def sample_review(rng: random.Random, p_negation: float = 0.4, p_intensifier: float = 0.5) -> Review:
    """One review drawn with ``rng``."""
    words, sentiments, negations = [], [], []
    subjects = rng.sample(SUBJECTS, NUM_CLAUSES)
    for i, subject in enumerate(subjects):
        if i:
            words.append(rng.choice(CONNECTIVES))
        negated = rng.random() < p_negation
        adjective = rng.choice(POSITIVE + NEGATIVE)
        words += ["the", subject, rng.choice(VERBS)]
        words += [NEGATION] if negated else []
        words += [rng.choice(INTENSIFIERS)] if rng.random() < p_intensifier else []
        words.append(adjective)
        sentiments.append(clause_sentiment(adjective, negated))
        negations.append(negated)
    return Review(" ".join(words), label_of(tuple(sentiments)), tuple(sentiments), tuple(negations))


def make_reviews(num: int, seed: int, exclude: set[str] = frozenset()) -> list[Review]:
    """``num`` distinct reviews (none of whose texts is in ``exclude``), reproducible from ``seed``."""
    check_positive("num", num)
    rng, seen, reviews = random.Random(seed), set(exclude), []
    for _ in range(50 * num):
        review = sample_review(rng)
        if review.text not in seen:
            seen.add(review.text)
            reviews.append(review)
            if len(reviews) == num:
                return reviews
    raise ValueError(f"could not draw {num} distinct reviews; ask for fewer")


def make_splits(num_train: int, num_test: int, seed: int) -> tuple[list[Review], list[Review]]:
    """Disjoint train and test reviews."""
    train = make_reviews(num_train, seed)
    test = make_reviews(num_test, seed + 10_000, exclude={r.text for r in train})
    return train, test


def parse_review(text: str) -> Review | None:
    """The review ``text`` spells, or None when it breaks the grammar (three clauses
    ``the SUBJECT VERB [not] [INTENSIFIER] ADJECTIVE`` with distinct subjects, joined by connectives)."""
    words = text.split()
    clauses, current = [], []
    for word in words:
        if word in CONNECTIVES:
            clauses.append(current)
            current = []
        else:
            current.append(word)
    clauses.append(current)
    if len(clauses) != NUM_CLAUSES:
        return None
    sentiments, negations, subjects = [], [], set()
    for clause in clauses:
        if len(clause) < 4 or clause[0] != "the" or clause[1] not in SUBJECTS or clause[2] not in VERBS:
            return None
        middle, adjective = clause[3:-1], clause[-1]
        negated = middle[:1] == [NEGATION]
        rest = middle[1:] if negated else middle
        if adjective not in POSITIVE + NEGATIVE or len(rest) > 1 or (rest and rest[0] not in INTENSIFIERS):
            return None
        subjects.add(clause[1])
        sentiments.append(clause_sentiment(adjective, negated))
        negations.append(negated)
    if len(subjects) != NUM_CLAUSES:
        return None
    return Review(" ".join(words), label_of(tuple(sentiments)), tuple(sentiments), tuple(negations))
