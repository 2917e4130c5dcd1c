"""Token sequences for training and generation (Deng et al. 2023; reference ``da03/implicit_chain_of_thought``,
``src/data.py``).

With E the tokenizer's end-of-text token, an example becomes one of four sequences:

=========  ===============================  ==============================
format     text                             used for
=========  ===============================  ==============================
``only``   `` {x} E ``                      generation prompt
``nocot``  `` {x} E {ans} E``               no-CoT model, student, emulator
``cot``    `` {x} E {cot} E``               teacher-state extraction
``all``    `` {x} E {cot} E {ans} E``       explicit-CoT (teacher) training
=========  ===============================  ==============================

Pieces are tokenized separately and joined, which for GPT-2 gives the same ids as tokenizing the whole
string, and lets us record the separator index ``sep`` (s1) and CoT end ``cot_end`` (s2) directly instead of
searching for "the first E" (so any tokenizer works, bos == eos or not). Labels are -100 up to and
including ``sep``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..config import check_choice
from .examples import Example

FORMATS = ("only", "nocot", "cot", "all")
IGNORE_INDEX = -100


@dataclass
class EncodedExample:
    """Token ids of one sequence; ``sep`` = index of the first E, ``cot_end`` = index of the CoT's E (or None)."""

    input_ids: list[int]
    labels: list[int]
    sep: int
    cot_end: int | None


def has_distinct_unknown(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding an unknown symbol gives a token of its own (the book's digit tokenizer), not a real one."""
    unk = tokenizer.unk_token_id
    return unk is not None and unk not in (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)


def check_known_symbols(tokenizer: PreTrainedTokenizerBase, examples: list[Example], name: str,
                        pieces: list[list[int]]) -> None:
    """Refuse a field that encodes to the unknown token (a letter in a product, a stray symbol), naming where it
    is: the model would silently learn ``<unk>``. Tokenizers whose unknown token is a real one (GPT-2's is
    ``<|endoftext|>``) cannot tell, and are not checked."""
    if not has_distinct_unknown(tokenizer):
        return
    unk = tokenizer.unk_token_id
    for i, ids in enumerate(pieces):
        if unk in ids:
            text = getattr(examples[i], name)
            bad = [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
            raise ValueError(f"{examples[i].where(i)}: the {name} {text[:80]!r} holds symbols the tokenizer does not "
                             f"know ({', '.join(map(repr, bad[:5]))}): fix the line, or use a tokenizer that has them")


def _pieces(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer([f" {t} " for t in texts], add_special_tokens=False)["input_ids"]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], fmt: str, max_length: int = 1024
) -> list[EncodedExample]:
    """Encode ``examples`` in format ``fmt`` (one of ``FORMATS``); sequences longer than ``max_length`` raise."""
    check_choice("fmt", fmt, FORMATS)
    eos = tokenizer.eos_token_id
    questions = _pieces(tokenizer, [e.question for e in examples])
    cots = _pieces(tokenizer, [e.cot for e in examples]) if fmt in ("cot", "all") else None
    answers = _pieces(tokenizer, [e.answer for e in examples]) if fmt in ("nocot", "all") else None
    for name, pieces in (("question", questions), ("cot", cots), ("answer", answers)):
        if pieces is not None:
            check_known_symbols(tokenizer, examples, name, pieces)
    encoded = []
    for i, question in enumerate(questions):
        ids = question + [eos]
        sep, cot_end = len(ids) - 1, None
        if cots is not None:
            ids += cots[i] + [eos]
            cot_end = len(ids) - 1
        if answers is not None:
            ids += answers[i] + [eos]
        if len(ids) > max_length:
            raise ValueError(f"example {i} has {len(ids)} tokens in format {fmt!r}, more than max_length={max_length}")
        labels = [IGNORE_INDEX] * (sep + 1) + ids[sep + 1 :]
        encoded.append(EncodedExample(ids, labels, sep, cot_end))
    return encoded


def collate(batch: list[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids``/``labels``/``attention_mask`` of shape (B, T), ``sep`` of shape (B,)."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    sep = torch.tensor([e.sep for e in batch])
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "sep": sep}
