"""Accuracy and interchange-intervention accuracy (IIA) of a student against its teacher.

IIA: over held-out (base, source) pairs and the mapped sites, how often the student's prediction under the
intervention at student layer j equals the teacher's under the intervention at ``mapping[j]`` (same
positions). It is reported per student layer and averaged; ``flip_rate`` is how often the intervention
changes the teacher's own prediction (the efficacy the reference XXS notebook ``Distillation-Effects.ipynb``
measures): where it never does, IIA reduces to agreement on ordinary inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data import collate
from .intervention import (
    counterfactual_logits, eligible, encoder_layers, interchanged, model_inputs, sample_sites, source_values,
)
from .losses import derangement


@torch.no_grad()
def predict(model: torch.nn.Module, examples: list[dict], batch_size: int = 256) -> torch.Tensor:
    """Predicted class of every example."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
        out.append(model(**model_inputs(batch)).logits.argmax(-1).cpu())
    return torch.cat(out)


def correct(model: torch.nn.Module, examples: list[dict], batch_size: int = 256) -> list[bool]:
    """Whether each example's predicted class is its label (two models on the same examples compare paired)."""
    labels = torch.tensor([e["label"] for e in examples])
    return (predict(model, examples, batch_size) == labels).tolist()


def accuracy(model: torch.nn.Module, examples: list[dict], batch_size: int = 256) -> float:
    """Fraction of examples whose predicted class is the label."""
    hits = correct(model, examples, batch_size)
    return sum(hits) / len(hits)


@dataclass
class InterchangeResult:
    """IIA per student layer and averaged, with the teacher's flip rate and IIA on the flipped cases."""

    iia: float
    per_layer: dict[int, float] = field(default_factory=dict)
    flip_rate: float = 0.0
    iia_on_flips: float = float("nan")


def _pairs(examples: list[dict], batch_size: int, seed: int):
    """Fixed (base, source) batches: each base batch paired with a derangement of itself."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(examples) - 1, batch_size):
        base = collate(examples[start:start + batch_size])
        if base["input_ids"].shape[0] < 2:
            continue
        perm = derangement(base["input_ids"].shape[0], gen)
        yield base, {k: v[perm] for k, v in base.items()}, gen


@torch.no_grad()
def interchange_accuracy(student, teacher, examples: list[dict], mapping: dict[int, list[int]], prop: float = 0.3,
                         consecutive: bool = False, special_ids: list[int] | None = None, seed: int = 0,
                         batch_size: int = 256) -> InterchangeResult:
    """IIA of ``student`` w.r.t. ``teacher`` over pairs built from ``examples`` (same sites for both models)."""
    student.eval()
    teacher.eval()
    device = next(student.parameters()).device
    agree = {j: [] for j in mapping}
    flipped, agree_flipped = [], []
    for base, source, gen in _pairs(examples, batch_size, seed):
        base, source = ({k: v.to(device) for k, v in b.items()} for b in (base, source))
        teacher_base = teacher(**model_inputs(base)).logits.argmax(-1)
        for j, teacher_layers in mapping.items():
            sites = sample_sites(eligible(base, special_ids), eligible(source, special_ids), prop, consecutive, gen)
            t = counterfactual_logits(teacher, base, source, teacher_layers, sites).argmax(-1)
            s = counterfactual_logits(student, base, source, [j], sites).argmax(-1)
            agree[j].append((t == s).cpu())
            flips = (t != teacher_base).cpu()
            flipped.append(flips)
            agree_flipped.append((t == s).cpu()[flips])
    if not flipped:
        raise ValueError("interchange accuracy needs at least 2 examples")
    per_layer = {j: float(torch.cat(v).float().mean()) for j, v in agree.items()}
    on_flips = torch.cat(agree_flipped)
    return InterchangeResult(
        iia=sum(per_layer.values()) / len(per_layer), per_layer=per_layer,
        flip_rate=float(torch.cat(flipped).float().mean()),
        iia_on_flips=float(on_flips.float().mean()) if len(on_flips) else float("nan"),
    )


@torch.no_grad()
def iia_matrix(student, teacher, examples: list[dict], prop: float = 0.3, consecutive: bool = False,
               special_ids: list[int] | None = None, seed: int = 0, batch_size: int = 256) -> list[list[float]]:
    """IIA for every (student layer, single teacher layer) pair: rows are student layers, columns teacher layers.

    Shows which teacher layer each student layer has come to mirror, mapped or not. Each cell equals
    ``interchange_accuracy(student, teacher, examples, {j: [t]}, ...).iia`` (the same pairs and sites), but every
    model runs its source once and one counterfactual per block, not one of each per cell (S + T runs, not 4 S T)."""
    student.eval()
    teacher.eval()
    device = next(student.parameters()).device
    n_student, n_teacher = len(encoder_layers(student)), len(encoder_layers(teacher))
    agree, rows = torch.zeros(n_student, n_teacher), 0
    for base, source, gen in _pairs(examples, batch_size, seed):
        base, source = ({k: v.to(device) for k, v in b.items()} for b in (base, source))
        sites = sample_sites(eligible(base, special_ids), eligible(source, special_ids), prop, consecutive, gen)
        t = _per_block_predictions(teacher, base, source, n_teacher, sites)
        s = _per_block_predictions(student, base, source, n_student, sites)
        agree += (s[:, None] == t[None]).sum(-1).float().cpu()
        rows += base["input_ids"].shape[0]
    if not rows:
        raise ValueError("interchange accuracy needs at least 2 examples")
    return (agree / rows).tolist()


def _per_block_predictions(model, base: dict, source: dict, blocks: int, sites) -> torch.Tensor:
    """(blocks, B) predicted classes on ``base`` with block l's output at ``sites`` taken from ``source``, per l."""
    values = source_values(model, source, list(range(blocks)), sites)
    out = []
    for layer in range(blocks):
        with interchanged(model, {layer: values[layer]}, sites):
            out.append(model(**model_inputs(base)).logits.argmax(-1))
    return torch.stack(out)
