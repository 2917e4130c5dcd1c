"""Distillation objectives: standard KD and KD + the DIITO interchange term.

    loss = alpha * T^2 * KL(p_T || q_S)  +  (1 - alpha) * CE(z_S, y)  +  beta * T^2 * KL(p_T^cf || q_S^cf)

KL uses the ``batchmean`` reduction (a mean over examples of the per-example KL), not the reference XXS
code's ``mean`` that also divides by the number of classes (a deliberate difference, so the KL does not
depend on the number of labels); all terms are computed in fp32.
``beta = 0`` is standard knowledge distillation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import check_positive, check_range
from .intervention import counterfactual_logits, eligible, model_inputs, sample_sites


def soft_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(z_T / T) || softmax(z_S / T))``, averaged over the batch."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(s, t, reduction="batchmean", log_target=True)


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation with no fixed point (n >= 2): no example is its own source (the reference's
    plain permutation can pair an example with itself, an identity intervention)."""
    if n < 2:
        raise ValueError("pairing base and source inputs needs batches of at least 2 examples")
    shift = int(torch.randint(1, n, (1,), generator=generator))
    order = torch.randperm(n, generator=generator)
    # order[i] -> order[(i + shift) % n]: a cyclic shift on a random order never maps an element to itself
    perm = torch.empty(n, dtype=torch.long)
    perm[order] = order.roll(-shift)
    return perm


@dataclass
class DistillObjective:
    """The training loss as a ``loss_fn(student, batch)`` for the shared training loop.

    Each step: sources are a derangement of the batch; one student layer j is drawn uniformly and its teacher
    layers ``mapping[j]`` are all intervened (as in the reference XXS ``causal_distiller.py``); sites are drawn
    per row. Randomness comes from
    torch's global generator and Python's ``random``, which the training loop seeds and restores on resume."""

    teacher: torch.nn.Module
    mapping: dict[int, list[int]]
    alpha: float = 0.7
    beta: float = 0.0
    temperature: float = 2.0
    prop: float = 0.3
    consecutive: bool = False
    special_ids: list[int] | None = None  # excluded from intervention sites when given

    def __post_init__(self):
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_positive("beta", self.beta, allow_zero=True)
        check_positive("temperature", self.temperature)
        check_range("prop", self.prop, 0.0, 1.0)
        if not self.mapping:
            raise ValueError("the layer mapping is empty")

    def __call__(self, student: torch.nn.Module, batch: dict) -> torch.Tensor:
        inputs = model_inputs(batch)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits
        student_logits = student(**inputs).logits
        loss = self.alpha * soft_kl(teacher_logits, student_logits, self.temperature)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(student_logits.float(), batch["labels"])
        if self.beta > 0:
            loss = loss + self.beta * self.counterfactual_loss(student, batch)
        return loss

    def counterfactual_loss(self, student: torch.nn.Module, batch: dict) -> torch.Tensor:
        """``T^2 * KL`` between the teacher's and the student's outputs under the aligned intervention."""
        perm = derangement(batch["input_ids"].shape[0]).to(batch["input_ids"].device)
        source = {k: v[perm] for k, v in batch.items()}
        sites = sample_sites(eligible(batch, self.special_ids), eligible(source, self.special_ids), self.prop, self.consecutive)
        layer = random.choice(sorted(self.mapping))
        with torch.no_grad():
            teacher_cf = counterfactual_logits(self.teacher, batch, source, self.mapping[layer], sites)
        student_cf = counterfactual_logits(student, batch, source, [layer], sites)
        return soft_kl(teacher_cf, student_cf, self.temperature)
