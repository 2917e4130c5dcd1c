"""Diffusion-of-Thoughts sequences (spec §2.2): ``question E || target E E …`` on a fixed canvas.

Every position up to and including the separator ``||`` is *fixed*: never noised in training (so it costs
exactly zero loss) and written back by projection in sampling. Padding is end-of-text and counts as target,
so the model learns where the answer stops, as in the reference's SEDD branch.

* **DoT**: target = the whole rationale and the answer (``cot #### ans``).
* **DoT-MP**: one *thought* per pass. ``thoughts(example)`` splits a rationale into steps (the partial products
  of a multiplication, the ``<<…>>`` equations of GSM8K) plus the final ``#### ans``; pass i sees
  ``mp_context(question, thoughts[:i])`` and generates ``thoughts[i]``. Training and inference build the context
  with the same function (the reference drops a space at inference, spec §3.3).
* **answer only**: target = ``#### ans`` (the reference's ``hidden_thought``), the no-rationale control.

Deviation from the reference: a sequence that does not fit is refused with its length (or, with
``truncate=True``, shortened while keeping its final end-of-text, and counted), instead of silently losing
the final end-of-text (spec §2.2 quirk).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from ..config import check_choice
from ..data.examples import ANSWER_MARKER, Example
from ..tokenization import ARITHMETIC_SYMBOLS, build_digit_tokenizer, load_tokenizer

SEPARATOR = "||"
VARIANTS = ("dot", "dot_mp", "answer_only")


def build_tokenizer(name: str = "digits", split_digits: bool = True) -> PreTrainedTokenizerBase:
    """``'digits'``: one token per symbol, plus ``||``; otherwise a hub id or folder (``'gpt2'``), whose numbers are
    split into single digits when ``split_digits`` (the Plaid branch's ``--digit``)."""
    if name == "digits":
        return build_digit_tokenizer([*ARITHMETIC_SYMBOLS, SEPARATOR])
    tokenizer = load_tokenizer(name)
    if split_digits:
        split_numbers_into_digits(tokenizer)
    return tokenizer


def split_numbers_into_digits(tokenizer) -> None:
    """Put a ``Digits(individual_digits=True)`` pre-tokenizer in front of the tokenizer's own (in place)."""
    backend = tokenizer.backend_tokenizer
    steps = [pre_tokenizers.Digits(individual_digits=True)]
    if backend.pre_tokenizer is not None:
        steps.append(backend.pre_tokenizer)
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)


@dataclass(frozen=True)
class Layout:
    """Special ids and canvas length; ``mask_id`` is the absorbing state, one past the vocabulary."""

    eos_id: int
    sep_id: int
    mask_id: int
    length: int

    @classmethod
    def for_tokenizer(cls, tokenizer, length: int) -> "Layout":
        sep = tokenizer.convert_tokens_to_ids(SEPARATOR)
        if sep is None or sep == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(sep) != SEPARATOR:
            raise ValueError(f"the tokenizer has no single '{SEPARATOR}' token (it is GPT-2 id 15886)")
        return cls(eos_id=tokenizer.eos_token_id, sep_id=sep, mask_id=len(tokenizer), length=length)

    @property
    def num_states(self) -> int:
        return self.mask_id + 1


def thoughts(example: Example) -> list[str]:
    """The reasoning steps of ``example`` then ``'#### ans'``; ``' '.join`` gives back ``cot + ' ' + answer``.

    Multiplication: one partial product (with its running sum) per thought, the ``+`` kept at its end.
    GSM8K: one ``<<…>>`` equation per thought. Anything else: one thought per whitespace-separated word."""
    cot = example.cot.strip()
    if not cot:
        steps = []
    elif " + " in cot and "*" in example.question:
        parts = cot.split(" + ")
        steps = [p + " +" for p in parts[:-1]] + [parts[-1]]
    else:
        steps = cot.split()
    return steps + [example.answer]


def mp_context(question: str, previous: list[str]) -> str:
    """The fixed text of a DoT-MP pass: the question and the thoughts so far, one space apart."""
    return " ".join([question.strip(), *previous])


def training_pairs(example: Example, variant: str) -> list[tuple[str, str]]:
    """(fixed source text, target text) pairs of one example; DoT-MP gives one pair per thought."""
    check_choice("variant", variant, VARIANTS)
    if variant == "dot":
        return [(example.question, f"{example.cot} {example.answer}".strip())]
    if variant == "answer_only":
        return [(example.question, example.answer)]
    steps = thoughts(example)
    return [(mp_context(example.question, steps[:i]), step) for i, step in enumerate(steps)]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, layout: Layout, source: str, target: str | None, truncate: bool = False):
    """(ids [n], fixed [n]) for ``source E || target E E…``; ``target=None`` leaves the target masked (a prompt).

    Raises when it does not fit, unless ``truncate``: then the longer side loses its last token until it does."""
    ids, fixed, _ = _encode(tokenizer, layout, source, target, truncate)
    return ids, fixed


def _encode(tokenizer, layout: Layout, source: str, target: str | None, truncate: bool):
    """``encode_pair`` plus whether the pair had to be truncated."""
    src, trg = _ids(tokenizer, source), ([] if target is None else _ids(tokenizer, target))
    room = layout.length - 3  # E after the source, ||, E after the target
    was_cut = len(src) + len(trg) > room
    if was_cut:
        if not truncate or target is None:
            need = len(src) + len(trg) + 3
            raise ValueError(f"a sequence of {need} tokens does not fit the canvas of {layout.length}: "
                             f"raise length or pass truncate=True ({source[:60]!r}…)")
        while len(src) + len(trg) > room:  # the longer side loses its last token (both when equal)
            longer_src, longer_trg = len(src) >= len(trg), len(trg) >= len(src)
            if longer_src:
                src.pop()
            if longer_trg:
                trg.pop()
    prefix = src + [layout.eos_id, layout.sep_id]
    if target is None:
        body = [layout.mask_id] * (layout.length - len(prefix))
    else:
        body = trg + [layout.eos_id] * (layout.length - len(prefix) - len(trg))
    ids = torch.tensor(prefix + body)
    fixed = torch.zeros(layout.length, dtype=torch.bool)
    fixed[: len(prefix)] = True
    return ids, fixed, was_cut


def encode_examples(tokenizer, layout: Layout, examples: list[Example], variant: str, truncate: bool = False):
    """Training canvases of every pair of every example: (ids [N, n], fixed [N, n]); truncations are reported."""
    rows, masks, cut = [], [], 0
    for example in examples:
        for source, target in training_pairs(example, variant):
            ids, fixed, was_cut = _encode(tokenizer, layout, source, target, truncate)
            cut += was_cut
            rows.append(ids)
            masks.append(fixed)
    if cut:
        warnings.warn(f"{cut} of {len(rows)} {variant} training sequences were truncated to {layout.length} tokens")
    return torch.stack(rows), torch.stack(masks)


def source_fits(tokenizer, layout: Layout, source: str) -> bool:
    """Whether ``source`` leaves room for at least one target token on the canvas."""
    return len(_ids(tokenizer, source)) + 4 <= layout.length


def prompts(tokenizer, layout: Layout, sources: list[str]):
    """Sampling canvases: each source fixed, the rest masked: (ids [B, n], fixed [B, n])."""
    pairs = [encode_pair(tokenizer, layout, s, None) for s in sources]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def generated_text(tokenizer, layout: Layout, ids) -> str | None:
    """The target of a sampled canvas: the text after ``||`` up to the first end-of-text, or None when it never
    ends (no end-of-text after the separator): such a sample counts as wrong (spec §3.6)."""
    ids = [int(i) for i in ids]
    if layout.sep_id not in ids:
        return None
    body = ids[ids.index(layout.sep_id) + 1:]
    if layout.eos_id not in body:
        return None
    return tokenizer.decode(body[: body.index(layout.eos_id)], skip_special_tokens=False).strip()


def decode_tokens(tokenizer, layout: Layout, ids, mask_text: str = "▒") -> list[str]:
    """One string per position (the mask state drawn as ``mask_text``), for the denoising chain."""
    return [mask_text if int(i) == layout.mask_id else tokenizer.convert_ids_to_tokens(int(i)) for i in ids]


def has_answer(text: str | None) -> bool:
    return text is not None and ANSWER_MARKER in text
