"""Memory of the linear probes, bounded by construction: how a fit is cut, and what each cut costs.

A multinomial probe over C classes on N rows needs (N, C) logits when written plainly; at the scale of the
multi-hop probes (Allen-Zhu & Li 2024's 10k-person worlds probed as in the ``EleutherAI/transformer-reasoning``
reference, ``train/train_probe.py``: 95k train rows, ~20k answer classes) one such tensor is ~8 GB per cell and
penalty. The fit in ``linear.py`` never builds it. Each L-BFGS evaluation streams the rows in batches of
``row_batch`` and the classes in chunks of ``class_chunk``, combining the chunks with a running log-sum-exp, and
fits ``cells`` x ``penalties`` problems at once. :func:`choose_layout` picks the largest cut whose estimate
(:meth:`ProbeLayout.working_bytes`) stays under ``memory_bytes``; nothing it holds grows with N beyond that.

What stays on the fit's device, in float32 words (the constants are upper bounds, checked against the
allocator's own accounting in ``tests/test_probes.py``):

* per problem (one cell, one penalty), (D + 1) x C parameters times ``2 * history_size + LBFGS_VECTORS``:
  the parameters, their gradient and torch's L-BFGS state (its ``history_size`` pairs of steps and gradient
  changes, the flat gradients, the direction and the line search's copies);
* per (row, problem, class of a chunk), ``LOGIT_COPIES`` words: the chunk's logits, turned in place into
  ``exp(z - max)`` and then into the softmax that becomes the gradient, and the small temporaries around them;
* per (problem, class of a chunk), ``CHUNK_COPIES`` x D words: the gradient product before it is added;
* per (row, cell), D words ``ROW_COPIES`` times while streaming (the gathered rows, standardised, laid out per
  cell), or once for every row when the cut's features stay on the device (``resident``);
* while the feature mean and std are summed (once, before any fit), ``STATS_COPIES`` float64 copies of a batch;
* per (row, problem), ``ROW_VECTORS`` words (running log-sum-exp, picked logit, best class) and per row
  ``ROW_BYTES`` of labels and indices.
"""
from __future__ import annotations

from dataclasses import dataclass

FLOAT_BYTES = 4
# Measured with torch's allocator accounting on CPU (tests/test_probes.py), then rounded up: L-BFGS needs about
# 2 * history + 13 parameter-sized vectors (params, grad, flat grads, previous grad, direction, the new step and
# gradient change, the line search's start point and gradient copies); a chunk's logits are turned into its
# softmax in place, so about 1.1 chunk-sized copies are alive.
LBFGS_VECTORS = 16
SCORE_VECTORS = 2  # scoring: the weights of a cut, gathered then laid out
LOGIT_COPIES = 2
CHUNK_COPIES = 2
ROW_COPIES = 3
ROW_VECTORS = 12
ROW_BYTES = 48
STATS_COPIES = 3  # float64 copies of a batch while the feature mean and std are summed
MIN_ROWS = 256  # classes are chunked before a batch gets fewer rows than this
# A fifth of an 80 GB GPU: room for the probed model and the host copies; the small presets never come near it.
DEFAULT_MEMORY_BYTES = 16e9


class ProbeMemoryError(ValueError):
    """No cut of the probe fit stays under ``memory_bytes``; the message names the knobs."""


@dataclass(frozen=True)
class ProbeLayout:
    """One cut of a batched probe fit: problems fitted together, rows per batch, classes per chunk."""

    cells: int  # (hidden state, position) cells fitted together
    penalties: int  # L2 candidates fitted together per cell
    row_batch: int  # rows per batch of an evaluation
    class_chunk: int  # classes per chunk of the logits
    resident: bool  # the cut's standardised rows stay on the device between evaluations

    def problems(self) -> int:
        return self.cells * self.penalties

    def working_bytes(self, num_rows: int, dim: int, num_classes: int, state_vectors: int, grad: bool = True) -> int:
        """Peak bytes on the fit's device for ``num_rows`` rows of width ``dim`` over ``num_classes`` classes;
        ``state_vectors`` parameter-sized vectors per problem (:func:`state_vectors`)."""
        q, b, c = self.problems(), min(self.row_batch, num_rows), min(self.class_chunk, num_classes)
        words = q * (dim + 1) * num_classes * state_vectors
        words += LOGIT_COPIES * b * q * c + (CHUNK_COPIES if grad else 1) * q * c * dim + ROW_VECTORS * b * q
        # streamed: a batch gathered, standardised and laid out per cell; resident: every row once, plus the
        # batches it is built from
        words += self.cells * dim * (num_rows + (ROW_COPIES - 1) * b if self.resident else ROW_COPIES * b)
        return FLOAT_BYTES * words + ROW_BYTES * (num_rows if self.resident else b)


def state_vectors(history_size: int | None) -> int:
    """Parameter-sized vectors per problem: L-BFGS keeping ``history_size`` pairs (at most max_iter of them),
    or, for None, scoring (the weights alone)."""
    return SCORE_VECTORS if history_size is None else 2 * history_size + LBFGS_VECTORS


def stats_batch(num_rows: int, num_cells: int, dim: int, memory_bytes: float) -> int:
    """Rows per batch while the per-cell feature mean and std are summed: float64 copies within half the cap."""
    return max(1, min(num_rows, int(memory_bytes / 2 // (STATS_COPIES * 8 * num_cells * dim))))


def stats_bytes(num_rows: int, num_cells: int, dim: int, memory_bytes: float) -> int:
    """Peak bytes of summing the feature statistics (the batches and the (M, D) sums)."""
    return 8 * num_cells * dim * (STATS_COPIES * stats_batch(num_rows, num_cells, dim, memory_bytes) + 4)


def choose_layout(num_rows: int, num_cells: int, dim: int, num_classes: int, num_penalties: int, memory_bytes: float,
                  history_size: int | None = 100, cells: int | None = None, row_batch: int | None = None,
                  class_chunk: int | None = None) -> ProbeLayout:
    """The largest cut whose :meth:`ProbeLayout.working_bytes` stays under ``memory_bytes``: as many problems as
    fit in half the cap, the rows resident if they fit in half the rest, then whole classes and the most rows,
    chunking the classes only where a batch would get fewer than ``MIN_ROWS`` rows. ``cells``, ``row_batch``
    and ``class_chunk`` fix those parts; ``history_size`` None sizes an evaluation (weights only, no gradient)."""
    grad, vectors = history_size is not None, state_vectors(history_size)
    per_problem = FLOAT_BYTES * (dim + 1) * num_classes * vectors
    usable = min(cells or num_cells, num_cells)
    if per_problem * usable * num_penalties <= memory_bytes / 2 or cells:
        cut_cells, cut_penalties = usable, num_penalties
    else:  # fewer cells, then fewer penalties per cell
        cut_cells = max(1, min(usable, int(memory_bytes / 2 // (per_problem * num_penalties))))
        fitting = max(1, min(num_penalties, int(memory_bytes / 2 // per_problem)))
        cut_penalties = num_penalties if cut_cells > 1 else fitting
    fixed = ProbeLayout(cut_cells, cut_penalties, 1, 1, False).working_bytes(num_rows, dim, num_classes, vectors, grad)
    if fixed > memory_bytes:
        raise ProbeMemoryError(_too_small(fixed, memory_bytes, dim, num_classes, history_size, cut_cells))
    resident = _fits(ProbeLayout(cut_cells, cut_penalties, 1, 1, True), num_rows, dim, num_classes, vectors, grad,
                     fixed + (memory_bytes - fixed) / 2)
    chunk = min(class_chunk or num_classes, num_classes)
    while True:
        batch = row_batch or _most_rows(cut_cells, cut_penalties, chunk, resident, num_rows, dim, num_classes, vectors,
                                        grad, memory_bytes)
        if class_chunk or batch >= min(num_rows, MIN_ROWS) or chunk == 1:
            break
        chunk = (chunk + 1) // 2
    layout = ProbeLayout(cut_cells, cut_penalties, max(1, min(batch, num_rows)), chunk, resident)
    need = layout.working_bytes(num_rows, dim, num_classes, vectors, grad)
    if batch < 1 or need > memory_bytes:
        raise ProbeMemoryError(
            f"the probe cut {layout} needs {_size(need)}, more than memory_bytes={memory_bytes:g}; lower "
            f"row_batch or class_chunk (None chooses them), or raise memory_bytes")
    return layout


def _fits(layout: ProbeLayout, num_rows, dim, num_classes, vectors, grad, limit) -> bool:
    return layout.working_bytes(num_rows, dim, num_classes, vectors, grad) <= limit


def _most_rows(cells, penalties, chunk, resident, num_rows, dim, num_classes, vectors, grad, memory_bytes) -> int:
    """The largest row batch (<= num_rows) of this cut under ``memory_bytes``; 0 when even one row does not fit."""
    low, high = 0, num_rows
    while low < high:  # working_bytes grows with the batch: bisect
        mid = (low + high + 1) // 2
        if _fits(ProbeLayout(cells, penalties, mid, chunk, resident), num_rows, dim, num_classes, vectors, grad,
                 memory_bytes):
            low = mid
        else:
            high = mid - 1
    return low


def _too_small(fixed: float, memory_bytes: float, dim: int, num_classes: int, history_size, cells: int) -> str:
    what = (f"one probe over {num_classes} classes of {dim} features with history_size={history_size} (L-BFGS "
            f"state: {2 * history_size} parameter-sized vectors)" if history_size is not None else
            f"the weights of {cells} cell(s) over {num_classes} classes of {dim} features")
    return (f"{what} needs {_size(fixed)}, more than memory_bytes={memory_bytes:g}; raise memory_bytes"
            + (" or lower history_size" if history_size is not None else ""))


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes:.0f} B"


@dataclass(frozen=True)
class ProbeMemory:
    """Peak memory of a probe run: ``working`` on the fit's device (<= the cap), and what the host holds."""

    working: int  # the largest cut's bytes over cross-validation, the refit and scoring
    features: int  # the (N, S, P, D) float32 features the caller collected
    probes: int  # the fitted weights and biases of every cell, kept on the host
    cv: ProbeLayout
    refit: ProbeLayout
    score: ProbeLayout

    @property
    def host(self) -> int:
        return self.features + self.probes

    @property
    def total(self) -> int:
        """Everything at once, as on a CPU where the device is the host."""
        return self.working + self.host


def probe_memory(num_examples: int, hidden_size: int, num_classes: int, num_layers: int, batch_size: int | None = None,
                 num_positions: int = 1, num_penalties: int = 4, cv_folds: int = 3, eval_fraction: float = 0.05,
                 memory_bytes: float = DEFAULT_MEMORY_BYTES, history_size: int = 100, max_iter: int = 1000,
                 cells: int | None = None, class_chunk: int | None = None) -> ProbeMemory:
    """Peak memory estimate of probing ``num_examples`` rows (the last ``eval_fraction`` held out) of
    ``num_layers`` hidden states x ``num_positions`` positions of width ``hidden_size`` over ``num_classes``
    classes, ``batch_size`` rows per batch (None: as many as fit ``memory_bytes``): the cuts the fit itself uses
    for cross-validation over ``num_penalties`` candidates, the refit and the scoring (``ProbeConfig.layout``)."""
    num_cells, train = num_layers * num_positions, int((1 - eval_fraction) * num_examples)
    cv_rows = train - train // cv_folds if num_penalties > 1 else train
    history = min(history_size, max_iter)  # L-BFGS stores one pair per iteration, at most history_size
    common = dict(memory_bytes=memory_bytes, cells=cells, row_batch=batch_size, class_chunk=class_chunk)
    cv = choose_layout(cv_rows, num_cells, hidden_size, num_classes, num_penalties, history_size=history, **common)
    refit = choose_layout(train, num_cells, hidden_size, num_classes, 1, history_size=history, **common)
    score = choose_layout(train, num_cells, hidden_size, num_classes, 1, history_size=None, **common)
    working = max(cv.working_bytes(cv_rows, hidden_size, num_classes, state_vectors(history)),
                  refit.working_bytes(train, hidden_size, num_classes, state_vectors(history)),
                  score.working_bytes(train, hidden_size, num_classes, state_vectors(None), grad=False),
                  stats_bytes(train, num_cells, hidden_size, memory_bytes))
    return ProbeMemory(working=working, features=FLOAT_BYTES * num_examples * num_cells * hidden_size,
                       probes=FLOAT_BYTES * num_cells * (hidden_size + 1) * num_classes, cv=cv, refit=refit,
                       score=score)


__all__ = ["DEFAULT_MEMORY_BYTES", "ProbeLayout", "ProbeMemory", "ProbeMemoryError", "choose_layout", "probe_memory",
           "state_vectors", "stats_batch", "stats_bytes"]
