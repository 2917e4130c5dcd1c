"""The training stream of the capacity runs: fresh random QAs in bounded memory, whole QAs only, exposures counted.

The reference (``train/dataset.py`` of ``EleutherAI/transformer-reasoning``) draws new questions every epoch and
joins 34 QAs per sequence, cut at 512 tokens: with r17 names such a sequence averages ≈578 tokens, so its last
QAs are lost or half-labelled, and "34 QAs a sequence" overstates what is trained. Here:

* **Whole QAs.** A sequence holds the first of its ``max_qas`` drawn QAs that fit in ``max_seq_len`` tokens
  (BOS included); the rest are dropped, never cut. :class:`StreamTally` counts the 1-hop and 2-hop QAs actually
  served, so exposures per fact are measured, not assumed.
* **Bounded memory.** The shared loop (``reasoning_lib.train.BatchSampler``) permutes ``len(dataset)`` indices per
  epoch; over every sequence of a paper run (3.2e8) that permutation alone is 2.6 GB per process. The stream is
  instead ``chunk`` sequences long (a whole number of optimizer steps) and its item ``i`` in chunk-epoch ``e`` is
  drawn from a generator seeded by ``(seed, e, i)``: the loop's permutation costs 8 bytes x ``chunk``, and every
  chunk-epoch brings new questions. The loop's guarantee holds: step ``s`` takes positions ``[s·G, (s+1)·G)`` of
  the permuted chunk ``e = s // steps_per_chunk``, whatever the number of processes.

The stream learns the step it serves from :meth:`QAStream.set_step` (the loop's ``on_step`` callback, and
:func:`resume_step` before a resumed run's first batch).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import check_positive
from .questions import IGNORE_INDEX, QAEncoder, QuestionSampler, collate_qa
from .splits import QuestionBatch

TALLY_FIELDS = ("sequences", "one_hop_qas", "two_hop_qas", "tokens")
STREAM_LOG = "stream_log.jsonl"


def pack_whole(encoder: QAEncoder, questions: QuestionBatch, max_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """BOS and the leading QAs of ``questions`` that fit whole in ``max_len`` tokens: (ids, labels, QAs kept).

    Raises ``ValueError`` when not even the first QA fits (``max_len`` too small for one question)."""
    tokens, is_answer, lengths = encoder.encode(questions)
    ends = 1 + np.cumsum(lengths)  # sequence length after each QA, BOS included
    kept = int(np.searchsorted(ends, max_len, side="right"))
    if kept == 0 and len(questions):
        raise ValueError(f"max_seq_len={max_len} holds no whole QA (the first one needs {int(ends[0])} tokens): "
                         "raise max_seq_len")
    stop = int(ends[kept - 1]) - 1 if kept else 0
    ids = np.concatenate([[encoder.tokenizer.bos_token_id], tokens[:stop]])
    labels = np.where(np.concatenate([[False], is_answer[:stop]]), ids, IGNORE_INDEX)
    return ids, labels, kept


@dataclass
class StreamTally:
    """Sequences, 1-hop QAs, 2-hop QAs and tokens served by one process since the last :meth:`take`."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(TALLY_FIELDS), dtype=np.int64))

    def add(self, questions: QuestionBatch, tokens: int) -> None:
        one_hop = int((questions.relation < 0).sum())
        self.counts += (1, one_hop, len(questions) - one_hop, tokens)

    def take(self) -> np.ndarray:
        """The counts so far, and reset them to zero."""
        out, self.counts = self.counts, np.zeros_like(self.counts)
        return out


class QAStream(torch.utils.data.Dataset):
    """Map-style training stream for ``reasoning_lib.train.train``: ``len`` is one chunk of sequences.

    Item ``index`` is a fresh draw of ``max_qas`` questions from ``sampler`` (seeded by ``(seed, epoch, index)``),
    packed whole into ``max_seq_len`` tokens. ``global_batch`` is the loop's examples per optimizer step."""

    def __init__(self, encoder: QAEncoder, sampler: QuestionSampler, global_batch: int, chunk: int,
                 max_qas: int, max_seq_len: int = 512, seed: int = 0):
        for name, value in (("global_batch", global_batch), ("chunk", chunk), ("max_qas", max_qas),
                            ("max_seq_len", max_seq_len)):
            check_positive(name, value)
        self.encoder, self.sampler, self.seed = encoder, sampler, seed
        self.max_qas, self.max_seq_len = max_qas, max_seq_len
        self.steps_per_chunk = math.ceil(chunk / global_batch)
        self.chunk = self.steps_per_chunk * global_batch  # whole steps: a step never straddles two chunk-epochs
        self.epoch = 0
        self.tally = StreamTally()

    def __len__(self) -> int:
        return self.chunk

    def set_step(self, step: int) -> None:
        """The next items serve optimizer step ``step`` (0-based): its chunk-epoch draws them."""
        self.epoch = step // self.steps_per_chunk

    def questions(self, index: int, epoch: int | None = None) -> QuestionBatch:
        """The questions drawn for item ``index`` of chunk-epoch ``epoch`` (default: the current one), before packing."""
        if not 0 <= index < self.chunk:
            raise IndexError(f"index {index} out of range for a chunk of {self.chunk} sequences")
        epoch = self.epoch if epoch is None else epoch
        return self.sampler.sample(self.max_qas, np.random.default_rng([self.seed, epoch, index]))

    def item(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray, QuestionBatch]:
        """(ids, labels, the whole QAs they hold) of item ``index`` in chunk-epoch ``epoch``; counts nothing."""
        questions = self.questions(index, epoch)
        ids, labels, kept = pack_whole(self.encoder, questions, self.max_seq_len)
        return ids, labels, questions[:kept]

    def __getitem__(self, index: int) -> dict:
        ids, labels, kept = self.item(index)
        self.tally.add(kept, len(ids))
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}

    def collate(self, items: list[dict]) -> dict:
        """Right-pad to the longest item: input_ids, labels (-100 on padding), attention_mask, all (B, T)."""
        return collate_qa(items, self.encoder.tokenizer.pad_token_id)


def resume_step(folder: str | Path) -> int:
    """The step a run in ``folder`` resumes from: its newest checkpoint whose trainer state loads (as the loop
    chooses it), 0 without one."""
    for path in reversed(ckpt.list_checkpoints(Path(folder) / "checkpoints")):
        if not (path / "model.safetensors").is_file():
            continue
        try:
            return int(ckpt.load_trainer_state(path)["step"])
        except ckpt.CorruptCheckpointError:
            continue
    return 0


def read_stream_log(folder: str | Path, up_to_step: float = math.inf) -> list[dict]:
    """Cumulative tallies a run logged at its checkpoint steps (``stream_log.jsonl``), up to ``up_to_step``."""
    path = Path(folder) / STREAM_LOG
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [r for r in rows if r["step"] <= up_to_step]


def truncate_stream_log(folder: str | Path, step: int) -> dict:
    """Drop the rows past ``step`` (a resumed run redoes those steps); the totals at ``step`` (zeros if none)."""
    rows = read_stream_log(folder, step)
    path = Path(folder) / STREAM_LOG
    if path.is_file():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[-1] if rows else {"step": 0, **{k: 0 for k in TALLY_FIELDS}}


__all__ = ["QAStream", "STREAM_LOG", "StreamTally", "TALLY_FIELDS", "pack_whole", "read_stream_log", "resume_step",
           "truncate_stream_log"]
