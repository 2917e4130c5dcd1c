"""Linear probes: one multinomial logistic regression per (hidden state, position) cell, all fitted at once
(§3.7 and §5 of ``shared/specs/capacity_and_probes.md``; reference ``train/train_probe.py``, HEAD version).

Protocol, as in the reference: zero init; full-batch L-BFGS with a strong-Wolfe line search, ``max_iter`` 1000;
objective = mean CE + λ‖W‖² (bias not penalised), λ chosen per cell by 3-fold cross-validation over
{0} ∪ logspace(1e-8, 1e-4, 4 values) on the train rows, then refit on all train rows; the first 95% of rows
train and the last 5% are held out. Report CE in nats *and* top-1 accuracy (the project adds accuracy).

Where this deliberately differs:
* the cells and the candidate penalties form one batched problem, weights (cells, penalties, D, C). Its
  objective is a sum of independent convex problems, so its minimiser is each cell's own minimiser;
* features are standardised per cell with the train rows' mean and std (the reference probes raw states), so
  λ is in standardised units. The CV folds reuse the train-split statistics, a negligible leak;
* labels are mapped to the classes seen in training (the reference uses one class per vocabulary entry). A
  held-out label never seen in training counts as wrong and is scored with the add-one-smoothed probability
  of an unseen class, 1/(n + num_classes), exactly what the marginal baseline gives it (``grid.py``);
* the baselines come from the train labels only and use log-probabilities (§7: the reference passes
  probabilities as logits).

The spec's penalties are tiny: with a few thousand probe rows and wide states a probe can overfit, so small
runs may want a wider grid (e.g. ``penalties=(0, 1e-4, 1e-3, 1e-2, 1e-1)``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import check_positive, check_range
from .grid import LabelSpace, ProbeGrid, hidden_state_names

SPEC_PENALTIES = (0.0, *torch.logspace(-8, -4, 4, dtype=torch.float64).tolist())


@dataclass
class ProbeConfig:
    """How probes are fitted; defaults follow §3.7."""

    penalties: tuple[float, ...] = SPEC_PENALTIES  # L2 candidates; one value skips cross-validation
    cv_folds: int = 3
    max_iter: int = 1000  # L-BFGS iterations per fit
    eval_fraction: float = 0.05  # the last rows are held out
    standardize: bool = True
    num_classes: int | None = None  # label-space size for smoothing; None: distinct labels in the data
    max_batch_elements: int = 50_000_000  # cap on rows x cells x penalties x classes per batched fit (memory)
    seed: int = 0  # cross-validation folds
    device: str = "cpu"

    def __post_init__(self):
        self.penalties = tuple(float(p) for p in self.penalties)
        if not self.penalties or min(self.penalties) < 0:
            raise ValueError(f"penalties={self.penalties} must be a non-empty list of values >= 0")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds={self.cv_folds} must be >= 2")
        check_positive("max_iter", self.max_iter)
        check_positive("max_batch_elements", self.max_batch_elements)
        check_range("eval_fraction", self.eval_fraction, 1e-9, 1 - 1e-9)


def split_rows(num_rows: int, eval_fraction: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, held-out): the first ``1 - eval_fraction`` of the rows train, the rest evaluate."""
    num_train = int((1 - eval_fraction) * num_rows)
    if not 0 < num_train < num_rows:
        raise ValueError(f"eval_fraction={eval_fraction} leaves {num_train} of {num_rows} rows for training; "
                         "both splits must be non-empty")
    return torch.arange(num_train), torch.arange(num_train, num_rows)


def _logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Logits (N, M, K, C) of features x (N, M, D) under K probes per cell, weight (M, K, D, C), bias (M, K, C)."""
    return torch.einsum("nmd,mkdc->nmkc", x, weight) + bias


def _sum_ce(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Summed CE (M, K) over rows x (N, M, D) with compact labels y (N,)."""
    log_p = _logits(x, weight, bias).log_softmax(-1)  # (N, M, K, C)
    index = y[:, None, None, None].expand(*log_p.shape[:3], 1)
    return -log_p.gather(-1, index).squeeze(-1).sum(0)


def _fit_lbfgs(x: torch.Tensor, y: torch.Tensor, penalty: torch.Tensor, num_classes: int, max_iter: int):
    """Zero-initialised probes for every (cell, penalty): x (N, M, D), y (N,), penalty (M, K) -> weight, bias."""
    (num_rows, num_cells, dim), num_penalties = x.shape, penalty.shape[1]
    weight = torch.zeros(num_cells, num_penalties, dim, num_classes, device=x.device, requires_grad=True)
    bias = torch.zeros(num_cells, num_penalties, num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _sum_ce(x, y, weight, bias) / num_rows + penalty * weight.square().sum((2, 3))  # (M, K)
        loss.sum().backward()  # a sum of independent problems: each cell's gradient is its own
        return loss.sum()

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _choose_penalty(x: torch.Tensor, y: torch.Tensor, config: ProbeConfig, num_classes: int) -> torch.Tensor:
    """Per-cell penalty (M,) with the lowest K-fold cross-validated CE."""
    candidates = torch.tensor(config.penalties, device=x.device, dtype=x.dtype)  # (K,)
    if len(candidates) == 1:
        return candidates.expand(x.shape[1])
    generator = torch.Generator().manual_seed(config.seed)
    folds = torch.randperm(len(y), generator=generator).to(x.device).chunk(config.cv_folds)
    total = torch.zeros(x.shape[1], len(candidates), device=x.device, dtype=torch.float64)  # (M, K)
    for k, fold in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != k])
        weight, bias = _fit_lbfgs(x[rest], y[rest], candidates.expand(x.shape[1], -1), num_classes, config.max_iter)
        with torch.no_grad():
            total += _sum_ce(x[fold], y[fold], weight, bias).double()
    return candidates[total.argmin(1)]  # ties go to the smaller penalty


@dataclass
class LinearProbes:
    """Fitted probes for a grid of S hidden states x P positions over C train classes."""

    weight: torch.Tensor  # (S, P, D, C)
    bias: torch.Tensor  # (S, P, C)
    mean: torch.Tensor  # (S, P, D) train feature mean
    std: torch.Tensor  # (S, P, D) train feature std (1 where constant)
    penalty: torch.Tensor  # (S, P) chosen L2 penalty
    labels: LabelSpace

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (N, S, P, C) of the train classes for ``features`` (N, S, P, D)."""
        _check_features(features, self.weight.shape[:3], "weight")
        x = (features.float() - self.mean) / self.std  # (N, S, P, D)
        return (torch.einsum("nspd,spdc->nspc", x, self.weight) + self.bias).log_softmax(-1)

    def evaluate(self, features: torch.Tensor, labels: torch.Tensor, layer_names: list[str] | None = None,
                 position_names: list[str] | None = None, chunk: int = 4096) -> ProbeGrid:
        """Accuracy and mean CE (nats) per cell on (``features`` (N, S, P, D), ``labels`` (N,)), with baselines."""
        if len(labels) != len(features):
            raise ValueError(f"features have {len(features)} rows but labels {len(labels)}")
        self.labels.check_room(labels)
        ids = self.labels.encode(labels)  # (N,), -1 = unseen in training: wrong, smoothed unseen probability
        correct = torch.zeros(self.penalty.shape, dtype=torch.float64)  # (S, P)
        nats = torch.zeros(self.penalty.shape, dtype=torch.float64)  # (S, P)
        for begin in range(0, len(ids), chunk):
            part = ids[begin:begin + chunk]
            log_p = self.log_probs(features[begin:begin + chunk])  # (n, S, P, C)
            correct += (log_p.argmax(-1) == part[:, None, None]).double().sum(0)
            picked = log_p.gather(-1, part.clamp(min=0)[:, None, None, None].expand(*log_p.shape[:3], 1)).squeeze(-1)
            picked = torch.where(part[:, None, None] >= 0, picked.double(), self.labels.unseen_log_prob())
            nats -= picked.sum(0)
        base_accuracy, base_ce = self.labels.baselines(labels)
        num_states, num_positions = self.penalty.shape
        return ProbeGrid(
            accuracy=correct / len(ids), cross_entropy=nats / len(ids), baseline_accuracy=base_accuracy,
            baseline_cross_entropy=base_ce, layer_names=layer_names or hidden_state_names(num_states),
            position_names=position_names or [str(p) for p in range(num_positions)], num_examples=len(ids),
            num_classes=self.labels.num_classes, penalty=self.penalty.double().clone(),
        )


def _check_features(features: torch.Tensor, cells: tuple, what: str) -> None:
    if features.ndim != 4 or tuple(features.shape[1:]) != tuple(cells):
        expected = ", ".join(map(str, cells))
        raise ValueError(f"features have shape {tuple(features.shape)} but the probes' {what} expects (N, {expected})")


def fit_probes(features: torch.Tensor, labels: torch.Tensor, config: ProbeConfig | None = None) -> LinearProbes:
    """Fit one probe per cell on train ``features`` (N, S, P, D) and integer ``labels`` (N,) of any range."""
    config = config or ProbeConfig()
    if features.ndim != 4:
        raise ValueError(f"features must be (N, S, P, D), got shape {tuple(features.shape)}")
    if len(labels) != len(features):
        raise ValueError(f"features have {len(features)} rows but labels {len(labels)}")
    space = LabelSpace.fit(torch.as_tensor(labels), config.num_classes)
    num_rows, num_states, num_positions, dim = features.shape
    x = features.float().reshape(num_rows, num_states * num_positions, dim)  # (N, M, D), M cells
    mean, std = x.mean(0), x.std(0, unbiased=False)  # (M, D)
    if not config.standardize:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    # A constant feature (e.g. zero padding of a concatenated group) would divide by ~0; it stays 0 instead.
    std = torch.where(std > 1e-6 * std.amax(-1, keepdim=True).clamp(min=1e-12), std, torch.ones_like(std))
    x = ((x - mean) / std).to(config.device)
    y = space.encode(torch.as_tensor(labels)).to(config.device)  # (N,) in 0..C-1
    num_classes = len(space.values)
    per_batch = max(1, config.max_batch_elements // (num_rows * len(config.penalties) * num_classes))
    weights, biases, penalties = [], [], []
    for begin in range(0, x.shape[1], per_batch):
        part = x[:, begin:begin + per_batch]  # (N, m, D)
        penalty = _choose_penalty(part, y, config, num_classes)  # (m,)
        weight, bias = _fit_lbfgs(part, y, penalty[:, None], num_classes, config.max_iter)
        weights.append(weight[:, 0].cpu())
        biases.append(bias[:, 0].cpu())
        penalties.append(penalty.cpu())
    cells = (num_states, num_positions)
    return LinearProbes(
        weight=torch.cat(weights).reshape(*cells, dim, num_classes),
        bias=torch.cat(biases).reshape(*cells, num_classes),
        mean=mean.reshape(*cells, dim), std=std.reshape(*cells, dim), penalty=torch.cat(penalties).reshape(cells),
        labels=space,
    )


def run_probes(features: torch.Tensor, labels: torch.Tensor, config: ProbeConfig | None = None,
               layer_names: list[str] | None = None, position_names: list[str] | None = None) -> dict[str, ProbeGrid]:
    """Split rows (§3.7: first 95% train, last 5% held out), fit, and score both splits: ``{'train', 'held-out'}``."""
    config = config or ProbeConfig()
    labels = torch.as_tensor(labels).long()
    train, held_out = split_rows(len(features), config.eval_fraction)
    if config.num_classes is None:  # the smoothing support: every label value present in either split
        config = replace(config, num_classes=len(torch.unique(labels)))
    probes = fit_probes(features[train], labels[train], config)
    return {
        "train": probes.evaluate(features[train], labels[train], layer_names, position_names),
        "held-out": probes.evaluate(features[held_out], labels[held_out], layer_names, position_names),
    }
