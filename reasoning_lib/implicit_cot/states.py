"""Teacher states along the "diagonal" (Deng et al. 2023, §3.2).

Layer l of the explicit-CoT teacher is read at CoT position t_l: with Δ = (s2 − s1)/(L − 1) ("dynamic"),
t_l = round(s1 + l·Δ) clamped to s2, so the lowest layer reads the separator s1 and the highest the CoT's
closing E at s2; an integer Δ gives a fixed stride. The state is the residual stream *entering* block l
(HF ``hidden_states[l]``, never the post-``ln_f`` last element), standardised by a LayerNorm without affine
parameters. Deliberate fix of the reference: Δ is computed per example, not from the batch's first example.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5


def diagonal_positions(sep: torch.Tensor, cot_end: torch.Tensor, num_layers: int, delta: str | int = "dynamic") -> torch.Tensor:
    """CoT positions (B, L) read by each layer, from separator ``sep`` (B,) and CoT end ``cot_end`` (B,)."""
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be >= 1")
    layers = torch.arange(num_layers, device=sep.device, dtype=torch.float64)  # (L,)
    if delta == "dynamic":
        step = (cot_end - sep).double() / max(num_layers - 1, 1)  # (B,), one Δ per example
    elif isinstance(delta, int) and delta >= 0:
        step = torch.full_like(sep, delta, dtype=torch.float64)
    else:
        raise ValueError(f"delta={delta!r} must be 'dynamic' or an integer >= 0")
    positions = torch.round(sep[:, None].double() + layers[None, :] * step[:, None])  # half-to-even, as Python's round
    return torch.minimum(positions.long(), cot_end[:, None])


def normalise(states: torch.Tensor) -> torch.Tensor:
    """Standardise each H-vector (LayerNorm without affine parameters, eps 1e-5)."""
    return F.layer_norm(states, states.shape[-1:], eps=LAYER_NORM_EPS)


@torch.no_grad()
def teacher_states(
    teacher: torch.nn.Module, input_ids: torch.Tensor, sep: torch.Tensor, cot_end: torch.Tensor, delta: str | int = "dynamic"
) -> torch.Tensor:
    """Normalised teacher states z*_l (B, L, H) read on the diagonal of ``input_ids`` (B, T) in ``cot`` format."""
    was_training = teacher.training
    teacher.eval()
    hidden = teacher(input_ids=input_ids, output_hidden_states=True).hidden_states[:-1]  # L x (B, T, H): inputs of blocks
    teacher.train(was_training)
    positions = diagonal_positions(sep, cot_end, len(hidden), delta)  # (B, L)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    states = torch.stack([h[rows, positions[:, layer]] for layer, h in enumerate(hidden)], dim=1)  # (B, L, H)
    return normalise(states)
