"""Streamed probe rows and class-chunked logits: the probes' loss, gradient and scores without an (N, C) tensor.

The objective of a probe is the mean softmax cross-entropy over its rows plus an L2 term (``linear.py``). Its
gradient has a closed form, ``d CE / d logits = softmax - one_hot``, so it is accumulated here batch by batch
and chunk by chunk instead of through autograd, which would keep every batch's logits for the backward pass:

* a batch's log-normaliser is a running log-sum-exp over class chunks (pass 1);
* the softmax of a chunk is then ``exp(logits - lse)``; minus the one-hot it multiplies the batch's rows into
  the gradient of that chunk's weights (pass 2, recomputing the chunk's logits unless there is one chunk).

Weights are laid out (cells, classes, penalties, D) so that a chunk of classes of every (cell, penalty) problem
is one strided view, multiplied in one batched matmul per cell without copying. ``memory.py`` sizes the cuts.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .memory import ProbeLayout


class RowSource:
    """Standardised features of some cells for some rows, in batches ``(x (m, b, D), y (b,))`` on ``device``.

    ``flat`` (N, M, D) stays where it is (host memory, any float dtype); each batch is gathered, moved and
    standardised with the train ``mean``/``std`` (M, D). A ``resident`` layout gathers the rows once and keeps
    them on the device for every later pass (L-BFGS evaluates the objective hundreds of times)."""

    def __init__(self, flat: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None, cells: torch.Tensor,
                 mean: torch.Tensor, std: torch.Tensor, layout: ProbeLayout, device):
        self.flat, self.labels, self.cells, self.device = flat, labels, cells, torch.device(device)
        self.rows = torch.arange(len(flat)) if rows is None else rows
        self.mean, self.std = mean[cells].to(self.device), std[cells].to(self.device)  # (m, D)
        self.batch, self._resident = layout.row_batch, None
        if layout.resident:
            x = torch.empty(len(cells), len(self.rows), flat.shape[2], device=self.device)
            y = torch.empty(len(self.rows), dtype=torch.long, device=self.device)
            for begin, (xb, yb) in zip(range(0, len(self.rows), self.batch), self._gathered()):
                x[:, begin:begin + xb.shape[1]], y[begin:begin + len(yb)] = xb, yb
            self._resident = (x, y)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.flat.shape[2]

    def _gathered(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for begin in range(0, len(self.rows), self.batch):
            index = self.rows[begin:begin + self.batch]
            part = self.flat[index[:, None], self.cells[None, :]]  # (b, m, D): a copy of just these rows and cells
            x = part.to(self.device, torch.float32).sub_(self.mean).div_(self.std)
            yield x.transpose(0, 1).contiguous(), self.labels[index].to(self.device)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._resident is None:
            yield from self._gathered()
            return
        x, y = self._resident
        for begin in range(0, len(self.rows), self.batch):
            yield x[:, begin:begin + self.batch], y[begin:begin + self.batch]


def chunk_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, begin: int, end: int) -> torch.Tensor:
    """Logits (m, b, c, k) of rows ``x`` (m, b, D) for classes ``begin:end`` of ``weight`` (m, C, k, D), ``bias``
    (m, C, k)."""
    m, b, dim = x.shape
    w = weight[:, begin:end].reshape(m, -1, dim)  # (m, c*k, D), a view
    z = torch.baddbmm(bias[:, begin:end].reshape(m, 1, -1), x, w.transpose(1, 2))
    return z.view(m, b, end - begin, weight.shape[2])


def _chunks(num_classes: int, chunk: int):
    return [(c, min(c + chunk, num_classes)) for c in range(0, num_classes, chunk)]


def log_normaliser(x, y, weight, bias, chunk: int, best: bool = False):
    """Per (cell, row, penalty): log-sum-exp over all classes, the logit of class ``y`` (0 where ``y`` < 0, i.e.
    unseen), with ``best`` the top class (first maximum, else None); with one chunk also the softmax
    (m, b, C, k), else None.

    Each chunk's logits are turned into ``exp(z - max)`` in place, so one chunk-sized tensor is alive at a time."""
    lse = picked = top_class = softmax = None
    single = weight.shape[1] <= chunk
    for begin, end in _chunks(weight.shape[1], chunk):
        z = chunk_logits(x, weight, bias, begin, end)  # (m, b, c, k)
        local = y - begin
        inside = ((local >= 0) & (local < end - begin))[None, :, None]
        index = local.clamp(0, end - begin - 1)[None, :, None, None].expand(z.shape[0], -1, 1, z.shape[3])
        value = torch.where(inside, z.gather(2, index).squeeze(2), 0.0)
        picked = value if picked is None else picked + value
        top, where = z.max(2) if best else (z.amax(2), None)  # (m, b, k)
        total = z.sub_(top[:, :, None]).exp_().sum(2)
        part = total.log() + top
        if lse is None:
            lse, top_class, highest = part, where, top
        else:
            lse = torch.logaddexp(lse, part)
            if best:
                better = top > highest  # strictly: ties keep the earlier class, as argmax does
                highest, top_class = torch.where(better, top, highest), torch.where(better, where + begin, top_class)
        if single:
            softmax = z.div_(total[:, :, None])
        del z, value, index
    return lse, picked, top_class, softmax


def objective(source: RowSource, weight: torch.Tensor, bias: torch.Tensor, penalty: torch.Tensor, chunk: int) -> float:
    """Sum over problems of mean CE + penalty x ||W||^2; writes the gradient into ``weight.grad``/``bias.grad``.

    ``weight`` (m, C, k, D), ``bias`` (m, C, k), ``penalty`` (m, k): m cells x k penalties, independent problems."""
    grad_w, grad_b = weight.grad.zero_(), bias.grad.zero_()
    m, num_classes, k, dim = weight.shape
    total = torch.zeros(m, k, dtype=torch.float64, device=weight.device)
    for x, y in source.batches():
        lse, picked, _, softmax = log_normaliser(x, y, weight, bias, chunk)
        total += (lse - picked).sum(1, dtype=torch.float64)
        for begin, end in _chunks(num_classes, chunk):
            if softmax is not None:
                p = softmax
            else:  # recompute the chunk's logits: keeping every chunk would be the (N, C) table again
                p = chunk_logits(x, weight, bias, begin, end).sub_(lse[:, :, None, :]).exp_()  # (m, b, c, k)
            local = y - begin
            rows = ((local >= 0) & (local < end - begin)).nonzero().squeeze(1)
            p[:, rows, local[rows], :] -= 1.0  # minus the one-hot of the label
            grad_w[:, begin:end].reshape(m, -1, dim).baddbmm_(p.view(m, x.shape[1], -1).transpose(1, 2), x)
            grad_b[:, begin:end] += p.sum(1)
            del p
        softmax = None
    n = len(source)
    grad_w.div_(n).addcmul_(weight, (2 * penalty)[:, None, :, None])  # in place: no parameter-sized temporary
    grad_b.div_(n)
    norms = torch.linalg.vector_norm(weight, dim=(1, 3)).double().square()  # (m, k)
    return float((total / n + penalty.double() * norms).sum())


def summed_scores(source: RowSource, weight: torch.Tensor, bias: torch.Tensor, chunk: int, unseen_nats: float = 0.0):
    """Summed CE (m, k) in nats, float64, and correct top-1 counts (m, k) over ``source``'s rows; a row whose label
    is negative (unseen in training) costs ``unseen_nats`` and is wrong."""
    m, _, k, _ = weight.shape
    nats = torch.zeros(m, k, dtype=torch.float64, device=weight.device)
    correct = torch.zeros(m, k, dtype=torch.float64, device=weight.device)
    for x, y in source.batches():
        lse, picked, top_class, _ = log_normaliser(x, y, weight, bias, chunk, best=True)
        seen = (y >= 0)[None, :, None]
        nats += torch.where(seen, (lse - picked).double(), unseen_nats).sum(1)
        correct += ((top_class == y[None, :, None]) & seen).sum(1, dtype=torch.float64)
    return nats, correct


__all__ = ["RowSource", "chunk_logits", "log_normaliser", "objective", "summed_scores"]
