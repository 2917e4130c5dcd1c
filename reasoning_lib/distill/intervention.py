"""Interchange interventions on Hugging Face encoders, through forward hooks (no forked model code).

The *site* of layer ``l`` is the output of transformer block ``l`` (0-based), for reading and for writing
alike (Wu et al.'s code reads one block and writes the next). A counterfactual run
``M(base | block-l output at P_b <- block-l output of the source at P_s)`` records the source's outputs,
then reruns the base with a hook that overwrites the selected positions; everything downstream is
recomputed. Gradients flow through both runs when the caller allows them.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from ..config import check_range


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a BERT-family model (BERT, RoBERTa, DistilBERT), unwrapping DDP."""
    model = getattr(model, "module", model)
    base = getattr(model, "base_model", model)
    for path in (("encoder", "layer"), ("transformer", "layer")):
        node = base
        for name in path:
            node = getattr(node, name, None)
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise TypeError(f"cannot find the transformer blocks of {type(model).__name__}")


@dataclass
class Sites:
    """Matched positions per row: ``base[i, k]`` receives the source's ``source[i, k]`` where ``valid[i, k]``."""

    base: torch.Tensor  # (B, K) long
    source: torch.Tensor  # (B, K) long
    valid: torch.Tensor  # (B, K) bool

    def counts(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def eligible(batch: dict, special_ids: list[int] | None = None) -> torch.Tensor:
    """Positions an intervention may touch: real tokens, minus ``special_ids`` ([CLS], [SEP]) when given."""
    mask = batch["attention_mask"].bool()
    if special_ids:
        mask &= ~torch.isin(batch["input_ids"], torch.tensor(special_ids, device=mask.device))
    return mask


def sample_sites(base_mask: torch.Tensor, source_mask: torch.Tensor, prop: float = 0.3, consecutive: bool = False,
                 generator: torch.Generator | None = None) -> Sites:
    """``k_i = floor(prop * min(n_base_i, n_source_i))`` positions per row, drawn among the eligible ones.

    Random mode: without replacement, independently in the base and the source, each side then sorted, so the
    k-th chosen base position takes the k-th chosen source position: the pairing "in order" of Wu et al. 2022
    and of their XXS code, whose boolean interchange masks select positions in ascending order. Consecutive
    mode: one run of ``k_i`` consecutive eligible positions, with independent starts. Never lands on padding."""
    check_range("prop", prop, 0.0, 1.0)
    if base_mask.shape[0] != source_mask.shape[0]:
        raise ValueError(f"base has {base_mask.shape[0]} rows but source {source_mask.shape[0]}")
    rows = base_mask.shape[0]
    counts = [int(prop * min(int(b.sum()), int(s.sum()))) for b, s in zip(base_mask, source_mask)]
    width = max(counts + [1])
    base_idx = torch.zeros(rows, width, dtype=torch.long)
    source_idx = torch.zeros(rows, width, dtype=torch.long)
    valid = torch.zeros(rows, width, dtype=torch.bool)

    def draw(mask_row: torch.Tensor, k: int) -> torch.Tensor:
        positions = mask_row.nonzero().flatten().cpu()
        if consecutive:
            start = int(torch.randint(len(positions) - k + 1, (1,), generator=generator))
            return positions[start:start + k]
        # sorted: a random order on each side would pair base and source positions by a random bijection
        return positions[torch.randperm(len(positions), generator=generator)[:k]].sort().values

    for i, k in enumerate(counts):
        if k:
            base_idx[i, :k], source_idx[i, :k], valid[i, :k] = draw(base_mask[i], k), draw(source_mask[i], k), True
    device = base_mask.device
    return Sites(base_idx.to(device), source_idx.to(device), valid.to(device))


def all_sites(mask: torch.Tensor) -> Sites:
    """Every position of every row, matched with itself (``mask`` gives the widths)."""
    rows, length = mask.shape
    idx = torch.arange(length, device=mask.device).expand(rows, length)
    return Sites(idx, idx, torch.ones_like(mask, dtype=torch.bool))


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def gather(hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``hidden[i, idx[i, k]]`` as a (B, K, H) tensor."""
    return hidden.gather(1, idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def write(hidden: torch.Tensor, sites: Sites, values: torch.Tensor) -> torch.Tensor:
    """A copy of ``hidden`` with ``values[i, k]`` written at ``sites.base[i, k]`` for the valid sites."""
    rows = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1).expand_as(sites.base)
    out = hidden.clone()
    out[rows[sites.valid], sites.base[sites.valid]] = values[sites.valid].to(hidden.dtype)
    return out


@contextmanager
def recording(model: torch.nn.Module, layers: list[int]):
    """Within the block, every forward stores the output of each block in ``layers`` in the yielded dict."""
    blocks, store = encoder_layers(model), {}
    with ExitStack() as stack:
        for layer in layers:
            def hook(module, args, output, layer=layer):
                store[layer] = _hidden(output)
            stack.callback(blocks[layer].register_forward_hook(hook).remove)
        yield store


@contextmanager
def interchanged(model: torch.nn.Module, values: dict[int, torch.Tensor], sites: Sites):
    """Within the block, every forward has block ``l``'s output at ``sites.base`` replaced by ``values[l]``."""
    blocks = encoder_layers(model)
    with ExitStack() as stack:
        for layer, value in values.items():
            def hook(module, args, output, value=value):
                return _with_hidden(output, write(_hidden(output), sites, value))
            # prepend: transformers records output_hidden_states with its own forward hooks, installed at the
            # first forward; running before them keeps hidden_states consistent with the intervention
            stack.callback(blocks[layer].register_forward_hook(hook, prepend=True).remove)
        yield


def model_inputs(batch: dict) -> dict:
    """The keys a BERT classifier's forward takes (no labels: losses are computed by the caller)."""
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in batch}


def source_values(model, source: dict, layers: list[int], sites: Sites) -> dict[int, torch.Tensor]:
    """Block outputs of the source run at ``sites.source``, per layer: (B, K, H) each."""
    with recording(model, layers) as store:
        model(**model_inputs(source))
    return {layer: gather(store[layer], sites.source) for layer in layers}


def counterfactual_logits(model, base: dict, source: dict, layers: list[int], sites: Sites) -> torch.Tensor:
    """Logits of ``model`` on ``base`` with the blocks in ``layers`` taking the source's values at ``sites``."""
    values = source_values(model, source, layers, sites)
    with interchanged(model, values, sites):
        return model(**model_inputs(base)).logits
