"""Activation memory of a training step: a closed-form estimate and a measurement on the CPU.

* :func:`estimate_activation_bytes` follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models", §4.1 eq. (1): a transformer layer keeps s·b·h·(34 + 5·a·s/h) bytes for backward in 16-bit
  training (s tokens, b sequences, h width, a heads); the 5·a·s/h term is the s×s attention matrix, which fused
  (flash) attention never stores. To it we add the per-token output (logits or scores) in fp32 with its gradients.
* :func:`measure_activation_bytes` runs the real forward pass under ``torch.autograd.graph.saved_tensors_hooks`` and
  sums the bytes of every distinct storage saved for backward (parameters excluded), at two micro-batch sizes, then
  fits bytes = intercept + slope · micro_batch (the intercept holds autocast's bf16 copies of the weights).

Deliberate difference from the paper's count: ``layer_coefficient`` replaces its 34 by what our modules keep, measured
(``LAYER_COEFFICIENTS``): HF GPT-2's ``gelu_new`` is five element-wise ops and keeps four of their outputs, SwiGLU
keeps gate, up and their product, and bf16 autocast keeps the residual stream and LayerNorm inputs in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import check_positive

KORTHIKANTI_COEFFICIENT = 34  # bytes per s·b·h in one layer (16-bit, with dropout masks), Korthikanti et al. eq. (1)
# Bytes per s·b·h per layer under bf16 autocast without dropout, measured with measure_activation_bytes (2 and 4
# layers, 128 wide, 64 tokens; the difference isolates one layer) at flash-style attention (no s×s matrix).
LAYER_COEFFICIENTS = {"gpt2": 64, "bert": 40, "llama": 66, "ddit": 60}
DROPOUT_MASK_BYTES = 4  # two dropout sites per layer (attention and MLP outputs), measured the same way
# Per element of the per-token output (fp32: the losses upcast it). Saved for backward, measured: a causal LM keeps
# the bf16 logits and the fp32 log-probabilities (6); SEDD keeps its bf16 output, the fp32 log-score (for gather)
# and exp(log-score) (10). At the start of backward two fp32 gradients of that size join them (8).
LOGIT_SAVED_BYTES = {"lm": 6, "sedd": 10}
LOGIT_BYTES = {kind: saved + 8 for kind, saved in LOGIT_SAVED_BYTES.items()}


def estimate_activation_bytes(num_layers: int, hidden: int, heads: int, seq_len: int, micro_batch: int, vocab: int,
                              flash: bool = True, layer_coefficient: float = KORTHIKANTI_COEFFICIENT,
                              logit_bytes: float = LOGIT_BYTES["lm"]) -> int:
    """Bytes kept for backward by one micro-batch: L·s·b·h·(c + 5·a·s/h) (Korthikanti et al. eq. 1, c = 34) plus the
    fp32 logits and their gradients, b·s·V·``logit_bytes``; ``flash`` drops the s×s attention term."""
    for name, value in (("num_layers", num_layers), ("hidden", hidden), ("heads", heads), ("seq_len", seq_len),
                        ("micro_batch", micro_batch)):
        check_positive(name, value)
    s, b, h = seq_len, micro_batch, hidden
    per_layer = s * b * h * (layer_coefficient + (0 if flash else 5 * heads * s / h))
    return int(num_layers * per_layer + b * s * vocab * logit_bytes)


@dataclass(frozen=True)
class ActivationFit:
    """Measured bytes saved for backward, bytes(b) = intercept + slope · b, with the points it was fitted to."""

    slope: float  # bytes per sequence of the micro-batch
    intercept: float  # bytes independent of the micro-batch (autocast's bf16 weight copies, masks of fixed size)
    measured: dict[int, int]  # micro-batch size -> measured bytes

    def __call__(self, micro_batch: int) -> int:
        return int(self.intercept + self.slope * micro_batch)


def saved_tensor_bytes(model: torch.nn.Module, batch: dict, loss_fn: Callable, autocast: bool = True) -> int:
    """Bytes of the distinct storages that one forward pass of ``loss_fn(model, batch)`` saves for backward."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:  # weights are counted once, as weights
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), context:
        loss = loss_fn(model, batch)
    del loss  # frees the graph before the next measurement
    return sum(storages.values())


def measure_activation_bytes(model: torch.nn.Module, make_batch: Callable[[int], dict], loss_fn: Callable,
                             micro_batches: Sequence[int] = (1, 2), autocast: bool = True) -> ActivationFit:
    """Run ``loss_fn(model, make_batch(b))`` on the CPU for each b in ``micro_batches`` (at the real shapes, in
    training mode, under bf16 autocast as the loop runs on CUDA) and fit the saved bytes linearly in b."""
    sizes = sorted(set(micro_batches))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ValueError(f"micro_batches={tuple(micro_batches)} must hold at least two distinct sizes >= 1")
    was_training = model.training
    model.train()
    measured = {b: saved_tensor_bytes(model, make_batch(b), loss_fn, autocast) for b in sizes}
    model.train(was_training)
    mean_b = sum(sizes) / len(sizes)
    mean_y = sum(measured.values()) / len(sizes)
    slope = sum((b - mean_b) * (measured[b] - mean_y) for b in sizes) / sum((b - mean_b) ** 2 for b in sizes)
    return ActivationFit(slope=slope, intercept=mean_y - slope * mean_b, measured=measured)
