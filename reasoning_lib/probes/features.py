"""Probe features: hidden states of any model at chosen token positions or named token groups (the probes of the
``EleutherAI/transformer-reasoning`` reference, ``train/train_probe.py``).

Every HF model (GPT-2, Llama, BERT, …) called with ``output_hidden_states=True`` returns L+1 tensors (B, T, H):
entry 0 is the embedding output and entry l the residual stream after block l (HF applies the final norm to
the last entry). Other chapters' models plug in through ``forward``, a callable returning the same tuple.

Positions always index the *real* tokens of an example (0 = first, -1 = last), so left or right padding
never changes what is read: the batch is padded here, and ``position_ids`` are passed to models that take
them, so a left-padded row sees the same positions as the example run alone.

Where this differs from the reference (``train/train_probe.py``): its *name* group is "the 2 tokens after
'What was'" and it concatenates tokens (2d, 4d for *all*). Here a group is any list of token indices per
example (see :func:`token_groups_from_spans` to build them from character spans, so multi-token names work),
pooled by ``mean``, ``last`` or ``concat``; ``concat`` reproduces the reference and needs a fixed group size.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterator, Mapping, Sequence

import torch

from ..config import check_choice, check_positive

POOLS = ("mean", "last", "concat")
PADDING_SIDES = ("left", "right")
Forward = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]


def _hf_call(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, **extra):
    # position_ids matter for left padding: without them GPT-2 and Llama count positions from the padded column 0.
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **extra}
    if "position_ids" in inspect.signature(model.forward).parameters:
        kwargs["position_ids"] = position_ids
    return model(**kwargs)


def hf_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor):
    """HF forward with ``output_hidden_states=True``: L+1 tensors (B, T, H)."""
    return _hf_call(model, input_ids, attention_mask, position_ids, output_hidden_states=True).hidden_states


def hf_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """HF forward returning next-token logits (B, T, V)."""
    return _hf_call(model, input_ids, attention_mask, position_ids).logits


def pad_batch(sequences: Sequence[Sequence[int]], padding_side: str = "right", pad_token_id: int = 0):
    """Pad token lists into ``input_ids``, ``attention_mask``, ``position_ids`` (B, T) and ``starts`` (B,).

    ``starts[i]`` is the padded column of example i's first real token; positions count real tokens only."""
    check_choice("padding_side", padding_side, PADDING_SIDES)
    rows = [torch.as_tensor(seq, dtype=torch.long).reshape(-1) for seq in sequences]
    lengths = torch.tensor([len(row) for row in rows])  # (B,)
    width = int(lengths.max())
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    starts = width - lengths if padding_side == "left" else torch.zeros_like(lengths)  # (B,)
    for i, row in enumerate(rows):
        input_ids[i, starts[i]:starts[i] + len(row)] = row
        attention_mask[i, starts[i]:starts[i] + len(row)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): 0 at the first real token
    return input_ids, attention_mask, position_ids, starts


def token_groups_from_spans(offsets: Sequence[tuple[int, int]],
                            spans: Mapping[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Token indices overlapping each named character span, from a fast tokenizer's ``offset_mapping``."""
    groups = {}
    for name, (begin, end) in spans.items():
        groups[name] = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > begin]
        if not groups[name]:
            raise ValueError(f"span {name!r}=({begin}, {end}) covers no token of offsets {list(offsets)}")
    return groups


def token_groups(positions, num_examples: int) -> dict[str, list[list[int]]]:
    """Named per-example index lists; a plain list of ints becomes one single-token group per position."""
    if isinstance(positions, Mapping):
        groups = {str(name): [list(map(int, idx)) for idx in per_example] for name, per_example in positions.items()}
    else:
        groups = {str(p): [[int(p)]] * num_examples for p in positions}
    if not groups:
        raise ValueError("positions is empty: give at least one position or token group")
    for name, per_example in groups.items():
        if len(per_example) != num_examples:
            raise ValueError(f"token group {name!r} has {len(per_example)} index lists but there are "
                             f"{num_examples} examples")
        if any(len(idx) == 0 for idx in per_example):
            raise ValueError(f"token group {name!r} has an empty index list")
    return groups


def _resolve(groups: dict[str, list[list[int]]], lengths: list[int]) -> dict[str, list[list[int]]]:
    """Turn negative indices into real-token indices and reject any outside an example."""
    resolved = {}
    for name, per_example in groups.items():
        resolved[name] = []
        for example, (idx, length) in enumerate(zip(per_example, lengths)):
            fixed = [j + length if j < 0 else j for j in idx]
            bad = [j for j, f in zip(idx, fixed) if not 0 <= f < length]
            if bad:
                raise ValueError(f"position {bad[0]} of token group {name!r} is outside example {example}, which has "
                                 f"{length} real tokens (valid: {-length}..{length - 1})")
            resolved[name].append(fixed)
    return resolved


def _pools(pool: str | Mapping[str, str], groups: dict[str, list[list[int]]]) -> dict[str, str]:
    if isinstance(pool, str):
        pools = {name: pool for name in groups}
    else:
        unknown = sorted(set(pool) - set(groups))
        if unknown:
            raise ValueError(f"pool names unknown token group(s) {unknown}; groups are {list(groups)}")
        pools = {name: pool.get(name, "mean") for name in groups}
    for name, choice in pools.items():
        check_choice(f"pool[{name!r}]", choice, POOLS)
        sizes = sorted({len(idx) for idx in groups[name]})
        if choice == "concat" and len(sizes) > 1:
            raise ValueError(f"pool='concat' needs one group size, but token group {name!r} has sizes {sizes}")
    return pools


def _run_batches(model, sequences, batch_size: int, padding_side: str, pad_token_id: int, device, call) -> Iterator:
    """Yield ``(first_row, starts, call(model, ids, mask, position_ids))`` per batch, in eval mode, without grad."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for begin in range(0, len(sequences), batch_size):
            ids, mask, position_ids, starts = pad_batch(sequences[begin:begin + batch_size], padding_side, pad_token_id)
            with torch.no_grad():
                yield begin, starts, call(model, ids.to(device), mask.to(device), position_ids.to(device))
    finally:
        model.train(was_training)


def _pool_group(states: torch.Tensor, index: list[list[int]], starts: torch.Tensor, pool: str) -> torch.Tensor:
    """Pool the states (B, T, S, H) of one token group; returns (B, S, H), or (B, S, K*H) for ``concat``."""
    rows = torch.arange(states.shape[0])
    if pool == "last":
        return states[rows, starts + torch.tensor([idx[-1] for idx in index])]  # (B, S, H)
    width = max(len(idx) for idx in index)
    padded = torch.tensor([idx + [idx[-1]] * (width - len(idx)) for idx in index]) + starts[:, None]  # (B, K)
    gathered = states[rows[:, None], padded]  # (B, K, S, H)
    if pool == "concat":
        return gathered.permute(0, 2, 1, 3).flatten(2)  # (B, S, K*H), tokens in listed order
    mask = torch.tensor([[1.0] * len(idx) + [0.0] * (width - len(idx)) for idx in index])  # (B, K)
    return (gathered * mask[:, :, None, None]).sum(1) / mask.sum(1)[:, None, None]  # (B, S, H)


def collect_hidden_states(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], positions, pool: str | Mapping[str, str] = "mean",
    layers: Sequence[int] | None = None, batch_size: int = 32, padding_side: str = "right", pad_token_id: int = 0,
    device: torch.device | str | None = None, forward: Forward | None = None,
) -> torch.Tensor:
    """Hidden states (N, S, P, D) of ``sequences`` (N token lists) at ``positions``, float32 on the CPU.

    ``positions``: real-token indices shared by all examples (negative counts from the end), or a mapping
    group name -> N index lists. S = ``len(layers)`` (default all L+1 hidden states), P = number of groups,
    D = H, or K*H when a group is concatenated (narrower groups are zero-padded; a zero feature leaves a
    linear probe unchanged)."""
    check_positive("batch_size", batch_size)
    if len(sequences) == 0:
        raise ValueError("sequences is empty")
    lengths = [len(torch.as_tensor(seq).reshape(-1)) for seq in sequences]
    if min(lengths) == 0:
        raise ValueError(f"example {lengths.index(0)} has no tokens")
    groups = _resolve(token_groups(positions, len(sequences)), lengths)
    pools = _pools(pool, groups)
    widths = {name: len(groups[name][0]) if pools[name] == "concat" else 1 for name in groups}
    features = None
    for begin, starts, hidden in _run_batches(model, sequences, batch_size, padding_side, pad_token_id, device,
                                              forward or hf_hidden_states):
        chosen = range(len(hidden)) if layers is None else layers
        if any(not -len(hidden) <= layer < len(hidden) for layer in chosen):
            raise ValueError(f"layers={list(chosen)} but the model returns {len(hidden)} hidden states")
        states = torch.stack([hidden[layer].float().cpu() for layer in chosen], dim=2)  # (B, T, S, H)
        if features is None:
            size = states.shape[-1] * max(widths.values())
            features = torch.zeros(len(sequences), states.shape[2], len(groups), size)  # (N, S, P, D)
        for p, name in enumerate(groups):
            index = groups[name][begin:begin + len(starts)]
            pooled = _pool_group(states, index, starts, pools[name])  # (B, S, H or K*H)
            features[begin:begin + len(starts), :, p, :pooled.shape[-1]] = pooled
    return features


def model_cross_entropy(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], positions: Sequence[int], targets: Sequence[int],
    batch_size: int = 32, padding_side: str = "right", device: torch.device | str | None = None,
) -> float:
    """The LM's own mean CE (nats) for predicting ``targets[i]`` from real-token position ``positions[i]``.

    This is the model-side number the reference reports next to the probes, e.g. the first token of the bridge
    entity."""
    if not len(sequences) == len(positions) == len(targets):
        raise ValueError(f"{len(sequences)} sequences, {len(positions)} positions and {len(targets)} targets differ")
    lengths = [len(torch.as_tensor(seq).reshape(-1)) for seq in sequences]
    index = _resolve({"target position": [[int(p)] for p in positions]}, lengths)["target position"]

    total = 0.0
    for begin, starts, out in _run_batches(model, sequences, batch_size, padding_side, 0, device, hf_logits):
        cols = starts + torch.tensor([idx[0] for idx in index[begin:begin + len(starts)]])  # (B,)
        picked = out.float().cpu()[torch.arange(len(starts)), cols]  # (B, V)
        target = torch.as_tensor(targets[begin:begin + len(starts)], dtype=torch.long)  # (B,)
        total += torch.nn.functional.cross_entropy(picked, target, reduction="sum").item()
    return total / len(sequences)
