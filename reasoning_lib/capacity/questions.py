"""Question-answer text and token ids (reference ``train/dataset.py``, ``InfiniteQADataset``): 1-hop and 2-hop
questions about a profile table.

Text: ``Question: What was {name}'s {subject}? Answer: {answer}`` and, 2-hop, ``... {name}'s {relation}'s
{subject}? ...``; underscores become spaces, dates are ``YYYY-MM-DD``, a relation's answer is the target's name.

Speed (the reference formats and tokenises one string per QA in 15 DataLoader workers): :class:`QAEncoder`
tokenises every *piece* once (the prefix, each name, each "'s relation", each "'s subject? Answer:", each answer
value) and assembles any batch of questions with numpy gathers. Pieces split where a byte-level pre-tokenizer
splits, so the ids equal the tokenizer's on the full text; the encoder checks this on a sample when built.
Labels are -100 except the answer tokens (with their leading space), and the EOS after an answer is not a target.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import check_positive
from .profiles import ATTRIBUTES, Profiles
from .splits import QuestionBatch, TwoHopSplit

IGNORE_INDEX = -100
QUESTION_PREFIX = "Question: What was"
ANSWER_MARKER = " Answer:"
# Columns of an assembled QA: prefix, name, "'s relation" (2-hop only), "'s subject? Answer:", answer, EOS.
_ANSWER_COLUMN = 4


def subject_text(subject: str) -> str:
    """``best_friend`` -> ``best friend``, as in the reference's question templates."""
    return subject.replace("_", " ")


def question_text(name: str, subject: str, relation: str | None = None) -> str:
    """The 1-hop or (with ``relation``) 2-hop question."""
    middle = f"'s {subject_text(relation)}" if relation else ""
    return f"What was {name}{middle}'s {subject_text(subject)}?"


def qa_text(question: str, answer: str) -> str:
    """The training string of one QA."""
    return f"Question: {question} Answer: {answer}"


def answer_table(profiles: Profiles) -> np.ndarray:
    """(N, S) answer string of every 1-hop fact: attribute values, then related people's names."""
    attributes = [profiles.attribute_strings(a) for a in ATTRIBUTES]
    relations = [profiles.names[profiles.relations[:, r]] for r in range(profiles.num_relations)]
    return np.stack(attributes + relations, 1)


def bridges(profiles: Profiles, questions: QuestionBatch) -> np.ndarray:
    """(Q,) the person each answer is about: r(p) for 2-hop, p itself for 1-hop."""
    two_hop = questions.relation >= 0
    bridge = questions.person.copy()
    bridge[two_hop] = profiles.relations[questions.person[two_hop], questions.relation[two_hop]]
    return bridge


def questions_to_text(profiles: Profiles, questions: QuestionBatch) -> tuple[list[str], list[str]]:
    """(question strings, answer strings) of a batch; for display and tokenizer training, not per training step."""
    subjects = profiles.subjects
    texts = [
        question_text(profiles.names[p], subjects[s], profiles.relation_names[r] if r >= 0 else None)
        for p, r, s in zip(questions.person, questions.relation, questions.subject)
    ]
    bridge, answers = bridges(profiles, questions), np.empty(len(questions), dtype=object)
    for s in np.unique(questions.subject):  # one column of the answer table at a time
        rows = questions.subject == s
        if s < len(ATTRIBUTES):
            answers[rows] = profiles.attribute_strings(ATTRIBUTES[s])[bridge[rows]]
        else:
            answers[rows] = profiles.names[profiles.relations[bridge[rows], s - len(ATTRIBUTES)]]
    return texts, [str(a) for a in answers]


class QAEncoder:
    """Pre-tokenised pieces of one profile table; builds token ids and labels for many questions at once."""

    def __init__(self, profiles: Profiles, tokenizer, check_sample: int = 32):
        self.profiles, self.tokenizer = profiles, tokenizer
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, name) is None:
                raise ValueError(f"tokenizer has no {name}; build it with capacity.build_qa_tokenizer")
        n, relations = profiles.num_people, profiles.relation_names
        attribute_answers = np.stack([profiles.attribute_strings(a) for a in ATTRIBUTES], 1).astype(str)  # (N, A)
        values, value_index = np.unique(attribute_answers, return_inverse=True)
        texts = ([QUESTION_PREFIX] + [" " + str(x) for x in profiles.names]
                 + [f"'s {subject_text(r)}" for r in relations]
                 + [f"'s {subject_text(s)}?{ANSWER_MARKER}" for s in profiles.subjects]
                 + [" " + v for v in values])
        pieces = tokenizer(texts, add_special_tokens=False)["input_ids"] + [[tokenizer.eos_token_id], []]
        self.lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.store = np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces])
        self.name_piece = 1 + np.arange(n)
        self.relation_piece = 1 + n + np.arange(len(relations))
        self.subject_piece = 1 + n + len(relations) + np.arange(len(profiles.subjects))
        value_piece = 1 + n + len(relations) + len(profiles.subjects) + value_index.reshape(n, len(ATTRIBUTES))
        # (N, S) piece of each 1-hop answer: a value, or the related person's name
        self.answer_piece = np.concatenate([value_piece, self.name_piece[profiles.relations]], 1)
        self.eos_piece, self.empty_piece = len(pieces) - 2, len(pieces) - 1
        if check_sample:
            self.check_against_tokenizer(np.random.default_rng(0), check_sample)

    def piece_matrix(self, questions: QuestionBatch) -> np.ndarray:
        """(Q, 6) piece ids: prefix, name, "'s relation" (empty for 1-hop), "'s subject? Answer:", answer, EOS."""
        q = len(questions)
        two_hop = questions.relation >= 0
        middle = np.where(two_hop, self.relation_piece[np.maximum(questions.relation, 0)], self.empty_piece)
        answer = self.answer_piece[bridges(self.profiles, questions), questions.subject]
        return np.stack([np.zeros(q, dtype=np.int64), self.name_piece[questions.person], middle,
                         self.subject_piece[questions.subject], answer, np.full(q, self.eos_piece)], 1)

    def encode(self, questions: QuestionBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenated QAs: token ids (T,), answer mask (T,) and per-QA lengths (Q,)."""
        pieces = self.piece_matrix(questions)  # (Q, 6)
        lengths = self.lengths[pieces]  # (Q, 6)
        flat_len, flat_start = lengths.ravel(), self.starts[pieces].ravel()
        offsets = np.cumsum(flat_len) - flat_len  # where each piece lands in the output
        index = np.arange(flat_len.sum()) - np.repeat(offsets - flat_start, flat_len)
        is_answer = np.repeat(np.tile(np.arange(pieces.shape[1]) == _ANSWER_COLUMN, len(pieces)), flat_len)
        return self.store[index], is_answer, lengths.sum(1)

    def rows(self, questions: QuestionBatch) -> tuple[np.ndarray, np.ndarray]:
        """One QA per row, BOS first, right-padded: input ids (Q, T) and labels (Q, T)."""
        tokens, is_answer, lengths = self.encode(questions)
        width = 1 + int(lengths.max(initial=0))
        ids = np.full((len(questions), width), self.tokenizer.pad_token_id, dtype=np.int64)
        labels = np.full_like(ids, IGNORE_INDEX)
        ids[:, 0] = self.tokenizer.bos_token_id
        rows = np.repeat(np.arange(len(questions)), lengths)
        cols = 1 + np.arange(len(tokens)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, cols] = tokens
        labels[rows[is_answer], cols[is_answer]] = tokens[is_answer]
        return ids, labels

    def packed(self, questions: QuestionBatch, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """BOS then the QAs back to back, truncated at ``max_len`` (a cut answer keeps its labels): ids, labels (T,)."""
        tokens, is_answer, _ = self.encode(questions)
        ids = np.concatenate([[self.tokenizer.bos_token_id], tokens])[:max_len]
        labels = np.where(np.concatenate([[False], is_answer]), np.concatenate([[0], tokens]), IGNORE_INDEX)[:max_len]
        return ids, labels

    def check_against_tokenizer(self, rng: np.random.Generator, num: int = 32) -> None:
        """Raise ``ValueError`` unless assembled ids equal the tokenizer's ids of the same QA text."""
        n, r, s = self.profiles.num_people, self.profiles.num_relations, len(self.profiles.subjects)
        relation = np.where(rng.random(num) < 0.5, rng.integers(0, r, size=num), -1)
        questions = QuestionBatch(rng.integers(0, n, size=num), relation, rng.integers(0, s, size=num))
        texts, answers = questions_to_text(self.profiles, questions)
        expected = self.tokenizer([qa_text(q, a) for q, a in zip(texts, answers)], add_special_tokens=False)["input_ids"]
        tokens, _, lengths = self.encode(questions)
        for got, want, q, a in zip(np.split(tokens, np.cumsum(lengths)[:-1]), expected, texts, answers):
            if got[:-1].tolist() != want:  # got ends with the EOS piece
                raise ValueError(f"pieces tokenise differently from the full text {qa_text(q, a)!r}: {got[:-1].tolist()} "
                                 f"vs {want}; use a byte-level tokenizer without add_prefix_space")


class QuestionSampler:
    """Random training questions (reference ``InfiniteQADataset.generate_qa``): 1-hop uniform over all N·S facts,
    2-hop from the split's training set.

    Hop weights are ``hop_ratio ** -i`` for the i-th entry of ``orders`` (0.1 gives [1, 10]: P(1-hop) = 1/11).
    With ``split=None`` every 2-hop tuple is training data."""

    def __init__(self, profiles: Profiles, orders: tuple[int, ...] = (1,), hop_ratio: float = 0.1,
                 split: TwoHopSplit | None = None):
        if not orders or any(o not in (1, 2) for o in orders) or len(set(orders)) != len(orders):
            raise ValueError(f"orders={orders!r} must be distinct hop counts from (1, 2), e.g. (1,) or (1, 2)")
        check_positive("hop_ratio", hop_ratio)
        self.profiles, self.orders, self.split = profiles, tuple(orders), split
        weights = np.asarray(hop_ratio, dtype=float) ** -np.arange(len(orders))
        self.probabilities = weights / weights.sum()

    def sample(self, num: int, rng: np.random.Generator) -> QuestionBatch:
        n, r, s = self.profiles.num_people, self.profiles.num_relations, len(self.profiles.subjects)
        hops = np.asarray(self.orders)[rng.choice(len(self.orders), size=num, p=self.probabilities)]
        num_two = int((hops == 2).sum())
        one = QuestionBatch(rng.integers(0, n, size=num - num_two), np.full(num - num_two, -1, dtype=np.int64),
                            rng.integers(0, s, size=num - num_two))
        if self.split is not None:
            two = self.split.sample("train", num_two, rng)
        else:
            two = QuestionBatch(rng.integers(0, n, size=num_two), rng.integers(0, r, size=num_two),
                                rng.integers(0, s, size=num_two))
        mixed = QuestionBatch.concat([one, two])
        return mixed[rng.permutation(num)]


class QADataset(torch.utils.data.Dataset):
    """Map-style dataset of token sequences for ``reasoning_lib.train.train``.

    ``source`` is a :class:`QuestionSampler` (item i is drawn from a generator seeded by (seed, i), so it is the
    same every epoch: set ``num_sequences`` ≥ steps × batch for fresh questions every step) or a fixed
    :class:`QuestionBatch` (e.g. all 1-hop facts), cut into chunks of ``qas_per_sequence``."""

    def __init__(self, encoder: QAEncoder, source: QuestionSampler | QuestionBatch, num_sequences: int | None = None,
                 qas_per_sequence: int = 1, max_seq_len: int = 512, seed: int = 0):
        check_positive("qas_per_sequence", qas_per_sequence)
        check_positive("max_seq_len", max_seq_len)
        if isinstance(source, QuestionBatch):
            num_sequences = -(-len(source) // qas_per_sequence)
        elif num_sequences is None:
            raise ValueError("num_sequences is required when source is a QuestionSampler")
        check_positive("num_sequences", num_sequences)
        self.encoder, self.source, self.num_sequences = encoder, source, num_sequences
        self.qas_per_sequence, self.max_seq_len, self.seed = qas_per_sequence, max_seq_len, seed

    def __len__(self) -> int:
        return self.num_sequences

    def questions(self, index: int) -> QuestionBatch:
        if not 0 <= index < self.num_sequences:
            raise IndexError(f"index {index} out of range for {self.num_sequences} sequences")
        if isinstance(self.source, QuestionBatch):
            return self.source[index * self.qas_per_sequence:(index + 1) * self.qas_per_sequence]
        return self.source.sample(self.qas_per_sequence, np.random.default_rng([self.seed, index]))

    def __getitem__(self, index: int) -> dict:
        ids, labels = self.encoder.packed(self.questions(index), self.max_seq_len)
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def collate(self, items: list[dict]) -> dict:
        """Right-pad to the longest item: input_ids, labels (-100 on padding), attention_mask, all (B, T)."""
        return collate_qa(items, self.encoder.tokenizer.pad_token_id)


def collate_qa(items: list[dict], pad_id: int) -> dict:
    """Right-pad ``input_ids``/``labels`` items into (B, T) tensors plus an attention mask."""
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        ids[row, :length], labels[row, :length], mask[row, :length] = item["input_ids"], item["labels"], 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


__all__ = ["ANSWER_MARKER", "IGNORE_INDEX", "QUESTION_PREFIX", "QADataset", "QAEncoder", "QuestionSampler",
           "answer_table", "bridges", "collate_qa", "qa_text", "question_text", "questions_to_text", "subject_text"]
