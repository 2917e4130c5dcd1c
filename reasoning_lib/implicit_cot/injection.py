"""Rewrite the residual stream at the separator before every transformer block (Deng et al. 2023, §3; reference
``src/models/student.py`` and ``src/models/emulator.py``).

``at_separator(model, sep, rewrite)`` registers a forward pre-hook on each block of an HF decoder: before
block l runs, ``rewrite(l, h_sep)`` receives the stream entering block l at each row's separator (B, H) and
returns its replacement. The stream is cloned before the write so autograd stays correct. The hook acts
only on passes that contain the separator (the prompt pass), not on later cached decoding steps, so
generation with the KV cache carries the substituted keys and values without substituting again.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

Rewrite = Callable[[int, torch.Tensor], torch.Tensor]


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a GPT-2 (``transformer.h``) or Llama (``model.layers``) model."""
    for path in ("transformer.h", "model.layers", "h", "layers"):
        module = model
        try:
            for name in path.split("."):
                module = getattr(module, name)
        except AttributeError:
            continue
        return module
    raise TypeError(f"{type(model).__name__} has no transformer blocks this library knows how to hook")


@contextmanager
def at_separator(model: torch.nn.Module, sep: torch.Tensor, rewrite: Rewrite) -> Iterator[None]:
    """While active, replace the state entering each block at position ``sep`` (B,) by ``rewrite(layer, state)``."""
    rows = torch.arange(sep.shape[0], device=sep.device)

    def make_hook(layer: int):
        def hook(module, args, kwargs):
            from_kwargs = "hidden_states" in kwargs
            hidden = kwargs["hidden_states"] if from_kwargs else args[0]  # (B, T, H)
            if hidden.shape[1] <= int(sep.max()):  # a cached decoding step: the separator is in the past
                return None
            hidden = hidden.clone()
            hidden[rows, sep] = rewrite(layer, hidden[rows, sep]).to(hidden.dtype)
            if from_kwargs:
                return args, {**kwargs, "hidden_states": hidden}
            return (hidden, *args[1:]), kwargs

        return hook

    handles = [block.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, block in enumerate(decoder_blocks(model))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
