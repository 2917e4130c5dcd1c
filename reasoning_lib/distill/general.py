"""General (task-agnostic) causal distillation: a 6-block student from BERT-base on WikiText-103 with the MLM objective.

Wu et al. 2022, "Causal Distillation for Language Models" (NAACL; arXiv 2112.02505): the student is trained
against the teacher with the three objectives of DistilBERT (Sanh et al. 2019: masked LM, soft-target distillation,
cosine alignment of the last hidden states) plus DIITO, the interchange-intervention term. Their pre-training
code (``frankaging/Causal-Distill``: ``distillation/causal_distiller.py``, ``models/modeling_distilbert.py``)
computes, for a base batch b and its fixed *dual* (source) batch s, each corrupted for masked language modelling
on its own:

    L = a_ce  * T² * KL(p_T(b) ‖ q_S(b))                       over the base's real tokens ("soft cross-entropy")
      + a_mlm * CE(student(b), masked tokens)
      + a_cos * mean(1 − cos(h_S(b), h_T(b)))                   last block, real tokens
      + a_causal_ce  * T² * KL(p_T(b | V_T ← V_T(s)) ‖ q_S(b | V_S ← V_S(s)))
      + a_causal_cos * mean(1 − cos(h_S^cf, h_T^cf))           (0 in the reference run)

``standard`` distillation (the paper's DistilBERT baseline) is the same run without the intervention terms
(``a_causal_* = 0``, the README's "turn the causal objective off"; its older baseline command weighted the other
three 1/3 each, which under Adam differs only through clipping); ``causal`` is DIITO. The interchange
intervention reuses the hooks of :mod:`reasoning_lib.distill.intervention` (one site definition, the output of
block l, for reading and writing); the KL is :func:`reasoning_lib.distill.losses.soft_kl` (``batchmean`` over
the selected tokens, as the reference).

Data, as the reference's ``binarized_data.py`` and ``lm_seqs_dataset.py`` prepare WikiText-103: each line of the
corpus becomes ``[CLS] text [SEP]``, longer ones are cut into chunks of ``max_length`` tokens, sequences of at most
11 tokens or with half of them unknown are dropped, and every sequence gets one fixed dual from a random
permutation (here a derangement, so no sequence is its own source). The tokens are held as one flat ``uint16``
array (2 bytes a token), not as Python lists. MLM masking follows the reference: 15% of the real tokens of a batch,
drawn with probability ∝ count^-0.7 (``mlm_smoothing``; special tokens never), become [MASK] 80% / stay 10% /
a random id 10%.

Deliberate differences from that code: the sites of the interchange are read and written at the same block
(the reference reads ``hidden_states[l]``, the output of block l - 1, and writes block l's output); the README's
``single_middle_layer_6.nm`` (teacher L6 <-> student L3) is read as the getter reads it, the output after 6 of the
12 teacher blocks <-> after 3 of the 6 student blocks (``mapping='middle'``); sampled positions never fall on
padding; the optimiser is the book's loop's AdamW (β 0.9/0.999, ε 1e-8) where the reference uses
β 0.9/0.98, ε 1e-6; batches are not grouped by length.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, BertConfig, DistilBertConfig, DistilBertForMaskedLM, PreTrainedModel

from ..config import check_choice, check_positive, check_range, from_preset
from ..models import attention_implementation
from ..run_settings import num_steps, train_settings
from ..runtime import autocast, launch_info, resolve_device
from ..tokenization import load_tokenizer
from ..train import TrainConfig, finished_run, mark_finished, read_log, train
from .intervention import eligible, encoder_layers, interchanged, recording, sample_sites, source_values
from .losses import derangement, soft_kl
from .models import freeze, layer_mapping
from .stages import Trained, wait_for_main

METHODS = ("standard", "causal")
STUDENT_ARCHS = ("distilbert", "bert")
LOSS_TERMS = ("ce", "mlm", "cos", "causal_ce", "causal_cos")
# Local corpus files: the ``datasets`` builder for each suffix (GLUE's .tsv files are read as tab-separated csv).
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text", ".tokens": "text",
                 ".raw": "text", ".csv": "csv", ".tsv": "csv"}


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class GeneralDistillConfig:
    """Teacher, student, corpus, masking, loss weights and optimisation of one general distillation run."""

    teacher: str = "bert-base-uncased"  # a BERT masked LM: hub id or local folder (with its tokenizer)
    tokenizer: str | None = None  # None: the teacher's
    student_arch: str = "distilbert"  # DistilBERT-style student (no token types, no pooler), or a shallower BERT
    student_layers: tuple[int, ...] = (0, 2, 4, 7, 9, 11)  # teacher blocks the student's blocks are copied from
    copy_head_transform: bool = False  # also copy the MLM head's dense + LayerNorm (the reference leaves them random)
    freeze_positions: bool = True  # keep the copied position table fixed during distillation
    mapping: str = "middle"  # aligned sites: 'middle', 'full', or explicit '2:5' (student block : teacher blocks)
    dataset: str = "Salesforce/wikitext"
    dataset_config: str = "wikitext-103-v1"  # the reference's binarized_data.py reads this (not the -raw- one)
    max_length: int = 512  # tokens per sequence, [CLS] and [SEP] included
    min_length: int = 12  # the reference drops sequences of <= 11 tokens
    max_unknown: float = 0.5  # drop sequences with at least this fraction of [UNK]
    max_sequences: int | None = None  # keep only the first N sequences (small runs)
    mlm_probability: float = 0.15
    mask_keep_random: tuple[float, float, float] = (0.8, 0.1, 0.1)
    mlm_smoothing: float = 0.7  # masking probability ∝ count^-smoothing; 0: uniform over real tokens
    temperature: float = 2.0
    alpha_ce: float = 0.25
    alpha_mlm: float = 0.25
    alpha_cos: float = 0.25
    alpha_causal_ce: float = 0.25  # the ``causal`` method only; ``standard`` sets the causal weights to 0
    alpha_causal_cos: float = 0.0
    restrict_ce_to_mask: bool = False  # KL terms over the masked tokens only instead of every real token
    prop: float = 0.3  # fraction of min(len_b, len_s) positions swapped
    consecutive: bool = True  # one contiguous span per row (the reference run's --interchange_consecutive_only)
    batch_size: int = 240  # global: sequences per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    max_grad_norm: float = 5.0
    dropout: float = 0.1  # the student's (the teacher runs in eval mode)

    def __post_init__(self):
        check_choice("student_arch", self.student_arch, STUDENT_ARCHS)
        if not self.student_layers or len(set(self.student_layers)) != len(self.student_layers):
            raise ValueError(f"student_layers={self.student_layers} must be distinct teacher block indices")
        for name in ("max_length", "min_length", "batch_size", "epochs", "lr", "temperature", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        if self.min_length > self.max_length:
            raise ValueError(f"min_length={self.min_length} exceeds max_length={self.max_length}")
        if self.max_length < 4:
            raise ValueError(f"max_length={self.max_length} leaves no room for text between [CLS] and [SEP]")
        for name in ("max_sequences", "max_steps", "micro_batch_size"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        for name in ("mlm_probability", "prop", "warmup_fraction", "max_unknown"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_positive("mlm_smoothing", self.mlm_smoothing, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if len(self.mask_keep_random) != 3 or any(p < 0 for p in self.mask_keep_random) \
                or not math.isclose(sum(self.mask_keep_random), 1.0):
            raise ValueError(f"mask_keep_random={self.mask_keep_random} must be three probabilities summing to 1 "
                             "([MASK], keep, random id), e.g. (0.8, 0.1, 0.1)")
        for name in LOSS_TERMS:
            check_positive(f"alpha_{name}", getattr(self, f"alpha_{name}"), allow_zero=True)
        if not any(self.weights("standard").values()):
            raise ValueError("every non-causal loss weight (alpha_ce, alpha_mlm, alpha_cos) is 0: nothing to train on")

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.teacher

    def weights(self, method: str) -> dict[str, float]:
        """Loss weights of ``method``: ``standard`` drops the intervention terms, ``causal`` keeps them."""
        check_choice("method", method, METHODS)
        causal = method == "causal"
        return {name: getattr(self, f"alpha_{name}") if causal or not name.startswith("causal") else 0.0
                for name in LOSS_TERMS}

    def train_config(self, num_sequences: int, seed: int, device: str, world_size: int | None = None) -> TrainConfig:
        """The shared loop's settings: ``epochs`` over ``num_sequences`` (or ``max_steps``) at the global batch."""
        steps = self.max_steps or num_steps(self.batch_size, num_sequences, self.epochs)
        return train_settings(
            global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, steps=steps, world_size=world_size,
            lr=self.lr, weight_decay=self.weight_decay, warmup_steps=math.ceil(self.warmup_fraction * steps),
            schedule="linear", max_grad_norm=self.max_grad_norm, seed=seed, device=device,
        )


SMALL_BERT = "google/bert_uncased_L-4_H-256_A-4"  # Turc et al. 2019's 4-block BERT: a teacher a CPU can run
PRESETS = {
    # seconds: a few steps on a slice of WikiText-2 (or --data-files), teacher a 4-block BERT
    "smoke": GeneralDistillConfig(teacher=SMALL_BERT, student_layers=(0, 2), dataset_config="wikitext-2-v1",
                                  max_length=64, max_sequences=256, batch_size=16, max_steps=4, lr=1e-3,
                                  warmup_fraction=0.0),
    # CPU minutes: 4-block teacher -> 2-block student on 20k WikiText-2 sequences of at most 128 tokens
    "tiny": GeneralDistillConfig(teacher=SMALL_BERT, student_layers=(0, 2), dataset_config="wikitext-2-v1",
                                 max_length=128, max_sequences=20_000, batch_size=32, epochs=1.0, lr=5e-4),
    # The paper's setting as the reference README runs it: bert-base-uncased -> 6-block DistilBERT from teacher
    # blocks [0, 2, 4, 7, 9, 11] (its extract_distilbert.py: one block in two, keeping the last), WikiText-103,
    # sequences of <= 512 tokens, global batch 240 (batch 40, which DataParallel spreads over its 4 GPUs, x 6
    # accumulation steps), 3 epochs, lr 5e-4 with 5% warmup and linear decay, clip 5, T = 2, weights 0.25 each,
    # middle-layer alignment (single_middle_layer_6.nm), 30% consecutive positions. A micro-batch of 16 sequences
    # of 512 tokens with three passes of both networks is planned at ~21 GB (general_distill_plans).
    "paper": GeneralDistillConfig(micro_batch_size=16),
}
# A CPU check of the whole path at the preset's shapes: a few sequences (the 8 that two steps take), a global batch
# of 4 in two micro-batches (gradient accumulation included), two optimizer steps.
DRY_RUN = {"max_sequences": 8, "batch_size": 4, "micro_batch_size": 2, "max_steps": 2}


def get_config(preset: str, dry_run: bool = False, **overrides) -> GeneralDistillConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it); ``dry_run`` applies
    ``DRY_RUN`` first (given overrides still win)."""
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    return from_preset(PRESETS, preset, **overrides)


# ---------------------------------------------------------------------- corpus
def file_builder(paths: Sequence[str | os.PathLike]) -> tuple[str, dict]:
    """``(datasets builder, its options)`` for local files of one type (a .tsv is tab-separated csv)."""
    kinds = set()
    for path in paths:
        suffix = Path(path).suffix.lower()
        if suffix not in FILE_BUILDERS:
            raise ValueError(f"data file {path} has no known type; name it with one of {sorted(FILE_BUILDERS)}")
        kinds.add(suffix if suffix == ".tsv" else FILE_BUILDERS[suffix])
    if len(kinds) != 1:
        raise ValueError(f"data files {list(map(str, paths))} mix file types ({sorted(kinds)}); give files of one type")
    kind = kinds.pop()
    if kind == ".tsv":  # GLUE's own files: no quoting (SST-2 sentences hold bare quotes)
        import csv

        return "csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    return kind, {}


def local_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """``paths`` as a list of strings, after checking they are files of one known type."""
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    file_builder(paths)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"data file(s) not found: {missing}")
    return paths


def load_local(paths: str | os.PathLike | Sequence[str | os.PathLike]):
    """A ``datasets.Dataset`` of local files of one type (a missing or unknown file is named)."""
    from datasets import load_dataset

    paths = local_paths(paths)
    builder, options = file_builder(paths)
    return load_dataset(builder, data_files={"train": paths}, split="train", **options)


def open_corpus(config: GeneralDistillConfig, data_files: Sequence[str] | None = None, split: str = "train"):
    """Local ``data_files`` with a ``text`` column, else ``split`` of ``config.dataset`` from the hub."""
    if data_files:
        data = load_local(data_files)
    else:
        from datasets import load_dataset

        try:
            data = load_dataset(config.dataset, config.dataset_config, split=split)
        except Exception as err:  # datasets raises several types when offline or missing
            offline = " (HF_DATASETS_OFFLINE=1: the hub is off)" if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
            raise FileNotFoundError(f"could not load {config.dataset!r} ({config.dataset_config}): {err}{offline}; "
                                    "pass local files with the hub's 'text' column as data_files") from None
    if "text" not in data.column_names:
        raise ValueError(f"the corpus has columns {data.column_names}, not the hub's 'text' column")
    return data


def encode_texts(tokenizer, texts: Iterable[str], max_length: int, min_length: int = 12, max_unknown: float = 0.5,
                 max_sequences: int | None = None, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, offsets)``: every non-blank line as ``[CLS] … [SEP]`` in chunks of at most ``max_length``, short
    or mostly-unknown sequences dropped; sequence i is ``tokens[offsets[i]:offsets[i + 1]]``."""
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    if cls is None or sep is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no [CLS]/[SEP] token: use a BERT "
                         "WordPiece tokenizer (e.g. bert-base-uncased)")
    dtype = np.uint16 if len(tokenizer) <= 2**16 else np.uint32
    chunks, lengths, kept, batch = [], [], 0, []
    body = max_length - 2

    def flush():
        nonlocal kept
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            for start in range(0, len(ids), body):
                seq = [cls, *ids[start:start + body], sep]
                if len(seq) < min_length or (unk is not None and seq.count(unk) >= max_unknown * len(seq)):
                    continue
                chunks.append(np.asarray(seq, dtype=dtype))
                lengths.append(len(seq))
                kept += 1
                if max_sequences and kept >= max_sequences:
                    return True
        batch.clear()
        return False

    for text in texts:
        if text and text.strip():
            batch.append(text.strip())
        if len(batch) >= batch_size and flush():
            break
    else:
        if batch:
            flush()
    if not chunks:
        raise ValueError(f"no sequence kept from the corpus (each needs >= {min_length} tokens, under "
                         f"{max_unknown:.0%} of them [UNK]): is it empty, all headings, or read with the wrong "
                         "tokenizer?")
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return np.concatenate(chunks), offsets


class LMSequences(torch.utils.data.Dataset):
    """Token sequences with a fixed dual each: row i is ``{"input_ids", "dual_input_ids"}`` (numpy ids), the dual
    of i being sequence ``dual[i]`` of a seeded derangement (the reference's fixed permutation, without self-pairs)."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seed: int = 0):
        if len(offsets) < 3:
            raise ValueError(f"{len(offsets) - 1} sequence(s): pairing base and source needs at least 2")
        self.tokens, self.offsets = tokens, offsets
        self.dual = derangement(len(self), torch.Generator().manual_seed(seed)).numpy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.sequence(i), "dual_input_ids": self.sequence(int(self.dual[i]))}

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """Occurrences of every id in the corpus (for the smoothed masking probabilities)."""
        return np.bincount(self.tokens, minlength=vocab_size)[:vocab_size]


def corpus_key(config: GeneralDistillConfig, tokenizer, data_files: Sequence[str] | None, split: str = "train") -> str:
    """A name for the encoded corpus: what it was read from and how it was cut."""
    source = [[str(Path(p).resolve()), Path(p).stat().st_size] for p in local_paths(data_files)] if data_files else \
        [config.dataset, config.dataset_config, split]
    identity = {"source": source, "tokenizer": config.tokenizer_name, "vocab": len(tokenizer),
                **{k: getattr(config, k) for k in ("max_length", "min_length", "max_unknown", "max_sequences")}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def prepare_corpus(config: GeneralDistillConfig, tokenizer, data_files: Sequence[str] | None = None, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, split: str = "train") -> LMSequences:
    """The encoded corpus (the hub's ``split``, e.g. ``'validation'`` for perplexity); with ``cache_dir`` it is
    encoded once and reloaded (``<key>.npz``, written atomically, so processes of a torchrun launch that all start
    it at once still read a whole file)."""
    cached = Path(cache_dir) / f"corpus-{corpus_key(config, tokenizer, data_files, split)}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached) as saved:
            return LMSequences(saved["tokens"], saved["offsets"], seed)
    data = open_corpus(config, data_files, split)
    texts = (text for rows in data.iter(batch_size=1000) for text in rows["text"])
    tokens, offsets = encode_texts(tokenizer, texts, config.max_length, config.min_length, config.max_unknown,
                                   config.max_sequences)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
        np.savez(partial, tokens=tokens, offsets=offsets)
        os.replace(partial, cached)
    return LMSequences(tokens, offsets, seed)


# ---------------------------------------------------------------------- masking and batches
def masking_probabilities(counts: np.ndarray, smoothing: float, special_ids: Iterable[int]) -> torch.Tensor:
    """Relative chance of each id to be chosen for MLM: ``max(count, 1)^-smoothing``, 0 for special tokens."""
    probs = np.maximum(counts, 1).astype(np.float64) ** -smoothing
    probs[[i for i in special_ids if i is not None]] = 0.0
    return torch.tensor(probs, dtype=torch.float32)


def _pad(rows: list[np.ndarray], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        n = min(len(row), length)
        ids[i, :n] = torch.as_tensor(row[:n].astype(np.int64))
        mask[i, :n] = 1
    return ids, mask


@dataclass
class MLMCollator:
    """Pads base and dual rows (the dual cut to the base batch's length, as the reference) and corrupts each for
    MLM independently: ``labels`` hold the original id at the chosen positions and -100 elsewhere."""

    token_probs: torch.Tensor  # (vocab,) relative chance to be masked; 0 for special tokens
    pad_id: int
    mask_id: int
    mlm_probability: float = 0.15
    mask_keep_random: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self):
        check_range("mlm_probability", self.mlm_probability, 0.0, 1.0)

    def mask(self, ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(corrupted ids, labels)``: ceil(p · real tokens) positions, drawn without replacement ∝ their id's
        chance."""
        weights = self.token_probs[ids] * attention
        candidates = int((weights > 0).sum())
        target = min(candidates, max(1, math.ceil(self.mlm_probability * int(attention.sum()))))
        chosen = torch.zeros(ids.numel(), dtype=torch.bool)
        if target:
            chosen[torch.multinomial(weights.flatten(), target, replacement=False)] = True
        chosen = chosen.view_as(ids)
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        if not target:  # nothing maskable (only special tokens): the batch has no MLM term
            return ids.clone(), labels
        action = torch.multinomial(torch.tensor(self.mask_keep_random), int(chosen.sum()), replacement=True)
        originals = ids[chosen]
        random_ids = torch.randint(len(self.token_probs), originals.shape)
        replaced = torch.where(action == 0, torch.full_like(originals, self.mask_id),
                               torch.where(action == 1, originals, random_ids))
        corrupted = ids.clone()
        corrupted[chosen] = replaced
        return corrupted, labels

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        base, base_mask = _pad([r["input_ids"] for r in rows], length, self.pad_id)
        source, source_mask = _pad([r["dual_input_ids"] for r in rows], length, self.pad_id)
        source = source[:, :int(source_mask.sum(1).max())]
        source_mask = source_mask[:, :source.shape[1]]
        base, labels = self.mask(base, base_mask)
        source, source_labels = self.mask(source, source_mask)
        return {"input_ids": base, "attention_mask": base_mask, "labels": labels, "source_input_ids": source,
                "source_attention_mask": source_mask, "source_labels": source_labels}


def make_collator(config: GeneralDistillConfig, tokenizer, dataset: LMSequences,
                  smoothing: float | None = None) -> MLMCollator:
    """The MLM collator of a run: masking chances from the corpus's own token counts (``smoothing`` overrides the
    config's; 0 masks uniformly, as Hugging Face's ``run_mlm.py`` evaluates)."""
    smoothing = config.mlm_smoothing if smoothing is None else smoothing
    probs = masking_probabilities(dataset.token_counts(len(tokenizer)), smoothing, tokenizer.all_special_ids)
    return MLMCollator(probs, tokenizer.pad_token_id, tokenizer.mask_token_id, config.mlm_probability,
                       config.mask_keep_random)


# ---------------------------------------------------------------------- teacher and student
def load_masked_lm(name: str) -> PreTrainedModel:
    """A masked LM from a hub id or a local folder (``save_pretrained``)."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return AutoModelForMaskedLM.from_pretrained(name, local_files_only=offline,
                                                    attn_implementation=attention_implementation())
    except OSError as err:
        where = " (HF_HUB_OFFLINE=1: only local folders and the cache)" if offline else ""
        raise FileNotFoundError(f"could not load the masked LM {name!r}{where}: {err}") from None


def load_teacher(name: str) -> PreTrainedModel:
    """The teacher masked LM (hub id or local folder), frozen."""
    return freeze(load_masked_lm(name))


def _distilbert_names(block: str) -> dict[str, str]:
    """DistilBERT block parameter -> BERT block parameter (the layouts of the two Hugging Face classes)."""
    pairs = {"attention.q_lin": "attention.self.query", "attention.k_lin": "attention.self.key",
             "attention.v_lin": "attention.self.value", "attention.out_lin": "attention.output.dense",
             "sa_layer_norm": "attention.output.LayerNorm", "ffn.lin1": "intermediate.dense",
             "ffn.lin2": "output.dense", "output_layer_norm": "output.LayerNorm"}
    return {f"{ours}.{w}": f"{block}.{theirs}.{w}" for ours, theirs in pairs.items() for w in ("weight", "bias")}


def student_source_names(student: PreTrainedModel, layers: Sequence[int], copy_head_transform: bool) -> dict[str, str]:
    """Student parameter -> teacher (``BertForMaskedLM``) parameter it starts from; parameters left out stay random."""
    own = student.state_dict()
    if isinstance(student, DistilBertForMaskedLM):
        names = {f"distilbert.embeddings.{n}": f"bert.embeddings.{n}"
                 for n in ("word_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")}
        for j, t in enumerate(layers):
            names |= {f"distilbert.transformer.layer.{j}.{ours}": theirs
                      for ours, theirs in _distilbert_names(f"bert.encoder.layer.{t}").items()}
        names |= {"vocab_projector.weight": "cls.predictions.decoder.weight", "vocab_projector.bias": "cls.predictions.bias"}
        if copy_head_transform:
            names |= {f"vocab_transform.{w}": f"cls.predictions.transform.dense.{w}" for w in ("weight", "bias")}
            names |= {f"vocab_layer_norm.{w}": f"cls.predictions.transform.LayerNorm.{w}" for w in ("weight", "bias")}
        return {k: v for k, v in names.items() if k in own}
    names = {}
    for name in own:
        if ".encoder.layer." in name:
            head, rest = name.split(".encoder.layer.")
            index, tail = rest.split(".", 1)
            names[name] = f"{head}.encoder.layer.{layers[int(index)]}.{tail}"
        elif copy_head_transform or ".transform." not in name:
            names[name] = name
    return names


def build_general_student(teacher: PreTrainedModel, layers: Sequence[int], arch: str = "distilbert",
                          copy_head_transform: bool = False, freeze_positions: bool = False,
                          dropout: float = 0.1) -> PreTrainedModel:
    """A masked-LM student with ``len(layers)`` blocks copied from the teacher's blocks ``layers``, its embeddings
    and output layer (DistilBERT: no token-type table, as the reference's ``extract_distilbert.py``)."""
    check_choice("arch", arch, STUDENT_ARCHS)
    t = teacher.config
    available = t.num_hidden_layers
    if not layers or any(not 0 <= int(l) < available for l in layers):
        raise ValueError(f"student layers {list(layers)} must be block indices of the {available}-block teacher")
    if getattr(t, "model_type", "") != "bert":
        raise ValueError(f"the teacher is a {getattr(t, 'model_type', type(teacher).__name__)!r} model; "
                         "a BERT masked LM (BertForMaskedLM) is needed")
    if arch == "distilbert":
        config = DistilBertConfig(
            vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings, n_layers=len(layers),
            n_heads=t.num_attention_heads, dim=t.hidden_size, hidden_dim=t.intermediate_size, dropout=dropout,
            attention_dropout=dropout, activation=t.hidden_act, initializer_range=t.initializer_range,
            pad_token_id=t.pad_token_id, sinusoidal_pos_embds=False, tie_word_embeddings=True,
        )
    else:
        config = copy.deepcopy(t)
        config.num_hidden_layers = len(layers)
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    student = AutoModelForMaskedLM.from_config(config, attn_implementation=attention_implementation())
    source, own = teacher.state_dict(), student.state_dict()
    for name, src in student_source_names(student, list(layers), copy_head_transform).items():
        if source[src].shape != own[name].shape:
            raise ValueError(f"student {name} {tuple(own[name].shape)} cannot take teacher {src} {tuple(source[src].shape)}")
        own[name] = source[src].clone()
    student.load_state_dict(own)
    if freeze_positions:
        position_table(student).requires_grad_(False)
    return student


def position_table(model: PreTrainedModel) -> torch.Tensor:
    """The learned position-embedding weight of a BERT or DistilBERT model."""
    return getattr(model, "base_model", model).embeddings.position_embeddings.weight


def general_student(config: GeneralDistillConfig, teacher: PreTrainedModel) -> PreTrainedModel:
    """The student of ``config`` before distillation."""
    return build_general_student(teacher, config.student_layers, config.student_arch, config.copy_head_transform,
                                 config.freeze_positions, config.dropout)


def site_mapping(spec: str, teacher_layers: int, student_layers: int) -> dict[int, list[int]]:
    """Student block -> teacher blocks swapped together. ``'middle'``: the output after half of each model's blocks
    (single_middle_layer.nm: teacher hidden state 6 <-> student hidden state 3, i.e. blocks 5 <-> 2 of 12 and 6);
    ``'full'`` or ``'j:t,…'`` as :func:`reasoning_lib.distill.models.layer_mapping`."""
    if spec == "middle":
        if teacher_layers % 2 or student_layers % 2:
            raise ValueError(f"'middle' needs even block counts (teacher {teacher_layers}, student {student_layers}); "
                             "give an explicit mapping like '0:1'")
        return {student_layers // 2 - 1: [teacher_layers // 2 - 1]}
    return layer_mapping(spec, teacher_layers, student_layers)


# ---------------------------------------------------------------------- losses
def kd_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(z_T/T) ‖ softmax(z_S/T))`` averaged over the tokens where ``mask`` is set: the soft
    cross-entropy of the student against the teacher minus the teacher's entropy (no gradient), as the reference."""
    return soft_kl(teacher_logits[mask], student_logits[mask], temperature)


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(1 − cos(h_S, h_T))`` over the tokens where ``mask`` is set (CosineEmbeddingLoss with target +1)."""
    return (1 - F.cosine_similarity(student_hidden[mask].float(), teacher_hidden[mask].float(), dim=-1)).mean()


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the masked positions (labels -100 elsewhere)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def _base(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _source(batch: dict) -> dict:
    return {"input_ids": batch["source_input_ids"], "attention_mask": batch["source_attention_mask"]}


def _last_block(model) -> int:
    return len(encoder_layers(model)) - 1


@dataclass
class GeneralObjective:
    """The run's loss as a ``loss_fn(student, batch)`` for the shared loop; ``last`` keeps the latest terms.

    Each step with causal weights: one student block j of ``mapping`` is drawn (Python's ``random``, seeded and
    restored by the loop) and the teacher is intervened at all of ``mapping[j]``; sites per row from torch's
    generator. The teacher's three runs are without gradient, the student's source and counterfactual runs with."""

    teacher: torch.nn.Module
    mapping: dict[int, list[int]]
    weights: dict[str, float]
    temperature: float = 2.0
    prop: float = 0.3
    consecutive: bool = True
    restrict_ce_to_mask: bool = False
    last: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; the terms are {list(LOSS_TERMS)}")
        if not any(self.weights.values()):
            raise ValueError("every loss weight is 0")
        if not self.mapping:
            raise ValueError("the site mapping is empty")
        check_positive("temperature", self.temperature)

    @property
    def causal(self) -> bool:
        return bool(self.weights.get("causal_ce") or self.weights.get("causal_cos"))

    def __call__(self, student: torch.nn.Module, batch: dict) -> torch.Tensor:
        terms = self.terms(student, batch)
        self.last = {k: v.detach() for k, v in terms.items()}
        return sum(self.weights.get(k, 0.0) * v for k, v in terms.items() if self.weights.get(k, 0.0))

    def terms(self, student: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Every loss term of this batch (the intervention terms only when their weights are set)."""
        base, real = _base(batch), batch["attention_mask"].bool()
        kl_tokens = batch["labels"] != -100 if self.restrict_ce_to_mask else real
        t_last, s_last = _last_block(self.teacher), _last_block(student)
        with torch.no_grad(), recording(self.teacher, [t_last]) as t_store:
            t_logits = self.teacher(**base).logits
        with recording(student, [s_last]) as s_store:
            s_logits = student(**base).logits
        terms = {"ce": kd_loss(t_logits, s_logits, kl_tokens, self.temperature),
                 "mlm": mlm_loss(s_logits, batch["labels"]),
                 "cos": cosine_loss(s_store[s_last], t_store[t_last], real)}
        if self.causal:
            terms |= self.causal_terms(student, batch, kl_tokens)
        return terms

    def causal_terms(self, student: torch.nn.Module, batch: dict, kl_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The counterfactual KL and cosine terms: both models on the base with their aligned sites from the source."""
        base, source, real = _base(batch), _source(batch), batch["attention_mask"].bool()
        sites = sample_sites(eligible(base), eligible(source), self.prop, self.consecutive)
        layer = random.choice(sorted(self.mapping))
        t_last, s_last = _last_block(self.teacher), _last_block(student)
        with torch.no_grad():
            values = source_values(self.teacher, source, self.mapping[layer], sites)
            with interchanged(self.teacher, values, sites), recording(self.teacher, [t_last]) as t_store:
                t_cf = self.teacher(**base).logits
        values = source_values(student, source, [layer], sites)
        with interchanged(student, values, sites), recording(student, [s_last]) as s_store:
            s_cf = student(**base).logits
        return {"causal_ce": kd_loss(t_cf, s_cf, kl_tokens, self.temperature),
                "causal_cos": cosine_loss(s_store[s_last], t_store[t_last], real)}


def make_objective(config: GeneralDistillConfig, method: str, teacher: PreTrainedModel,
                   student_layers: int | None = None) -> GeneralObjective:
    """The objective of ``method`` under ``config`` (``student_layers`` defaults to ``len(config.student_layers)``)."""
    layers = student_layers or len(config.student_layers)
    mapping = site_mapping(config.mapping, teacher.config.num_hidden_layers, layers)
    return GeneralObjective(teacher, mapping, config.weights(method), config.temperature, config.prop,
                            config.consecutive, config.restrict_ce_to_mask)


# ---------------------------------------------------------------------- the run
def run_folder(method: str) -> str:
    """Where a method's run lives inside the chapter's output folder."""
    return f"general-{method}"


def distill_general(method: str, config: GeneralDistillConfig, teacher: PreTrainedModel, tokenizer,
                    dataset: LMSequences, output_dir: str | os.PathLike, seed: int = 0, device: str = "auto",
                    data_files: Sequence[str] | None = None) -> Trained:
    """Distil a ``standard`` or ``causal`` student through the shared loop; a finished run with the same settings is
    reloaded (``<output_dir>/model``, with the tokenizer, ready for :mod:`reasoning_lib.distill.glue`)."""
    check_choice("method", method, METHODS)
    folder = Path(output_dir)
    settings = {"stage": f"general-{method}", "seed": seed, "corpus": corpus_key(config, tokenizer, data_files),
                **asdict(config)}
    if finished_run(folder, settings):
        return Trained(load_masked_lm(str(folder / "model")).eval(), read_log(folder))
    student = general_student(config, teacher)
    objective = make_objective(config, method, teacher.to(resolve_device(device)))
    train_config = config.train_config(len(dataset), seed, device, launch_info().world_size)
    result = train(student, dataset, train_config, make_collator(config, tokenizer, dataset), objective,
                   output_dir=folder, settings=settings)
    if launch_info().is_main:
        result.model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        mark_finished(folder, settings)
    wait_for_main()  # the GLUE fine-tuning that follows loads model/ on every process
    return Trained(result.model.eval(), result.history, result.steps_trained)



def prepare_general(config: GeneralDistillConfig, data_files: Sequence[str] | None = None, seed: int = 0,
                    cache_dir: str | os.PathLike | None = None):
    """``(tokenizer, frozen teacher, corpus)`` of a run: hub or local teacher and tokenizer, hub or local corpus."""
    tokenizer = load_tokenizer(config.tokenizer_name)
    teacher = load_teacher(config.teacher)
    if len(tokenizer) > teacher.config.vocab_size:
        raise ValueError(f"tokenizer {config.tokenizer_name!r} has {len(tokenizer)} tokens but the teacher's vocabulary "
                         f"is {teacher.config.vocab_size}: use the teacher's own tokenizer")
    return tokenizer, teacher, prepare_corpus(config, tokenizer, data_files, seed, cache_dir)


@torch.no_grad()
def mlm_eval(model: PreTrainedModel, dataset: LMSequences, collator: MLMCollator, num_sequences: int = 512,
             batch_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Masked-LM cross-entropy and perplexity on the first ``num_sequences`` sequences, with seeded masks (the
    global generator is restored afterwards); ``make_collator(..., smoothing=0)`` masks as ``run_mlm.py`` does."""
    model.eval()
    device = next(model.parameters()).device
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    total, count = 0.0, 0
    try:
        for start in range(0, min(num_sequences, len(dataset)), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, num_sequences, len(dataset)))]
            batch = {k: v.to(device) for k, v in collator(rows).items()}
            with autocast(device):
                logits = model(**_base(batch)).logits.float()
            picked = batch["labels"] != -100
            total += float(F.cross_entropy(logits[picked], batch["labels"][picked], reduction="sum"))
            count += int(picked.sum())
    finally:
        torch.set_rng_state(state)
    return {"mlm_loss": total / count, "perplexity": math.exp(total / count), "masked_tokens": count}


# ---------------------------------------------------------------------- resource plans
# WikiText-103's training split, encoded as above with bert-base-uncased: an estimate (about 103M words at ~1.3
# WordPiece tokens a word in paragraphs of ~150 tokens), not measured here; a real run's len(dataset) replaces it.
WIKITEXT103_SEQUENCES = 900_000
GLUE_TRAIN_SIZES = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "stsb": 5_749, "qqp": 363_846, "mnli": 392_702,
                    "qnli": 104_743, "rte": 2_490, "wnli": 635}


@lru_cache(maxsize=None)
def _bert_base_counts(arch: str, layers: int, classifier: bool) -> tuple[int, int]:
    """(all parameters, N) of a BERT-base-wide ``arch`` masked LM or classifier, built on the meta device."""
    from transformers import AutoModelForSequenceClassification

    from ..resources.paper import BERT_BASE

    width = {"dim": BERT_BASE["hidden_size"], "n_heads": BERT_BASE["num_attention_heads"], "hidden_dim": 3072}
    config = DistilBertConfig(vocab_size=BERT_BASE["vocab_size"], n_layers=layers, **width) if arch == "distilbert" \
        else BertConfig(**{**BERT_BASE, "num_hidden_layers": layers})
    auto = AutoModelForSequenceClassification if classifier else AutoModelForMaskedLM
    with torch.device("meta"):
        model = auto.from_config(config, attn_implementation="sdpa")
    embeddings = model.base_model.embeddings
    lookup = [embeddings.position_embeddings] + ([embeddings.word_embeddings] if classifier else []) + \
        ([embeddings.token_type_embeddings] if hasattr(embeddings, "token_type_embeddings") else [])
    total = sum(p.numel() for p in model.parameters())
    return total, total - sum(m.weight.numel() for m in lookup)


def _bert_base_spec(name: str, arch: str, layers: int, trainable: bool, passes: int, length: int,
                    classifier: bool = False):
    """A BERT-base-wide ``arch`` network of ``layers`` blocks: a masked LM, or with ``classifier`` a sequence
    classifier; counted on the meta device. N leaves out the lookup tables (the word table of a masked LM is also
    its output layer, so it stays)."""
    from ..resources.activations import DROPOUT_MASK_BYTES, LAYER_COEFFICIENTS
    from ..resources.paper import BERT_BASE
    from ..resources.plan import ModelSpec

    total, flops = _bert_base_counts(arch, layers, classifier)
    coefficient = LAYER_COEFFICIENTS["bert"] + (DROPOUT_MASK_BYTES if trainable else 0)  # dropout 0.1 when trained
    return ModelSpec(name=name, parameters=total, flops_parameters=flops, num_layers=layers,
                     hidden_size=BERT_BASE["hidden_size"], num_heads=BERT_BASE["num_attention_heads"], seq_len=length,
                     vocab_size=0 if classifier else BERT_BASE["vocab_size"], trainable=trainable, passes=passes,
                     layer_coefficient=coefficient)


def general_distill_plans(glue_config=None) -> list:
    """Chapter 7's general distillation at ``paper``: the two students on WikiText-103, then each fine-tuned on the
    GLUE tasks of the paper's table (``reasoning_lib.resources`` plans: GPU memory, FLOPs, hours)."""
    from ..resources.paper import LIST_BYTES_PER_SEQUENCE, LIST_BYTES_PER_TOKEN, PROCESSES, ceil_div, make_plan
    from .glue import get_glue_config

    config, glue = get_config("paper"), glue_config or get_glue_config("paper")
    processes, layers = PROCESSES["ch7"], len(config.student_layers)
    steps = ceil_div(WIKITEXT103_SEQUENCES * config.epochs, config.batch_size)
    tokens = WIKITEXT103_SEQUENCES * 150  # mean tokens a sequence, as the estimate above
    host = 2 * tokens + 16 * WIKITEXT103_SEQUENCES  # uint16 ids + int64 offsets and duals
    notes = (f"WikiText-103 as ~{WIKITEXT103_SEQUENCES:,} sequences (an estimate; ~150 tokens on average, at most "
             f"{config.max_length}): batches are not grouped by length, so a micro-batch is padded to its longest "
             f"sequence, taken as {config.max_length} for FLOPs and memory",)
    plans = []
    for method in METHODS:
        passes = 3 if method == "causal" else 1  # base, source and counterfactual runs of both networks
        student = f"student ({layers} blocks, {config.student_arch})"
        models = [_bert_base_spec(student, config.student_arch, layers, True, passes, config.max_length),
                  _bert_base_spec("teacher BERT base (frozen)", "bert", 12, False, passes, config.max_length)]
        plans.append(make_plan(f"ch7_general_{method}", config, models, processes, steps, host,
                               "uint16 token array + int64 offsets", notes))
    for method in METHODS:
        spec = _bert_base_spec(f"{method} student classifier", config.student_arch, layers, True, 1,
                               glue.max_length, classifier=True)
        for task in glue.tasks:
            n = GLUE_TRAIN_SIZES[task]
            host = n * (glue.max_length * LIST_BYTES_PER_TOKEN + LIST_BYTES_PER_SEQUENCE)
            plans.append(make_plan(f"ch7_glue_{task}_{method}", glue, [spec], processes,
                                   ceil_div(n * glue.epochs, glue.batch_size), host, "Python lists of token ids",
                                   (f"sequences padded to the longest of a micro-batch, at most {glue.max_length} "
                                    "tokens",)))
    return plans

__all__ = [
    "METHODS", "LOSS_TERMS", "PRESETS", "DRY_RUN", "GeneralDistillConfig", "get_config", "load_local", "open_corpus",
    "encode_texts", "LMSequences", "prepare_corpus", "masking_probabilities", "MLMCollator", "make_collator",
    "load_masked_lm", "load_teacher", "build_general_student", "general_student", "student_source_names",
    "site_mapping", "kd_loss", "cosine_loss", "mlm_loss", "GeneralObjective", "make_objective", "run_folder",
    "distill_general", "prepare_general", "mlm_eval",
    "general_distill_plans",
]
