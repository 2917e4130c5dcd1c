"""Zero-shot likelihood benchmarks of SEDD's Table 1 (Lou, Meng & Ermon 2024, §5.1): LAMBADA, WikiText-2, PTB,
WikiText-103 and One Billion Words, as held-out [M, n] id tensors for ``likelihood.elbo``.

A model trained on OpenWebText is scored on other corpora, as GPT-2 was (Radford et al. 2019, Table 3): the test
split of each, its tokenisation artefacts undone first (WikiText's `` @-@ ``, PTB's ``<unk>`` and `` n't``, LM1B's
spaced punctuation, LAMBADA's curly quotes) so the text looks like the web text the model saw. The reference's
``data.py`` (louaaron/Score-Entropy-Discrete-Diffusion) defines such detokenisers and packs every benchmark like
OpenWebText: each row (a WikiText line, a PTB sentence, a LAMBADA passage, an LM1B sentence) detokenised,
tokenised, end-of-text appended, all concatenated and cut into blocks of ``length`` tokens, the remainder
dropped. :func:`benchmark_blocks` does the same (``pack=True``, the default); ``pack=False`` instead gives one
row per example (a longer one split over several rows), padded with end-of-text, with a mask of the real
tokens to pass as ``elbo(..., count_mask=blocks.real)``. The detokenisers below are written from the artefacts
each corpus has; they follow the reference's rules (one of its WikiText rules, ``/' [0-9]/``, matches only
that literal text and is left out). The repository ships no evaluation script (its issue #20), so the paper's
protocol beyond this packing is not known.

With internet the texts come from the hub (``datasets.load_dataset``; datasets that still ship a loading script
are read from the hub's Parquet export). Offline, ``data_files=`` names local files in the dataset's own layout
(json/jsonl/parquet rows with its text field, or text files with one row per line).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..config import check_choice, check_positive
from .corpus import concatenate_documents, file_builder

Rule = tuple["str | re.Pattern", str]


def _apply(text: str, rules: tuple[Rule, ...]) -> str:
    """Apply literal (``str.replace``) and regex (``re.sub``) rules in order."""
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text) if isinstance(pattern, re.Pattern) else text.replace(pattern, replacement)
    return text


def _hug(left: str, right: str) -> Rule:
    """``( a b )`` → ``(a b)``: drop the spaces just inside a pair of brackets or quotes."""
    return re.compile(f"{re.escape(left)}\\s*([^{re.escape(right)}]*?)\\s*{re.escape(right)}"), f"{left}\\1{right}"


def _close_up(marks: str) -> tuple[Rule, ...]:
    """`` , `` → ``, ``: punctuation attaches to the word before it."""
    return tuple((f" {mark} ", f"{mark} ") for mark in marks)


# WikiText (Merity et al. 2016): Moses-style spaces around punctuation, @-@ / @,@ / @.@ inside numbers and
# hyphenated words, headings written "= = Title = =", a space before each line break.
WIKITEXT_RULES: tuple[Rule, ...] = (
    ("s '", "s'"),  # plural possessive
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),
    *_close_up(":;.!?,"),
    _hug("(", ")"), _hug("[", "]"), _hug("{", "}"), _hug('"', '"'), _hug("'", "'"),
    ("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
    (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    (" \n", "\n"), ("\n ", "\n"),
    (" N ", " 1 "),
    (" 's", "'s"),
)


def detokenize_wikitext(text: str) -> str:
    """Undo WikiText's tokenisation (``1 @,@ 000`` → ``1,000``, ``( Japan ) ,`` → ``(Japan),``, ``= = H = =``)."""
    return _apply(text, WIKITEXT_RULES)


# PTB (Mikolov's text-only release): lower case, contractions split (" n't", " 's"), numbers replaced by N, rare
# words by <unk>, slashes escaped.
PTB_RULES: tuple[Rule, ...] = (
    (" 's", "'s"), ("s ' ", "s' "), (" n't", "n't"), (" \n ", "\n"), ("\\/", "/"),
)
PTB_AFTER_NUMBERS: tuple[Rule, ...] = (("$ 1", "$1"), ("# 1", "#1"), ("<unk>", "?"))


def detokenize_ptb(text: str) -> str:
    """Undo PTB's tokenisation (``do n't`` → ``don't``, ``$ N`` → ``$1``, ``<unk>`` → ``?``)."""
    text = _apply(text, PTB_RULES)
    while " N " in text:  # "N N" overlaps: one pass turns every other N
        text = text.replace(" N ", " 1 ")
    return _apply(text, PTB_AFTER_NUMBERS)


# One Billion Words (Chelba et al. 2013): one sentence per row, every punctuation mark spaced off, URLs too.
LM1B_RULES: tuple[Rule, ...] = (
    ("http : / / ", "http://"), ("https : / / ", "https://"),
    (re.compile(r" '(\w+)"), r"'\1"),  # I 'm, John 's
    (re.compile(r" (\w+) \. "), r" \1. "), (re.compile(r" (\w+) \.$"), r" \1."),
    (" ? ", "? "), (re.compile(r" \?$"), "?"), (" ! ", "! "), (re.compile(r" !$"), "!"),
    *_close_up(",:;"), (" / ", "/"),
    (re.compile(r'" ([^"]+) "'), r'"\1"'), (re.compile(r"' ([^']+) '"), r"'\1'"),
    (re.compile(r"\( ([^()]+) \)"), r"(\1)"), (re.compile(r"\[ ([^\[\]]+) \]"), r"[\1]"),
    ("$ ", "$"), ("\N{POUND SIGN} ", "\N{POUND SIGN}"),
)


def detokenize_lm1b(text: str) -> str:
    """Undo LM1B's tokenisation (``I 'm fine , thanks`` → ``I'm fine, thanks``, ``http : / / `` → ``http://``)."""
    return _apply(text, LM1B_RULES)


def detokenize_lambada(text: str) -> str:
    """LAMBADA (OpenAI's test file): curly double quotes made straight, each passage on a new line."""
    text = text.replace("\N{LEFT DOUBLE QUOTATION MARK}", '"').replace("\N{RIGHT DOUBLE QUOTATION MARK}", '"')
    return "\n" + text.strip()


@dataclass(frozen=True)
class Benchmark:
    """Where one benchmark's texts live on the hub, which split and field, and how to detokenise them."""

    name: str
    dataset: str
    config: str | None
    split: str
    text_field: str
    detokenize: Callable[[str], str]
    keep_linebreaks: bool = False  # the hub's rows end in "\n" (WikiText): local text files keep it too


# The order of SEDD's Table 1. LAMBADA's "default" config is OpenAI's lambada_test.jsonl (5,153 passages), the file
# the reference downloads; the others are the test splits GPT-2's Table 3 reports.
BENCHMARKS = {b.name: b for b in (
    Benchmark("lambada", "EleutherAI/lambada_openai", "default", "test", "text", detokenize_lambada),
    Benchmark("wikitext2", "Salesforce/wikitext", "wikitext-2-raw-v1", "test", "text", detokenize_wikitext, True),
    Benchmark("ptb", "ptb-text-only/ptb_text_only", "penn_treebank", "test", "sentence", detokenize_ptb),
    Benchmark("wikitext103", "Salesforce/wikitext", "wikitext-103-raw-v1", "test", "text", detokenize_wikitext, True),
    Benchmark("lm1b", "billion-word-benchmark/lm1b", "plain_text", "test", "text", detokenize_lm1b),
)}


def _load_local(spec: Benchmark, data_files):
    from datasets import load_dataset

    builder = file_builder(data_files)
    options = {"keep_linebreaks": spec.keep_linebreaks} if builder == "text" else {}
    groups = data_files.values() if isinstance(data_files, dict) else [data_files]
    files = [str(f) for group in groups for f in ([group] if isinstance(group, (str, os.PathLike)) else group)]
    return load_dataset(builder, data_files={"test": files}, split="test", **options)


def _load_hub(spec: Benchmark, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(spec.dataset, spec.config, split=split)
    except RuntimeError as err:  # a loading script (PTB, LM1B): datasets>=4 reads the hub's Parquet export instead
        if "scripts are no longer supported" not in str(err):
            raise
        export = f"hf://datasets/{spec.dataset}@refs/convert/parquet/{spec.config}/{split}/*.parquet"
        return load_dataset("parquet", data_files={split: export}, split=split)


def benchmark_texts(name: str, data_files=None, split: str | None = None) -> list[str]:
    """The raw (not yet detokenised) rows of benchmark ``name``: from the hub, or from local ``data_files``."""
    check_choice("benchmark", name, BENCHMARKS)
    spec = BENCHMARKS[name]
    try:
        rows = _load_local(spec, data_files) if data_files is not None else _load_hub(spec, split or spec.split)
    except (FileNotFoundError, ConnectionError, OSError) as err:  # datasets' offline / missing-file errors
        offline = " (HF_DATASETS_OFFLINE=1)" if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        raise FileNotFoundError(f"could not load {name} ({spec.dataset}, {spec.config}, {split or spec.split})"
                                f"{offline}: {err}; offline, pass data_files= with its files") from None
    field = spec.text_field if spec.text_field in rows.column_names else "text"
    if field not in rows.column_names:
        raise KeyError(f"{name} rows need a {spec.text_field!r} field; the files have {rows.column_names}")
    return rows[field]


@dataclass
class BenchmarkBlocks:
    """One benchmark's held-out ids: ``input_ids`` [M, n]; ``real`` [M, n] bool marks real tokens (None when
    packed: every position is a token); pass it to ``elbo(..., count_mask=blocks.real)``."""

    name: str
    input_ids: torch.Tensor
    real: torch.Tensor | None
    num_documents: int
    num_dropped: int = 0  # tokens of the packed stream's remainder, past the last full block

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel() if self.real is None else self.real.sum())


def _packed(ids: np.ndarray, length: int, name: str) -> tuple[torch.Tensor, int]:
    """[M, length] contiguous cuts of the stream, and how many tokens the remainder dropped."""
    rows = len(ids) // length
    if rows == 0:
        raise ValueError(f"{name} has {len(ids):,} tokens, fewer than one block of length={length}; "
                         f"use a shorter length or pack=False")
    return torch.from_numpy(ids[:rows * length].reshape(rows, length).copy()), len(ids) - rows * length


def _padded(tokenizer, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per document (ids + end-of-text, over several rows when longer), end-of-text padding, real mask."""
    eos = tokenizer.eos_token_id
    rows, masks = [], []
    for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
        ids = ids + [eos]
        for start in range(0, len(ids), length):
            piece = ids[start:start + length]
            rows.append(piece + [eos] * (length - len(piece)))
            masks.append([True] * len(piece) + [False] * (length - len(piece)))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


def benchmark_blocks(name: str, tokenizer, length: int, data_files=None, pack: bool = True,
                     split: str | None = None) -> BenchmarkBlocks:
    """Benchmark ``name``'s detokenised texts as held-out ids for ``likelihood.elbo``.

    ``pack=True`` (the reference's packing): every row + end-of-text, concatenated, cut into [M, length] blocks,
    the remainder dropped. ``pack=False``: one padded row per non-blank document, with ``real`` set."""
    check_positive("length", length)
    check_choice("benchmark", name, BENCHMARKS)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token: set one (documents end in end-of-text)")
    spec = BENCHMARKS[name]
    texts = [spec.detokenize(t) for t in benchmark_texts(name, data_files, split)]
    if pack:
        ids, dropped = _packed(concatenate_documents(tokenizer, texts), length, name)
        return BenchmarkBlocks(name, ids, None, len(texts), dropped)
    texts = [t for t in texts if t.strip()]  # a blank WikiText line would be a row of end-of-text alone
    if not texts:
        raise ValueError(f"{name} has no non-blank document")
    ids, real = _padded(tokenizer, texts, length)
    return BenchmarkBlocks(name, ids, real, len(texts))
