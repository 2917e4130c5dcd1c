"""A likelihood bound for SEDD models: the DWDSE integrated over t, per real token, as a perplexity, with its
standard error (Lou, Meng & Ermon 2024, "Discrete Diffusion Modeling by Estimating the Ratios of the Data
Distribution", §3.3 Thm. 3.6 and the perplexity bounds of §5.1).

The reference ships no evaluation of it (its issues #2 and #20 ask for one). The bound on -log p(x_0) is the
integral over t in [eps, 1] of E[sum_i sigma(t) l_i(t)], estimated here with ``num_times`` stratified time points
per sequence (one per stratum of [eps, 1]). Like the training loss it leaves out t < eps and the prior term at
t = 1 (under the log-linear schedule 0.1% of tokens are still unmasked there), so it is an approximate upper
bound, as reported in the paper.

Which positions are tokens. A review canvas is one review, then end-of-text up to the canvas length. The
padding after the first end-of-text is a deterministic function of where the review ends, so the canvas and
"the review followed by one end-of-text" carry the same information: -log p(canvas) = -log p(review, end).
The numerator is therefore the bound on the whole canvas (every position is noised and scored, padding
included: the model still pays for whatever it believes about the padding), and the honest per-token figure
divides it by the real tokens only (:func:`real_tokens`: the review and its first end-of-text), the count an
autoregressive model scoring "review<eos>" would divide by. Dividing by every position instead flatters the
perplexity by the padding fraction. Marking the padding ``fixed`` instead would condition on the length and
bound -log p(review | length), a smaller and not comparable number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..config import check_positive
from .losses import dwdse_loss


@dataclass
class ElboResult:
    """The bound in nats over a set of sequences, per counted token, as a perplexity, and its standard error.

    ``total_nats`` is the whole-canvas bound summed over the sequences; ``num_tokens`` the counted (real,
    not fixed) tokens it is divided by; ``num_positions`` the scored positions (real and padding, not fixed)."""

    total_nats: float
    num_tokens: int
    num_sequences: int = 0
    # SE of nats_per_token over sequences; each sequence's own estimate carries its time-sampling noise
    stderr_nats_per_token: float = math.nan
    num_positions: int | None = None
    sequence_nats: list[float] = field(default_factory=list, repr=False)  # per-sequence bound estimates

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / self.num_tokens

    @property
    def nats_per_position(self) -> float:
        """The bound divided by every scored position, padding included (what ``elbo`` used to report)."""
        return self.total_nats / (self.num_positions or self.num_tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    def perplexity_interval(self, z: float = 1.96) -> tuple[float, float]:
        """exp(nats per token -/+ z SE): a normal interval on the bound, mapped to perplexity (NaN for one sequence)."""
        half = z * self.stderr_nats_per_token
        return math.exp(self.nats_per_token - half), math.exp(self.nats_per_token + half)


def real_tokens(sequences: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Bool [M, n]: the positions that are tokens, not padding.

    Padding is the run of ``eos_id`` that ends a row, all but its first position: the first end-of-text is a
    real prediction (where the text ends). Rows with no trailing end-of-text (packed OpenWebText blocks, which
    hold end-of-text only between documents) count every position."""
    if sequences.ndim != 2:
        raise ValueError(f"sequences must be an [M, n] tensor of ids, got shape {tuple(sequences.shape)}")
    trailing = (sequences == eos_id).flip(-1).long().cumprod(-1).flip(-1).bool()  # every later position is eos too
    starts_run = trailing & ~torch.nn.functional.pad(trailing[:, :-1], (1, 0), value=False)
    return ~trailing | starts_run


def _check_mask(name: str, mask: torch.Tensor | None, sequences: torch.Tensor) -> None:
    if mask is not None and (mask.shape != sequences.shape or mask.dtype != torch.bool):
        raise ValueError(f"{name} must be a bool tensor of the sequences' shape {tuple(sequences.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")


def _ratio_stderr(nats: torch.Tensor, counts: torch.Tensor) -> float:
    """SE of sum(nats) / sum(counts) over sequences (delta method for a ratio of means; NaN for one sequence)."""
    m = len(nats)
    if m < 2:
        return math.nan
    ratio = nats.sum() / counts.sum()
    residual = nats - ratio * counts
    return float(residual.pow(2).sum().div(m - 1).sqrt() / math.sqrt(m) / counts.mean())


@torch.no_grad()
def elbo(model, graph, noise, sequences: torch.Tensor, fixed: torch.Tensor | None = None, num_times: int = 16,
         batch_size: int = 64, eps: float = 1e-3, seed: int = 0, count_mask: torch.Tensor | None = None) -> ElboResult:
    """The bound over ``sequences`` [M, n], divided by the counted tokens.

    ``fixed`` positions are never noised, scored nor counted. ``count_mask`` (bool [M, n], e.g.
    ``real_tokens(sequences, eos_id)``) says which other positions are tokens; None counts every position
    (packed blocks). Uncounted positions are still noised and their loss stays in the numerator (see the module
    docstring). The standard error is over the per-sequence estimates, so it includes the time-sampling noise."""
    check_positive("num_times", num_times)
    if sequences.ndim != 2 or len(sequences) == 0:
        raise ValueError(f"sequences must be a non-empty [M, n] tensor of ids, got shape {tuple(sequences.shape)}")
    _check_mask("fixed", fixed, sequences)
    _check_mask("count_mask", count_mask, sequences)
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    per_sequence = []
    for start in range(0, len(sequences), batch_size):
        x0 = sequences[start:start + batch_size].to(device)
        fix = None if fixed is None else fixed[start:start + batch_size].to(device)
        nats = torch.zeros(len(x0), dtype=torch.float64)
        for k in range(num_times):
            u = (k + torch.rand(len(x0), generator=gen)) / num_times  # stratified in [0, 1)
            t = (eps + (1 - eps) * u).to(device)
            nats += dwdse_loss(model, graph, noise, x0, fix, t=t, generator=gen).double().cpu() * (1 - eps) / num_times
        per_sequence.append(nats)
    nats = torch.cat(per_sequence)
    scored = torch.ones_like(sequences, dtype=torch.bool) if fixed is None else ~fixed.cpu()
    counted = scored if count_mask is None else scored & count_mask.cpu()
    counts = counted.sum(-1).double()
    if counts.sum() == 0:
        raise ValueError("no position is counted: every position is fixed or outside count_mask")
    return ElboResult(total_nats=float(nats.sum()), num_tokens=int(counts.sum()), num_sequences=len(sequences),
                      stderr_nats_per_token=_ratio_stderr(nats, counts), num_positions=int(scored.sum()),
                      sequence_nats=nats.tolist())
