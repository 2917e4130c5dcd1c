"""A likelihood bound for SEDD models: the DWDSE integrated over t, per token and as perplexity.

The reference ships no evaluation of it (its issues #2 and #20 ask for one). The bound on -log p(x_0) is
the integral over t in [eps, 1] of E[sum_i sigma(t) l_i(t)], estimated here with ``num_times`` stratified
time points per sequence (one per stratum of [eps, 1]). Like the training loss it leaves out t < eps and the
prior term at t = 1 (under the log-linear schedule 0.1% of tokens are still unmasked there), so it is an
approximate upper bound, as reported in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import check_positive
from .losses import dwdse_loss


@dataclass
class ElboResult:
    """Bound in nats: total, per (scored) token, and as a perplexity exp(nats per token)."""

    total_nats: float
    num_tokens: int

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / self.num_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)


@torch.no_grad()
def elbo(model, graph, noise, sequences: torch.Tensor, fixed: torch.Tensor | None = None, num_times: int = 16,
         batch_size: int = 64, eps: float = 1e-3, seed: int = 0) -> ElboResult:
    """The bound over ``sequences`` [M, n]; ``fixed`` positions are neither scored nor counted."""
    check_positive("num_times", num_times)
    if sequences.ndim != 2 or len(sequences) == 0:
        raise ValueError(f"sequences must be a non-empty [M, n] tensor of ids, got shape {tuple(sequences.shape)}")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(sequences), batch_size):
        x0 = sequences[start:start + batch_size].to(device)
        fix = None if fixed is None else fixed[start:start + batch_size].to(device)
        for k in range(num_times):
            u = (k + torch.rand(len(x0), generator=gen)) / num_times  # stratified in [0, 1)
            t = (eps + (1 - eps) * u).to(device)
            total += float(dwdse_loss(model, graph, noise, x0, fix, t=t, generator=gen).sum()) * (1 - eps) / num_times
    scored = sequences.numel() - (0 if fixed is None else int(fixed.sum()))
    return ElboResult(total, scored)
