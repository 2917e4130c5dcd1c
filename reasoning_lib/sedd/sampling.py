"""Reverse-time samplers: Euler (tau-leaping) and analytic (Tweedie) predictors, a final denoising step,
conditioning by projection, a count of network evaluations, and the denoising chain (Lou et al. 2024, §4;
reference ``sampling.py`` and ``run_sample_cond.py``).

Projection overwrites the fixed positions with their given ids before every step, before the denoiser and
once more on the output, so a prefix, a suffix or any set of positions never changes. Every sampler call
evaluates the network once per step, plus once for the denoiser: NFE = steps + 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import check_choice, check_positive
from .graph import Graph, sample_categorical

PREDICTORS = ("euler", "analytic", "none")


@dataclass
class SampleOutput:
    """Final tokens [B, n], network evaluations used, and (when recorded) every intermediate state."""

    tokens: torch.Tensor
    nfe: int
    chain: list[torch.Tensor] = field(default_factory=list)  # chain[0] = start, then one state per step
    times: list[float] = field(default_factory=list)  # the t of each chain state (0.0 after denoising)


class Projection:
    """Keeps ``ids`` at the positions where ``mask`` is True (both [B, n] or broadcastable)."""

    def __init__(self, ids: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        if (ids is None) != (mask is None):
            raise ValueError("fixed_ids and fixed_mask go together")
        self.ids, self.mask = ids, mask

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mask is None else torch.where(self.mask.to(x.device), self.ids.to(x.device), x)


@torch.no_grad()
def sample(model, graph: Graph, noise, batch_size: int, length: int, steps: int, predictor: str = "analytic",
           denoise: bool = True, eps: float = 1e-5, fixed_ids: torch.Tensor | None = None,
           fixed_mask: torch.Tensor | None = None, record_chain: bool = False,
           callback: Callable[[int, float, torch.Tensor], None] | None = None,
           generator: torch.Generator | None = None, device=None) -> SampleOutput:
    """Draw ``batch_size`` sequences of ``length`` tokens with ``steps`` predictor steps from t = 1 to ``eps``.

    ``callback(step, t, x)`` sees the state after every step (step 0 = the start)."""
    check_choice("predictor", predictor, PREDICTORS)
    check_positive("steps", steps)
    device = device or next(model.parameters()).device
    model.eval()
    project = Projection(fixed_ids, fixed_mask)
    nfe = 0

    def score(x, sigma_bar):
        nonlocal nfe
        nfe += 1
        return model(x, sigma_bar.expand(x.shape[0])).float().exp()

    x = project(graph.sample_limit((batch_size, length), device, generator))
    out = SampleOutput(tokens=x, nfe=0)

    def record(step, t, x):
        if record_chain:
            out.chain.append(x.cpu().clone())
            out.times.append(t)
        if callback is not None:
            callback(step, t, x)

    record(0, 1.0, x)
    grid = torch.linspace(1, eps, steps + 1, device=device)
    dt = (1 - eps) / steps
    for i in range(steps):
        t = grid[i : i + 1]
        if predictor == "euler":
            sigma_bar, rate = noise(t)
            rates = dt * rate[:, None, None] * graph.reverse_rate(x, score(x, sigma_bar))
            x = sample_categorical(F.one_hot(x, graph.num_states).float() + rates, generator)
        elif predictor == "analytic":
            sigma_now, sigma_next = noise.total(t), noise.total(t - dt)
            dsigma = (sigma_now - sigma_next)[:, None]
            probs = graph.staggered_score(score(x, sigma_now), dsigma) * graph.transp_transition(x, dsigma)
            x = sample_categorical(probs, generator)
        x = project(x)
        record(i + 1, float(grid[i + 1]), x)
    if denoise:
        t = grid[-1:]
        sigma = noise.total(t)
        probs = graph.staggered_score(score(x, sigma), sigma[:, None]) * graph.transp_transition(x, sigma[:, None])
        if graph.absorbing:
            probs = probs[..., :-1]  # never end on a mask
        x = project(sample_categorical(probs, generator))
        record(steps + 1, 0.0, x)
    out.tokens, out.nfe = x, nfe
    return out
