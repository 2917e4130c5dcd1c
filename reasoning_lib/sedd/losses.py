"""The SEDD training loss: diffusion-weighted denoising score entropy (DWDSE; Lou et al. 2024, §3.3, Thm. 3.6;
reference ``losses.py``).

Per sequence: draw t ~ U(eps, 1), corrupt x_0 to x_t at total noise sigma_bar(t), and sum over positions
sigma(t) * score_entropy(log_s(x_t, sigma_bar), x_t, x_0). Positions marked ``fixed`` (a prompt, a question)
are never corrupted and contribute exactly zero. The score is cast to fp32 before the loss, whatever the
autocast (a deliberate difference from the reference, which computes it from bf16 values).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .graph import Graph


def sample_times(batch_size: int, eps: float = 1e-3, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """t = (1 - eps) u + eps with u ~ U(0, 1): the loss never samples t < eps."""
    u = torch.rand(batch_size, generator=generator).to(device)
    return (1 - eps) * u + eps


def dwdse_loss(model, graph: Graph, noise, x0: torch.Tensor, fixed: torch.Tensor | None = None,
               t: torch.Tensor | None = None, eps: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sequence loss [B] in nats: a bound on -log p(x_0) up to the t < eps range and the prior term."""
    if t is None:
        t = sample_times(x0.shape[0], eps, x0.device, generator)
    sigma_bar, rate = noise(t)
    x_t = graph.sample_transition(x0, sigma_bar[:, None], fixed, generator)
    log_score = model(x_t, sigma_bar).float()
    per_position = graph.score_entropy(log_score, sigma_bar[:, None], x_t, x0)
    if fixed is not None:
        per_position = per_position.masked_fill(fixed, 0.0)
    return (rate[:, None] * per_position).sum(dim=-1)


@dataclass
class SEDDObjective:
    """``loss_fn(model, batch)`` for the shared training loop: the mean per-sequence DWDSE.

    ``batch["input_ids"]`` is [B, n]; an optional boolean ``batch["fixed"]`` marks never-noised positions."""

    graph: Graph
    noise: object
    eps: float = 1e-3

    def __call__(self, model, batch: dict) -> torch.Tensor:
        return dwdse_loss(model, self.graph, self.noise, batch["input_ids"], batch.get("fixed"), eps=self.eps).mean()
