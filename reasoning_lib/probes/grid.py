"""Probe results and the baselines they are read against (the ``EleutherAI/transformer-reasoning`` probes).

A :class:`ProbeGrid` holds one number per (hidden state, token position) cell: top-1 accuracy and mean
cross-entropy in nats on one split, next to two baselines that know only the *train* labels:

* majority class: always predict the most frequent train label (ties go to the smallest label id);
* empirical marginal: predict the train label frequencies with add-one (Laplace) smoothing over a label
  space of ``num_classes`` values, ``p(c) = (n_c + 1) / (n + num_classes)``. The smoothing keeps the CE of a
  held-out label never seen in training finite: it gets ``1 / (n + num_classes)``.

Deliberate fix of the reference (``train/train_probe.py``): its "uniform" baseline passes probabilities to
``cross_entropy`` as if they were logits and counts eval labels in the marginal; here the marginal is built
from train labels only and scored with log-probabilities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class LabelSpace:
    """Train label values mapped to ``0..C-1`` (sorted), their train counts and the smoothing support size."""

    values: torch.Tensor  # (C,) sorted distinct train labels
    counts: torch.Tensor  # (C,) train count of each
    num_classes: int  # size of the label space used for add-one smoothing, >= C

    @classmethod
    def fit(cls, train_labels: torch.Tensor, num_classes: int | None = None) -> "LabelSpace":
        """Label space of ``train_labels`` (N,); ``num_classes`` defaults to the number of distinct train labels."""
        if train_labels.ndim != 1 or len(train_labels) == 0:
            raise ValueError(f"train_labels must be a non-empty 1-D tensor, got shape {tuple(train_labels.shape)}")
        values, counts = torch.unique(train_labels.long(), sorted=True, return_counts=True)
        if num_classes is None:
            num_classes = len(values)
        if num_classes < len(values):
            raise ValueError(f"num_classes={num_classes} is smaller than the {len(values)} distinct train labels")
        return cls(values, counts, num_classes)

    @property
    def num_train(self) -> int:
        return int(self.counts.sum())

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """Compact ids (N,) of ``labels`` (N,); -1 marks a label never seen in training."""
        labels = labels.long()
        index = torch.searchsorted(self.values, labels).clamp(max=len(self.values) - 1)
        return torch.where(self.values[index] == labels, index, torch.full_like(index, -1))

    def unseen_log_prob(self) -> float:
        """Smoothed log-probability of one label value never seen in training."""
        return -math.log(self.num_train + self.num_classes)

    def check_room(self, labels: torch.Tensor) -> None:
        """Raise when ``labels`` hold more distinct unseen values than the smoothing support leaves room for."""
        unseen = torch.unique(labels.long()[self.encode(labels) < 0])
        room = self.num_classes - len(self.values)
        if len(unseen) > room:
            raise ValueError(f"labels hold {len(unseen)} distinct values never seen in training, but num_classes="
                             f"{self.num_classes} leaves room for only {room}; pass a larger num_classes")

    def baselines(self, labels: torch.Tensor) -> tuple[float, float]:
        """(majority-class accuracy, smoothed-marginal mean CE in nats) of the train labels, scored on ``labels``."""
        if len(labels) == 0:
            raise ValueError("cannot score baselines on an empty split")
        self.check_room(labels)
        ids = self.encode(labels)  # (N,)
        majority = int(torch.argmax(self.counts))  # first maximum = smallest label id among ties
        accuracy = (ids == majority).double().mean().item()
        log_marginal = torch.log((self.counts.double() + 1) / (self.num_train + self.num_classes))  # (C,)
        unseen = torch.tensor(self.unseen_log_prob(), dtype=torch.float64)
        log_p = torch.where(ids >= 0, log_marginal[ids.clamp(min=0)], unseen)  # (N,)
        return accuracy, -log_p.mean().item()


def hidden_state_names(num_states: int) -> list[str]:
    """Names of HF ``hidden_states`` entries: ``'embeddings'``, then ``'layer 1'`` .. ``'layer L'``."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, num_states)]


@dataclass
class ProbeGrid:
    """Probe accuracy and CE (nats) per (hidden state, position) on one split, with train-label baselines."""

    accuracy: torch.Tensor  # (L+1, P) top-1 accuracy
    cross_entropy: torch.Tensor  # (L+1, P) mean CE in nats
    baseline_accuracy: float  # majority train class
    baseline_cross_entropy: float  # add-one smoothed train marginal
    layer_names: list[str]
    position_names: list[str]
    num_examples: int = 0  # rows scored
    num_classes: int = 0  # label-space size used for smoothing
    penalty: torch.Tensor | None = None  # (L+1, P) L2 penalty chosen by cross-validation
    model_cross_entropy: float | None = None  # the probed model's own CE for the same target, when known
    extra: dict = field(default_factory=dict)  # free-form notes for metrics.json (target, split, …)

    def __post_init__(self):
        shape = (len(self.layer_names), len(self.position_names))
        for name in ("accuracy", "cross_entropy", "penalty"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)} but layer_names x position_names is {shape}")

    def to_dict(self) -> dict:
        """JSON-ready dict (nested lists, floats) for ``metrics.json``."""
        out = {
            "accuracy": self.accuracy.tolist(), "cross_entropy": self.cross_entropy.tolist(),
            "baseline_accuracy": self.baseline_accuracy, "baseline_cross_entropy": self.baseline_cross_entropy,
            "layer_names": list(self.layer_names), "position_names": list(self.position_names),
            "num_examples": self.num_examples, "num_classes": self.num_classes,
            "penalty": None if self.penalty is None else self.penalty.tolist(),
            "model_cross_entropy": self.model_cross_entropy, "extra": dict(self.extra),
        }
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeGrid":
        """Inverse of :meth:`to_dict`, e.g. to plot a stored ``metrics.json``."""
        data = dict(data)
        for name in ("accuracy", "cross_entropy", "penalty"):
            if data.get(name) is not None:
                data[name] = torch.tensor(data[name], dtype=torch.float64)
        return cls(**data)
