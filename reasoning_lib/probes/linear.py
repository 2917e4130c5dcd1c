"""Linear probes: one multinomial logistic regression per (hidden state, position) cell, fitted in batches
(the multi-hop probes of the ``EleutherAI/transformer-reasoning`` reference, ``train/train_probe.py``, HEAD version,
on the knowledge-capacity worlds of Allen-Zhu & Li 2024).

Protocol, as in the reference: zero init; full-batch L-BFGS with a strong-Wolfe line search, ``max_iter`` 1000,
torch's default ``history_size`` 100; objective = mean CE + λ‖W‖² (bias not penalised), λ chosen per cell by
3-fold cross-validation over {0} ∪ logspace(1e-8, 1e-4, 4 values) on the train rows, then refit on all train
rows; the first 95% of rows train and the last 5% are held out. Report CE in nats *and* top-1 accuracy (the
project adds accuracy).

Where this deliberately differs:
* cells and candidate penalties form batched problems, weights (cells, classes, penalties, D). Their objective is
  a sum of independent convex problems, so its minimiser is each cell's own minimiser;
* memory is bounded by ``memory_bytes`` whatever the number of rows and classes (``memory.py``): rows are
  streamed in batches and classes in chunks (``stream.py``), so no (N, C) logits are ever built;
* features are standardised per cell with the train rows' mean and std (the reference probes raw states), so
  λ is in standardised units. The CV folds reuse the train-split statistics, a negligible leak;
* labels are mapped to the classes seen in training (the reference uses one class per vocabulary entry). A
  held-out label never seen in training counts as wrong and is scored with the add-one-smoothed probability
  of an unseen class, 1/(n + num_classes), exactly what the marginal baseline gives it (``grid.py``);
* the baselines come from the train labels only and use log-probabilities (the reference passes
  probabilities as logits).

The reference's penalties are tiny: with a few thousand probe rows and wide states a probe can overfit, so small
runs may want a wider grid (e.g. ``penalties=(0, 1e-4, 1e-3, 1e-2, 1e-1)``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..config import check_positive, check_range
from .grid import LabelSpace, ProbeGrid, hidden_state_names
from .memory import DEFAULT_MEMORY_BYTES, ProbeLayout, choose_layout, stats_batch
from .stream import RowSource, objective, summed_scores

SPEC_PENALTIES = (0.0, *torch.logspace(-8, -4, 4, dtype=torch.float64).tolist())


@dataclass
class ProbeConfig:
    """How probes are fitted; defaults follow the reference (L-BFGS, 3-fold CV over five penalties)."""

    penalties: tuple[float, ...] = SPEC_PENALTIES  # L2 candidates; one value skips cross-validation
    cv_folds: int = 3
    max_iter: int = 1000  # L-BFGS iterations per fit
    history_size: int = 100  # L-BFGS memory (torch's default); each pair costs two copies of a cut's parameters
    eval_fraction: float = 0.05  # the last rows are held out
    standardize: bool = True
    num_classes: int | None = None  # label-space size for smoothing; None: distinct labels in the data
    # Cap on the fit's and the scoring's working memory on ``device`` (parameters, L-BFGS state, row batches,
    # logit chunks; memory.py): whatever the rows and classes, the cut is chosen to stay under it.
    memory_bytes: float = DEFAULT_MEMORY_BYTES
    cells_per_fit: int | None = None  # cells fitted together; None: as many as fit half of memory_bytes
    row_batch: int | None = None  # rows per batch; None: as many as fit
    class_chunk: int | None = None  # classes per logit chunk; None: all, unless the batches would get too small
    seed: int = 0  # cross-validation folds
    device: str = "cpu"

    def __post_init__(self):
        self.penalties = tuple(float(p) for p in self.penalties)
        if not self.penalties or min(self.penalties) < 0:
            raise ValueError(f"penalties={self.penalties} must be a non-empty list of values >= 0")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds={self.cv_folds} must be >= 2")
        for name in ("max_iter", "history_size", "memory_bytes"):
            check_positive(name, getattr(self, name))
        for name in ("cells_per_fit", "row_batch", "class_chunk"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_range("eval_fraction", self.eval_fraction, 1e-9, 1 - 1e-9)

    def layout(self, num_rows: int, num_cells: int, dim: int, num_classes: int, num_penalties: int = 1,
               fitting: bool = True) -> ProbeLayout:
        """The cut of a fit (or, with ``fitting=False``, of scoring) under ``memory_bytes`` (memory.py)."""
        history = min(self.history_size, self.max_iter) if fitting else None  # one pair per iteration at most
        return choose_layout(num_rows, num_cells, dim, num_classes, num_penalties, self.memory_bytes, history,
                             self.cells_per_fit, self.row_batch, self.class_chunk)


def split_rows(num_rows: int, eval_fraction: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, held-out): the first ``1 - eval_fraction`` of the rows train, the rest evaluate."""
    num_train = int((1 - eval_fraction) * num_rows)
    if not 0 < num_train < num_rows:
        raise ValueError(f"eval_fraction={eval_fraction} leaves {num_train} of {num_rows} rows for training; "
                         "both splits must be non-empty")
    return torch.arange(num_train), torch.arange(num_train, num_rows)


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(N, S, P, D) -> (N, S*P, D), a view of contiguous features (never a float32 copy of them all)."""
    if features.ndim != 4:
        raise ValueError(f"features must be (N, S, P, D), got shape {tuple(features.shape)}")
    return features.reshape(features.shape[0], -1, features.shape[3])


def _groups(num_cells: int, size: int) -> list[torch.Tensor]:
    return list(torch.arange(num_cells).split(size))


def feature_stats(flat: torch.Tensor, config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell mean and std (M, D) of ``flat`` (N, M, D), in float64 over row batches; (0, 1) without
    ``standardize``. A constant feature (e.g. zero padding of a concatenated group) keeps std 1, not ~0."""
    num_rows, num_cells, dim = flat.shape
    if not config.standardize:
        return torch.zeros(num_cells, dim), torch.ones(num_cells, dim)
    batch = stats_batch(num_rows, num_cells, dim, config.memory_bytes)
    total = torch.zeros(num_cells, dim, dtype=torch.float64, device=flat.device)
    for begin in range(0, num_rows, batch):
        total += flat[begin:begin + batch].double().sum(0)
    mean = total / num_rows
    squares = torch.zeros_like(total)
    for begin in range(0, num_rows, batch):  # two passes: no cancellation in E[x^2] - E[x]^2
        squares += (flat[begin:begin + batch].double() - mean).square().sum(0)
    std = (squares / num_rows).sqrt()
    std = torch.where(std > 1e-6 * std.amax(-1, keepdim=True).clamp(min=1e-12), std, torch.ones_like(std))
    return mean.float().cpu(), std.float().cpu()


def _fit_lbfgs(source: RowSource, penalty: torch.Tensor, num_classes: int, chunk: int, config: ProbeConfig):
    """Zero-initialised probes for ``penalty`` (m, k) problems on ``source``: weight (m, C, k, D), bias (m, C, k)."""
    (m, k), device = penalty.shape, source.device
    weight = torch.zeros(m, num_classes, k, source.dim, device=device)
    bias = torch.zeros(m, num_classes, k, device=device)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)  # filled by the closed-form gradient
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=config.max_iter, history_size=config.history_size,
                                  line_search_fn="strong_wolfe")
    optimizer.step(lambda: objective(source, weight, bias, penalty, chunk))
    weight.grad = bias.grad = None
    return weight, bias


def _choose_penalty(flat, y, mean, std, num_classes: int, config: ProbeConfig) -> torch.Tensor:
    """Per-cell penalty (M,) with the lowest K-fold cross-validated CE."""
    num_rows, num_cells, dim = flat.shape
    candidates = torch.tensor(config.penalties)  # (K,)
    if len(candidates) == 1:
        return candidates.expand(num_cells).clone()
    generator = torch.Generator().manual_seed(config.seed)
    folds = torch.randperm(num_rows, generator=generator).chunk(config.cv_folds)
    rests = [torch.cat([f for j, f in enumerate(folds) if j != k]) for k in range(len(folds))]
    layout = config.layout(max(map(len, rests)), num_cells, dim, num_classes, len(candidates))
    total = torch.zeros(num_cells, len(candidates), dtype=torch.float64)  # (M, K) summed held-out CE
    for cells in _groups(num_cells, layout.cells):
        for first in range(0, len(candidates), layout.penalties):
            chosen = candidates[first:first + layout.penalties]
            penalty = chosen.to(config.device).expand(len(cells), -1).contiguous()  # (m, k)
            for fold, rest in zip(folds, rests):
                train = RowSource(flat, y, rest, cells, mean, std, layout, config.device)
                weight, bias = _fit_lbfgs(train, penalty, num_classes, layout.class_chunk, config)
                del train  # its resident rows before the fold's
                held = RowSource(flat, y, fold, cells, mean, std, layout, config.device)
                nats, _ = summed_scores(held, weight, bias, layout.class_chunk)
                total[cells, first:first + len(chosen)] += nats.cpu()
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
        """Log-probabilities (N, S, P, C) of the train classes for ``features`` (N, S, P, D); this builds the
        whole (N, C) table per cell, so it is for small inputs: :meth:`evaluate` streams."""
        _check_features(features, self.weight.shape[:3], "weight")
        x = (features.float() - self.mean) / self.std  # (N, S, P, D)
        return (torch.einsum("nspd,spdc->nspc", x, self.weight) + self.bias).log_softmax(-1)

    def evaluate(self, features: torch.Tensor, labels: torch.Tensor, layer_names: list[str] | None = None,
                 position_names: list[str] | None = None, memory_bytes: float = DEFAULT_MEMORY_BYTES,
                 device: str = "cpu", row_batch: int | None = None, class_chunk: int | None = None) -> ProbeGrid:
        """Accuracy and mean CE (nats) per cell on (``features`` (N, S, P, D), ``labels`` (N,)), with baselines;
        rows and classes are streamed on ``device`` within ``memory_bytes``."""
        _check_features(features, self.weight.shape[:3], "weight")
        if len(labels) != len(features):
            raise ValueError(f"features have {len(features)} rows but labels {len(labels)}")
        labels = torch.as_tensor(labels)
        self.labels.check_room(labels)
        ids = self.labels.encode(labels)  # (N,), -1 = unseen in training: wrong, smoothed unseen probability
        flat = _flat(features)
        (num_rows, num_cells, dim), num_classes = flat.shape, self.weight.shape[-1]
        settings = ProbeConfig(memory_bytes=memory_bytes, row_batch=row_batch, class_chunk=class_chunk)
        layout = settings.layout(num_rows, num_cells, dim, num_classes, fitting=False)
        weight = self.weight.reshape(num_cells, dim, num_classes)
        bias = self.bias.reshape(num_cells, num_classes)
        mean, std = self.mean.reshape(num_cells, dim), self.std.reshape(num_cells, dim)
        nats, correct = torch.zeros(num_cells, dtype=torch.float64), torch.zeros(num_cells, dtype=torch.float64)
        for cells in _groups(num_cells, layout.cells):
            w = weight[cells].transpose(1, 2).unsqueeze(2).to(device).contiguous()  # (m, C, 1, D)
            b = bias[cells].unsqueeze(2).to(device).contiguous()  # (m, C, 1)
            rows = RowSource(flat, ids, None, cells, mean, std, layout, device)
            cell_nats, cell_correct = summed_scores(rows, w, b, layout.class_chunk, -self.labels.unseen_log_prob())
            nats[cells], correct[cells] = cell_nats[:, 0].cpu(), cell_correct[:, 0].cpu()
        base_accuracy, base_ce = self.labels.baselines(labels)
        num_states, num_positions = self.penalty.shape
        return ProbeGrid(
            accuracy=(correct / num_rows).reshape(num_states, num_positions),
            cross_entropy=(nats / num_rows).reshape(num_states, num_positions), baseline_accuracy=base_accuracy,
            baseline_cross_entropy=base_ce, layer_names=layer_names or hidden_state_names(num_states),
            position_names=position_names or [str(p) for p in range(num_positions)], num_examples=num_rows,
            num_classes=self.labels.num_classes, penalty=self.penalty.double().clone(),
        )


def _check_features(features: torch.Tensor, cells: tuple, what: str) -> None:
    if features.ndim != 4 or tuple(features.shape[1:]) != tuple(cells):
        expected = ", ".join(map(str, cells))
        raise ValueError(f"features have shape {tuple(features.shape)} but the probes' {what} expects (N, {expected})")


def fit_probes(features: torch.Tensor, labels: torch.Tensor, config: ProbeConfig | None = None) -> LinearProbes:
    """Fit one probe per cell on train ``features`` (N, S, P, D) and integer ``labels`` (N,) of any range.

    ``features`` stay where they are (host memory, any float dtype, a memory-mapped tensor works); rows are
    streamed to ``config.device`` in batches, so the fit's memory is bounded by ``config.memory_bytes``."""
    config = config or ProbeConfig()
    flat = _flat(features)
    labels = torch.as_tensor(labels)
    if len(labels) != len(features):
        raise ValueError(f"features have {len(features)} rows but labels {len(labels)}")
    space = LabelSpace.fit(labels, config.num_classes)
    (num_rows, num_cells, dim), num_classes = flat.shape, len(space.values)
    y = space.encode(labels)  # (N,) in 0..C-1
    mean, std = feature_stats(flat, config)
    penalties = _choose_penalty(flat, y, mean, std, num_classes, config)  # (M,)
    layout = config.layout(num_rows, num_cells, dim, num_classes)
    weight, bias = torch.empty(num_cells, dim, num_classes), torch.empty(num_cells, num_classes)
    for cells in _groups(num_cells, layout.cells):
        rows = RowSource(flat, y, None, cells, mean, std, layout, config.device)
        penalty = penalties[cells, None].to(config.device, torch.float32)  # (m, 1)
        w, b = _fit_lbfgs(rows, penalty, num_classes, layout.class_chunk, config)
        weight[cells], bias[cells] = w[:, :, 0].transpose(1, 2).cpu(), b[:, :, 0].cpu()
        del rows, w, b
    cells = features.shape[1:3]
    return LinearProbes(weight=weight.reshape(*cells, dim, num_classes), bias=bias.reshape(*cells, num_classes),
                        mean=mean.reshape(*cells, dim), std=std.reshape(*cells, dim),
                        penalty=penalties.reshape(cells).float(), labels=space)


def run_probes(features: torch.Tensor, labels: torch.Tensor, config: ProbeConfig | None = None,
               layer_names: list[str] | None = None, position_names: list[str] | None = None) -> dict[str, ProbeGrid]:
    """Split rows (first 95% train, last 5% held out), fit, and score both splits: ``{'train', 'held-out'}``."""
    config = config or ProbeConfig()
    labels = torch.as_tensor(labels).long()
    train, held_out = split_rows(len(features), config.eval_fraction)
    if config.num_classes is None:  # the smoothing support: every label value present in either split
        config = replace(config, num_classes=len(torch.unique(labels)))
    cut = len(train)  # the splits are slices: views of the features, never copies
    probes = fit_probes(features[:cut], labels[:cut], config)
    scoring = dict(memory_bytes=config.memory_bytes, device=config.device, row_batch=config.row_batch,
                   class_chunk=config.class_chunk)
    return {
        "train": probes.evaluate(features[:cut], labels[:cut], layer_names, position_names, **scoring),
        "held-out": probes.evaluate(features[cut:], labels[cut:], layer_names, position_names, **scoring),
    }
