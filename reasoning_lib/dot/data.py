"""Diffusion-of-Thoughts sequences (reference ``dot-sedd`` branch, ``data.py``): ``question E || target E E …`` on
a fixed canvas.

Every position up to and including the separator ``||`` is *fixed*: never noised in training (so it costs
exactly zero loss) and written back by projection in sampling. Padding is end-of-text and counts as target,
so the model learns where the answer stops, as in the reference's SEDD branch.

* **DoT**: target = the whole rationale and the answer (``cot #### ans``).
* **DoT-MP**: one *thought* per pass. ``thoughts(example)`` splits a rationale into steps (the partial products
  of a multiplication, the ``<<…>>`` equations of GSM8K) plus the final ``#### ans``; pass i sees
  ``mp_context(question, thoughts[:i])`` and generates ``thoughts[i]``. Training and inference build the context
  with the same function (a deliberate difference: the reference's ``gsm8k_run_sample_cond_mp.py`` joins the
  question and the thoughts without the space its training data has, so it tokenises them differently).
* **answer only**: target = ``#### ans`` (the reference's ``hidden_thought``), the no-rationale control.

Tokenization at paper scale is plain GPT-2 BPE, as in the reference's SEDD branch (its ``get_tokenizer``
refuses the digit wrapper): a space-separated digit is one token (``" 1 3 4 5"`` is 4 tokens). Splitting numbers
into digits (the Plaid branch's ``--digit``) makes every space its own token too and pushes 5x5 DoT sequences to
182 tokens, past the 128-token canvas.

Deviations from the reference:

* a sequence that does not fit is refused with its length (or, with ``truncate=True``, shortened by the
  reference's rule, the longer side losing its last token, while keeping its final end-of-text, and counted)
  instead of silently losing the final end-of-text;
* ``check_canvas`` counts the sequences a canvas truncates and the answers it cuts, and refuses a canvas that
  cuts more than a small fraction of the answers: the reference trains on them silently;
* a question too long for a prompt keeps its first tokens, as the reference's rule does (it pops the end), as
  many as leave one target token: the reference cuts it against the gold target's length, which its test
  canvas holds and a prompt does not have.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerBase

from ..config import check_choice
from ..data.examples import ANSWER_MARKER, Example
from ..data.sequences import check_known_symbols, has_distinct_unknown
from ..tokenization import ARITHMETIC_SYMBOLS, build_digit_tokenizer, load_tokenizer

SEPARATOR = "||"
VARIANTS = ("dot", "dot_mp", "answer_only")


def build_tokenizer(name: str = "digits", split_digits: bool = False) -> PreTrainedTokenizerBase:
    """``'digits'``: one token per symbol, plus ``||``; otherwise a hub id or folder (``'gpt2'``): plain BPE as in
    the reference's SEDD branch, or numbers split into single digits when ``split_digits`` (Plaid's ``--digit``)."""
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


def _batch_ids(tokenizer, texts: list[str], chunk: int = 8192) -> list[list[int]]:
    """``_ids`` of many texts, in batched tokenizer calls (one call per text is ~10x slower)."""
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        out += tokenizer(texts[start:start + chunk], add_special_tokens=False)["input_ids"]
    return out


def encode_pair(tokenizer, layout: Layout, source: str, target: str | None, truncate: bool = False):
    """(ids [n], fixed [n]) for ``source E || target E E…``; ``target=None`` leaves the target masked (a prompt).

    Raises when it does not fit, unless ``truncate``: then the longer side loses its last token until it does
    (a prompt: the source keeps its first ``max_source_tokens`` tokens)."""
    ids, fixed, _, _ = _encode(tokenizer, layout, source, target, truncate)
    return ids, fixed


def _room(layout: Layout) -> int:
    return layout.length - 3  # E after the source, ||, E after the target


def max_source_tokens(layout: Layout) -> int:
    """The longest source a prompt can hold while leaving one target token and its end-of-text."""
    return _room(layout) - 1


def fitted_lengths(n_source: int, n_target: int, room: int) -> tuple[int, int]:
    """The reference's truncation (SEDD branch ``data.py``): while the pair is over ``room``, the longer side loses
    its last token, both sides when they are equal. → the kept (source, target) lengths."""
    while n_source + n_target > room:
        longer_source, longer_target = n_source >= n_target, n_target >= n_source
        n_source -= longer_source
        n_target -= longer_target
    return n_source, n_target


def _encode(tokenizer, layout: Layout, source: str, target: str | None, truncate: bool):
    """``encode_pair`` plus the canvas the pair needs and the (source, target) tokens the truncation dropped."""
    return _fit(layout, _ids(tokenizer, source), None if target is None else _ids(tokenizer, target), truncate,
                source)


def _fit(layout: Layout, src: list[int], trg: list[int] | None, truncate: bool, source: str):
    """``_encode`` from token ids; ``trg=None`` is a prompt; ``source`` names the pair in the error."""
    prompt = trg is None
    trg = [] if prompt else trg
    room = max_source_tokens(layout) if prompt else _room(layout)
    need = len(src) + len(trg) + layout.length - room
    if need > layout.length and not truncate:
        raise ValueError(f"a sequence of {need} tokens does not fit the canvas of {layout.length}: "
                         f"raise length or pass truncate=True ({source[:60]!r}…)")
    kept_src, kept_trg = (min(len(src), room), 0) if prompt else fitted_lengths(len(src), len(trg), room)
    lost = (len(src) - kept_src, len(trg) - kept_trg)
    src, trg = src[:kept_src], trg[:kept_trg]
    prefix = src + [layout.eos_id, layout.sep_id]
    if prompt:
        body = [layout.mask_id] * (layout.length - len(prefix))
    else:
        body = trg + [layout.eos_id] * (layout.length - len(prefix) - len(trg))
    ids = torch.tensor(prefix + body)
    fixed = torch.zeros(layout.length, dtype=torch.bool)
    fixed[: len(prefix)] = True
    return ids, fixed, need, lost


@dataclass(frozen=True)
class Truncation:
    """What a canvas of ``length`` tokens does to one split and variant: sequences truncated, answers cut.

    An answer is cut when the target that ends with ``#### ans`` (the only target of DoT and answer-only, the last
    pair of DoT-MP) loses tokens; ``longest`` is the longest canvas the split needs."""

    split: str
    variant: str
    length: int
    examples: int
    sequences: int
    truncated: int
    answers_cut: int
    longest: int

    @property
    def answer_fraction(self) -> float:
        return self.answers_cut / self.examples if self.examples else 0.0


def _encode_all(tokenizer, layout: Layout, examples: list[Example], variant: str, truncate: bool, split: str):
    """Every pair of every example encoded: (rows, masks, the :class:`Truncation` they add up to)."""
    if has_distinct_unknown(tokenizer):  # a symbol the tokenizer lacks is an error naming its line, not <unk>
        for name in ("question", "cot", "answer"):
            check_known_symbols(tokenizer, examples, name, [_ids(tokenizer, getattr(e, name)) for e in examples])
    pairs, is_answer = [], []
    for example in examples:
        mine = training_pairs(example, variant)
        pairs += mine
        is_answer += [k == len(mine) - 1 for k in range(len(mine))]  # the last target ends with '#### ans'
    sources, targets = _batch_ids(tokenizer, [s for s, _ in pairs]), _batch_ids(tokenizer, [t for _, t in pairs])
    rows, masks = [], []
    truncated = answers_cut = longest = 0
    for (source, _), src, trg, answer in zip(pairs, sources, targets, is_answer):
        ids, fixed, need, (src_lost, trg_lost) = _fit(layout, src, trg, truncate, source)
        truncated += src_lost > 0 or trg_lost > 0
        answers_cut += answer and trg_lost > 0
        longest = max(longest, need)
        rows.append(ids)
        masks.append(fixed)
    report = Truncation(split, variant, layout.length, len(examples), len(rows), truncated, answers_cut, longest)
    return rows, masks, report


def count_truncation(tokenizer, layout: Layout, examples: list[Example], variant: str,
                     split: str = "training") -> Truncation:
    """What the canvas would do to every pair of ``examples`` under the reference's truncation rule."""
    return _encode_all(tokenizer, layout, examples, variant, True, split)[2]


def check_truncation(report: Truncation, max_fraction: float | None) -> Truncation:
    """Refuse when more than ``max_fraction`` of the answers are cut (None: never); warn about any truncation."""
    if max_fraction is not None and report.answer_fraction > max_fraction:
        raise ValueError(
            f"{report.answers_cut} of {report.examples} {report.split} answers ({report.variant}) lose tokens on the "
            f"canvas of length={report.length} ({report.truncated} of {report.sequences} sequences truncated, the "
            f"longest needs {report.longest} tokens), more than max_truncated_fraction={max_fraction} (a cut answer "
            f"can be neither learned nor generated): raise length to at least {report.longest}, or use a tokenizer that "
            "writes it in fewer tokens (split_digits=False: plain BPE, as in the reference's SEDD branch)")
    if report.truncated:
        warnings.warn(f"{report.truncated} of {report.sequences} {report.variant} {report.split} sequences were "
                      f"truncated to {report.length} tokens ({report.answers_cut} of {report.examples} answers lose "
                      f"tokens; the longest needs {report.longest})")
    return report


def check_canvas(tokenizer, layout: Layout, examples: list[Example], variant: str, max_fraction: float | None,
                 split: str = "training") -> Truncation:
    """``count_truncation`` then ``check_truncation``: the counts, after refusing a canvas that cuts answers."""
    return check_truncation(count_truncation(tokenizer, layout, examples, variant, split), max_fraction)


def encode_examples(tokenizer, layout: Layout, examples: list[Example], variant: str, truncate: bool = False,
                    max_truncated_fraction: float | None = None):
    """Training canvases of every pair of every example: (ids [N, n], fixed [N, n]). With ``truncate``, the
    truncations are counted and reported, and refused above ``max_truncated_fraction`` of cut answers."""
    rows, masks, report = _encode_all(tokenizer, layout, examples, variant, truncate, "training")
    check_truncation(report, max_truncated_fraction)
    return torch.stack(rows), torch.stack(masks)


def source_fits(tokenizer, layout: Layout, source: str) -> bool:
    """Whether ``source`` leaves room for at least one target token on the canvas."""
    return len(_ids(tokenizer, source)) <= max_source_tokens(layout)


class Prompts(NamedTuple):
    """Sampling canvases (ids [B, n], fixed [B, n]) and, per row, whether its source lost its last tokens."""

    ids: torch.Tensor
    fixed: torch.Tensor
    truncated: list[bool]


def prompt_canvases(tokenizer, layout: Layout, sources: list[str], truncate: bool = False) -> Prompts:
    """Each source fixed, the rest masked. A source over ``max_source_tokens`` is refused, or with ``truncate``
    keeps its first tokens (the reference's rule drops the question's end), counted in a warning."""
    rows = [_fit(layout, ids, None, truncate, s) for s, ids in zip(sources, _batch_ids(tokenizer, sources))]
    cut = [lost[0] > 0 for *_, lost in rows]
    if any(cut):
        warnings.warn(f"{sum(cut)} of {len(sources)} prompts were longer than {max_source_tokens(layout)} tokens and "
                      f"keep their first {max_source_tokens(layout)} (one target token left on the canvas of "
                      f"{layout.length}): raise length to keep whole questions")
    return Prompts(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]), cut)


def prompts(tokenizer, layout: Layout, sources: list[str], truncate: bool = False):
    """Sampling canvases: each source fixed, the rest masked: (ids [B, n], fixed [B, n])."""
    canvases = prompt_canvases(tokenizer, layout, sources, truncate)
    return canvases.ids, canvases.fixed


def generated_text(tokenizer, layout: Layout, ids) -> str | None:
    """The target of a sampled canvas: the text after ``||`` up to the first end-of-text, or None when it never
    ends (no end-of-text after the separator): such a sample counts as wrong, as in the reference's
    ``cal_acc_gsm.py``."""
    ids = [int(i) for i in ids]
    if layout.sep_id not in ids:
        return None
    body = ids[ids.index(layout.sep_id) + 1:]
    if layout.eos_id not in body:
        return None
    return tokenizer.decode(body[: body.index(layout.eos_id)], skip_special_tokens=False).strip()


def decode_tokens(tokenizer, layout: Layout, ids, mask_text: str = "▒") -> list[str]:
    """One string per position (the mask state drawn as ``mask_text``), for the denoising chain. Byte-level BPE
    tokens are shown as text (GPT-2's ``Ġ7`` as ``7``); special tokens keep their names."""
    special = set(tokenizer.all_special_ids)
    return [mask_text if int(i) == layout.mask_id else _readable(tokenizer, int(i), special) for i in ids]


def canvas_text(tokenizer, layout: Layout, ids, fixed) -> str:
    """A canvas on one line: fixed (question) positions in brackets, the trailing end-of-text padding cut to one
    token and counted (``'... E  (+12 E)'``)."""
    tokens = decode_tokens(tokenizer, layout, ids)
    eos = tokenizer.eos_token  # "<eos>" in the book's digit tokenizer, "<|endoftext|>" under GPT-2
    padding = next((i for i, token in enumerate(reversed(tokens)) if token != eos), len(tokens))
    kept = min(len(tokens), len(tokens) - padding + 1)  # the first end-of-text ends the target: keep it
    shown = " ".join(f"[{token}]" if is_fixed else token for token, is_fixed in zip(tokens[:kept], fixed))
    return f"{shown}  (+{len(tokens) - kept} E)"


def _readable(tokenizer, token_id: int, special: set[int]) -> str:
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token_id in special:
        return token
    return tokenizer.convert_tokens_to_string([token]).strip() or token


def has_answer(text: str | None) -> bool:
    return text is not None and ANSWER_MARKER in text
