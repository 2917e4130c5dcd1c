"""Per-question answer losses of a causal LM (reference ``train/train_utils.py``, ``evaluate_single_model``): the
input to capacity (:mod:`.entropy`).

A question's loss is the **sum** of the cross-entropies of its answer tokens (nats per answer, not per token),
converted to bits. The reference gets the same quantity as mean token CE × answer tokens, over packed sequences
whose last answer is not truncated; here every question is its own right-padded row, so none is truncated and
each loss belongs to exactly one question (no packing, no attention across questions).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .entropy import nats_to_bits
from .profiles import Profiles
from .questions import IGNORE_INDEX, QAEncoder, collate_qa
from .splits import QuestionBatch


def _answer_nats_and_hits(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor):
    """(B,) summed answer cross-entropy in nats and (B,) whether every answer token is the top prediction."""
    logits = model(input_ids=input_ids).logits[:, :-1].float()  # (B, T-1, V): position t predicts t+1
    targets = labels[:, 1:]  # (B, T-1)
    answer = targets != IGNORE_INDEX
    token_nats = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    return (token_nats * answer).sum(1), ((logits.argmax(-1) == targets) | ~answer).all(1)


def answer_nats(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) summed cross-entropy in nats of the labelled tokens of each row; ids and labels are (B, T)."""
    return _answer_nats_and_hits(model, input_ids, labels)[0]


def _device(model: torch.nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.no_grad()
def answer_scores(model: torch.nn.Module, encoder: QAEncoder, questions: QuestionBatch, batch_size: int = 256,
                  device=None) -> tuple[np.ndarray, np.ndarray]:
    """(Q,) answer loss in **bits** and (Q,) whether greedy decoding reproduces the whole answer (one QA per row)."""
    was_training, device = model.training, _device(model, device)
    model.eval()
    nats, hits = [], []
    for start in range(0, len(questions), batch_size):
        ids, labels = encoder.rows(questions[start:start + batch_size])
        batch_nats, batch_hits = _answer_nats_and_hits(model, torch.from_numpy(ids).to(device),
                                                       torch.from_numpy(labels).to(device))
        nats.append(batch_nats.cpu())
        hits.append(batch_hits.cpu())
    model.train(was_training)
    if not nats:
        return np.empty(0), np.empty(0, dtype=bool)
    return nats_to_bits(torch.cat(nats).double().numpy()), torch.cat(hits).numpy()


def question_losses(model: torch.nn.Module, encoder: QAEncoder, questions: QuestionBatch, batch_size: int = 256,
                    device=None) -> np.ndarray:
    """(Q,) answer loss in **bits** of each question, evaluated in batches of one QA per row."""
    return answer_scores(model, encoder, questions, batch_size, device)[0]


@torch.no_grad()
def text_question_losses(model: torch.nn.Module, tokenizer, qa_pairs: Sequence[tuple[str, str]],
                         batch_size: int = 64, device=None) -> np.ndarray:
    """(Q,) answer loss in bits of free-text (question, answer) pairs, e.g. from another profile table.

    Encodes ``"Question: {q} Answer:"`` and ``" {a}"`` separately, so the answer tokens are known exactly."""
    was_training, device = model.training, _device(model, device)
    model.eval()
    prompts = tokenizer([f"Question: {q} Answer:" for q, _ in qa_pairs], add_special_tokens=False)["input_ids"]
    answers = tokenizer([f" {a}" for _, a in qa_pairs], add_special_tokens=False)["input_ids"]
    items = [{"input_ids": torch.tensor([tokenizer.bos_token_id, *p, *a, tokenizer.eos_token_id]),
              "labels": torch.tensor([IGNORE_INDEX] * (1 + len(p)) + a + [IGNORE_INDEX])}
             for p, a in zip(prompts, answers)]
    out = []
    for start in range(0, len(items), batch_size):
        batch = collate_qa(items[start:start + batch_size], tokenizer.pad_token_id)
        out.append(answer_nats(model, batch["input_ids"].to(device), batch["labels"].to(device)).cpu())
    model.train(was_training)
    return nats_to_bits(torch.cat(out).double().numpy()) if out else np.empty(0)


def mean_loss_by_subject(profiles: Profiles, questions: QuestionBatch, losses_bits: np.ndarray) -> dict[str, float]:
    """L_s: the mean loss in bits of the questions about each subject (subjects with no question are left out)."""
    if len(losses_bits) != len(questions):
        raise ValueError(f"{len(losses_bits)} losses for {len(questions)} questions")
    sums = np.bincount(questions.subject, weights=losses_bits, minlength=len(profiles.subjects))
    counts = np.bincount(questions.subject, minlength=len(profiles.subjects))
    return {s: float(sums[i] / counts[i]) for i, s in enumerate(profiles.subjects) if counts[i]}


def subject_losses(model: torch.nn.Module, encoder: QAEncoder, questions: QuestionBatch, batch_size: int = 256,
                   device=None) -> dict[str, float]:
    """L_s in bits per answer for every subject asked in ``questions`` (capacity's input)."""
    losses = question_losses(model, encoder, questions, batch_size, device)
    return mean_loss_by_subject(encoder.profiles, questions, losses)


__all__ = ["answer_nats", "answer_scores", "mean_loss_by_subject", "question_losses", "subject_losses", "text_question_losses"]
