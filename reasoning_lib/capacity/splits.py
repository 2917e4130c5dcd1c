"""Held-out 2-hop structure (reference ``train/dataset.py``, ``InfiniteQADataset``): which 2-hop questions train
and which evaluate composition.

A 2-hop question is a tuple (p, r, a): "What was p's r's a?", with bridge b = r(p) and a any subject in S = A ∪ R.
Held-out sets, drawn once with the caller's RNG (sizes max(1, ⌊fraction · count⌋) as in the reference):
first people, relations (never the first hop), (p, r) pairs, second people (bridges), second attributes, (b, a)
pairs, and the complete-two-hop tuples (all parts seen in training: the in-distribution compositional test).

Every tuple belongs to exactly one category, checked in the reference's removal order (first people, relations,
second attributes, (p, r) pairs, second people, (b, a) pairs, complete-two-hop, else training). Deliberate deviation
from the reference: nothing enumerates the N·R·(4+R) tuples. Membership is index arithmetic on small masks, and
sampling is rejection from a uniform proposal over a product set that contains the category, which gives uniform
draws from the category. All 1-hop facts stay training data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..config import check_choice, check_range
from .profiles import ATTRIBUTES

# Category codes in the order a tuple is tested against them.
CATEGORIES = ("train", "first_people", "relations", "second_attributes", "person_relation_pairs", "second_people",
              "second_person_attribute_pairs", "complete_two_hop")
# Eval modes the reference logs at every checkpoint; the 2-hop ones map to a category.
EVAL_MODES = ("train_onehop", "train_twohop", "eval_first_people", "eval_relations", "eval_person_relation_pairs",
              "eval_second_people", "eval_second_attributes", "eval_second_person_attribute_pairs",
              "eval_complete_two_hop_questions")
MODE_CATEGORY = {"train_twohop": "train", "eval_complete_two_hop_questions": "complete_two_hop",
                 **{m: m.removeprefix("eval_") for m in EVAL_MODES[2:-1]}}
# Above this many tuples the complete-two-hop set is drawn by rejection instead of from an enumeration.
_ENUMERATE_LIMIT = 2_000_000


@dataclass
class QuestionBatch:
    """Q questions as index arrays: ``relation`` = -1 marks a 1-hop question "What was p's s?"."""

    person: np.ndarray  # (Q,) int64
    relation: np.ndarray  # (Q,) int64, -1 for 1-hop
    subject: np.ndarray  # (Q,) int64 index into profiles.subjects

    def __len__(self) -> int:
        return len(self.person)

    def __getitem__(self, index) -> "QuestionBatch":
        return QuestionBatch(self.person[index], self.relation[index], self.subject[index])

    @classmethod
    def concat(cls, batches: list["QuestionBatch"]) -> "QuestionBatch":
        return cls(*(np.concatenate([getattr(b, k) for b in batches]) for k in ("person", "relation", "subject")))


def _held_count(fraction: float, total: int) -> int:
    return min(total, max(1, int(fraction * total)))


@dataclass
class TwoHopSplit:
    """Held-out sets over a relation table; build with :meth:`build`."""

    relations_table: np.ndarray  # (N, R) bridge b = relations_table[p, r]
    num_subjects: int
    first_people: np.ndarray  # (N,) bool
    relations: np.ndarray  # (R,) bool
    second_attributes: np.ndarray  # (S,) bool
    person_relation_pairs: np.ndarray  # (N, R) bool
    second_people: np.ndarray  # (N,) bool
    second_person_attribute_pairs: np.ndarray  # (N, S) bool
    complete_two_hop: np.ndarray  # (K,) sorted int64 tuple codes (p·R + r)·S + a

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, R, S): the tuple space."""
        return (*self.relations_table.shape, self.num_subjects)

    @classmethod
    def build(cls, relations_table: np.ndarray, rng: np.random.Generator, heldout_fraction: float = 0.1,
              specific_fraction: float = 0.02, num_attributes: int = len(ATTRIBUTES)) -> "TwoHopSplit":
        """Draw the held-out sets (specific sets: ``specific_fraction``; complete: ``heldout_fraction``)."""
        check_range("heldout_fraction", heldout_fraction, 0.0, 1.0)
        check_range("specific_fraction", specific_fraction, 0.0, 1.0)
        n, r = relations_table.shape
        s = num_attributes + r

        def mask(size: int, count: int) -> np.ndarray:
            out = np.zeros(size, dtype=bool)
            out[rng.choice(size, size=_held_count(specific_fraction, count), replace=False)] = True
            return out

        split = cls(
            relations_table=np.asarray(relations_table, dtype=np.int64), num_subjects=s,
            first_people=mask(n, n), relations=mask(r, r),
            person_relation_pairs=mask(n * r, n * r).reshape(n, r), second_people=mask(n, n),
            second_attributes=mask(s, num_attributes),
            second_person_attribute_pairs=mask(n * s, n * num_attributes).reshape(n, s),
            complete_two_hop=np.empty(0, dtype=np.int64),
        )
        split.complete_two_hop = split._draw_complete(_held_count(heldout_fraction, n * r * num_attributes), rng)
        return split

    def _draw_complete(self, count: int, rng: np.random.Generator) -> np.ndarray:
        total = int(np.prod(self.shape))
        if total <= _ENUMERATE_LIMIT:
            codes = np.flatnonzero(self.category(*self.decode(np.arange(total))) == 0)
            if count > len(codes):
                raise ValueError(f"complete-two-hop set needs {count} tuples but only {len(codes)} remain")
            return np.sort(rng.choice(codes, size=count, replace=False))
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < count:  # uniform draws without replacement from the remaining tuples
            draw = rng.integers(0, total, size=4 * (count - len(chosen)) + 64)
            draw = draw[self.category(*self.decode(draw)) == 0]
            stream = np.concatenate([chosen, draw])
            _, first_seen = np.unique(stream, return_index=True)
            chosen = stream[np.sort(first_seen)][:count]
        return np.sort(chosen)

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tuple codes -> (p, r, a) arrays."""
        _, r, s = self.shape
        return codes // (r * s), (codes // s) % r, codes % s

    def encode(self, person, relation, subject) -> np.ndarray:
        _, r, s = self.shape
        return (np.asarray(person) * r + np.asarray(relation)) * s + np.asarray(subject)

    def category(self, person, relation, subject) -> np.ndarray:
        """(Q,) category code (index into ``CATEGORIES``) of each 2-hop tuple."""
        p, r, a = (np.asarray(x, dtype=np.int64) for x in (person, relation, subject))
        b = self.relations_table[p, r]
        tests = [self.first_people[p], self.relations[r], self.second_attributes[a],
                 self.person_relation_pairs[p, r], self.second_people[b], self.second_person_attribute_pairs[b, a]]
        codes = np.zeros(p.shape, dtype=np.int64)
        undecided = np.ones(p.shape, dtype=bool)
        for code, hit in enumerate(tests, start=1):
            codes[undecided & hit] = code
            undecided &= ~hit
        if len(self.complete_two_hop):
            t = self.encode(p, r, a)
            pos = np.minimum(np.searchsorted(self.complete_two_hop, t), len(self.complete_two_hop) - 1)
            codes[undecided & (self.complete_two_hop[pos] == t)] = CATEGORIES.index("complete_two_hop")
        return codes

    def _propose(self, category: str, size: int, rng: np.random.Generator):
        """Uniform draws from a product set that contains ``category`` (rejection keeps the category)."""
        n, r, s = self.shape
        uniform = lambda high: rng.integers(0, high, size=size)  # noqa: E731
        pick = lambda values: values[rng.integers(0, len(values), size=size)]  # noqa: E731
        if category in ("train", "complete_two_hop"):
            return uniform(n), uniform(r), uniform(s)
        if category == "first_people":
            return pick(np.flatnonzero(self.first_people)), uniform(r), uniform(s)
        if category == "relations":
            return uniform(n), pick(np.flatnonzero(self.relations)), uniform(s)
        if category == "second_attributes":
            return uniform(n), uniform(r), pick(np.flatnonzero(self.second_attributes))
        if category == "person_relation_pairs":
            pairs = np.flatnonzero(self.person_relation_pairs)
        elif category == "second_people":
            pairs = np.flatnonzero(self.second_people[self.relations_table])
        else:  # second_person_attribute_pairs: (p, r) whose bridge has a held-out (b, a) pair
            pairs = np.flatnonzero(self.second_person_attribute_pairs.any(1)[self.relations_table])
        if len(pairs) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        chosen = pick(pairs)
        return chosen // r, chosen % r, uniform(s)

    def sample(self, category: str, num: int, rng: np.random.Generator, max_rounds: int = 1000) -> QuestionBatch:
        """``num`` 2-hop questions drawn uniformly (with replacement) from one category."""
        check_choice("category", category, CATEGORIES)
        code = CATEGORIES.index(category)
        if num == 0:  # e.g. a packed sequence that drew no 2-hop question
            return QuestionBatch(*(np.empty(0, dtype=np.int64) for _ in range(3)))
        if category == "complete_two_hop":
            p, r, a = self.decode(self.complete_two_hop[rng.integers(0, len(self.complete_two_hop), size=num)])
            return QuestionBatch(p, r, a)
        parts, have = [], 0
        for _ in range(max_rounds):
            if have >= num:
                break
            p, r, a = self._propose(category, 2 * (num - have) + 32, rng)
            keep = self.category(p, r, a) == code
            parts.append((p[keep], r[keep], a[keep]))
            have += int(keep.sum())
        if have < num:
            raise ValueError(f"2-hop category {category!r} is empty (or nearly) for (N, R, S) = {self.shape}")
        p, r, a = (np.concatenate(col)[:num] for col in zip(*parts))
        return QuestionBatch(p, r, a)

    def sizes(self, chunk_people: int = 4096) -> dict[str, int]:
        """Exact number of 2-hop tuples in each category, counted people-chunk by chunk (O(N·R·S) time, small memory)."""
        n, r, s = self.shape
        counts = np.zeros(len(CATEGORIES), dtype=np.int64)
        for start in range(0, n, chunk_people):
            codes = np.arange(start * r * s, min(n, start + chunk_people) * r * s)
            counts += np.bincount(self.category(*self.decode(codes)), minlength=len(CATEGORIES))
        return dict(zip(CATEGORIES, counts.tolist()))

    def to_dict(self) -> dict:
        """Plain lists (for a checkpoint's JSON): held-out indices and tuple codes."""
        return {
            "num_subjects": self.num_subjects,
            **{k: np.flatnonzero(getattr(self, k)).tolist() for k in CATEGORIES[1:-1]},
            "complete_two_hop": self.complete_two_hop.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict, relations_table: np.ndarray) -> "TwoHopSplit":
        """Inverse of :meth:`to_dict` for the same relation table."""
        n, r = relations_table.shape
        s = data["num_subjects"]
        shapes = {"first_people": (n,), "relations": (r,), "second_attributes": (s,), "person_relation_pairs": (n, r),
                  "second_people": (n,), "second_person_attribute_pairs": (n, s)}
        masks = {}
        for name, shape in shapes.items():
            flat = np.zeros(int(np.prod(shape)), dtype=bool)
            flat[np.asarray(data[name], dtype=np.int64)] = True
            masks[name] = flat.reshape(shape)
        return cls(np.asarray(relations_table, dtype=np.int64), s, complete_two_hop=np.asarray(
            data["complete_two_hop"], dtype=np.int64), **masks)


def one_hop_questions(num_people: int, num_subjects: int, people=None, subjects=None) -> QuestionBatch:
    """Every 1-hop fact (p, s) of the given people and subjects (default: all N·S facts), person-major."""
    people = np.arange(num_people) if people is None else np.asarray(people, dtype=np.int64)
    subjects = np.arange(num_subjects) if subjects is None else np.asarray(subjects, dtype=np.int64)
    p, s = np.repeat(people, len(subjects)), np.tile(subjects, len(people))
    return QuestionBatch(p, np.full(len(p), -1, dtype=np.int64), s)


def eval_questions(split: TwoHopSplit, mode: str, num: int, rng: np.random.Generator) -> QuestionBatch:
    """``num`` questions of one eval mode; ``train_onehop`` is uniform over all N·S facts."""
    check_choice("mode", mode, EVAL_MODES)
    if not isinstance(split, TwoHopSplit):
        raise TypeError(f"split must be a TwoHopSplit (TwoHopSplit.build(profiles.relations, rng)), got {split!r}")
    if mode == "train_onehop":
        n, _, s = split.shape
        return QuestionBatch(rng.integers(0, n, size=num), np.full(num, -1, dtype=np.int64), rng.integers(0, s, size=num))
    return split.sample(MODE_CATEGORY[mode], num, rng)


def iter_eval_questions(split: TwoHopSplit, num_per_mode: int, seed: int = 0,
                        modes: tuple[str, ...] = EVAL_MODES) -> Iterator[tuple[str, QuestionBatch]]:
    """Yield ``(mode, questions)`` for each eval mode, each from its own seeded stream (reproducible per mode)."""
    for i, mode in enumerate(modes):
        yield mode, eval_questions(split, mode, num_per_mode, np.random.default_rng([seed, i]))


__all__ = ["CATEGORIES", "EVAL_MODES", "MODE_CATEGORY", "QuestionBatch", "TwoHopSplit", "eval_questions",
           "iter_eval_questions", "one_hop_questions"]
