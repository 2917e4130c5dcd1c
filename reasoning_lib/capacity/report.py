"""Capacity of a checkpoint under every scheme the reference reports, its schedule, and the convergence rule.

``evaluation/measure_capacity.py`` of ``EleutherAI/transformer-reasoning`` turns the losses logged at each
checkpoint into capacity (Allen-Zhu & Li 2024, arXiv 2404.05405: bits a model's loss says it holds) under:

* 1-hop, ``optimal`` scheme, by subject (``--subjectwise``) and by the mean loss (its default path);
* 2-hop, ``2-hop-big-hash`` (every 2-hop answer memorised on its own), by subject and by the mean loss;
* 2-hop, ``2-hop-double`` (each relation fact stored twice; 2-hop losses turned into per-hop losses), by subject;
* "2.1-hop": each 2-hop figure plus the incremental capacity of the same checkpoint's 1-hop losses.

:func:`capacity_rows` computes all of them, for both entropy conventions (``support``: the generating
distribution, and the reference's observed values), one row each, naming hops, scheme, path, selection and
support. 2-hop losses come from the 2-hop training distribution, which never ends in the held-out second
attribute: as in the reference, only subjects with a loss count (:meth:`EntropyBudget.restricted`).

Schedule (:func:`capacity_eval_steps`): 10 log-spaced steps up to ``every`` (the reference: 100..1e5), then every
``every`` steps, and the last step. Convergence (:func:`window_convergence`): the least-squares slope of a loss
series over a **fixed** window of the last ``window`` steps; a run shorter than the window is not converged. The
reference applies a derivative window of 15 checkpoints (1.5M steps) with an absolute threshold; here the
threshold is relative (the fitted change over the window against the mean loss), so one rule serves per-token
training losses and per-answer evaluation losses.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..config import check_positive
from .entropy import (LAW_BITS_PER_PARAM, SUPPORTS, EntropyBudget, capacity_2_1_hop, capacity_from_losses,
                      capacity_from_mean_loss, entropy_budget, mean_subject_loss)
from .profiles import Profiles
from .splits import QuestionBatch, TwoHopSplit

# (hops, scheme, path) of every capacity the reference reports; 2.1 = 2-hop plus the incremental 1-hop capacity.
REPORTED = (
    (1, "optimal", "subjectwise"), (1, "optimal", "average"),
    (2, "2-hop-big-hash", "subjectwise"), (2, "2-hop-big-hash", "average"), (2, "2-hop-double", "subjectwise"),
    (2.1, "2-hop-big-hash", "subjectwise"), (2.1, "2-hop-big-hash", "average"), (2.1, "2-hop-double", "subjectwise"),
)
SCHEMES_REPORTED = tuple(dict.fromkeys(scheme for _, scheme, _ in REPORTED))


def capacity_budgets(profiles: Profiles, selection: str) -> dict[tuple[str, str], EntropyBudget]:
    """The entropy budget of every reported scheme under both conventions: ``{(scheme, support): budget}``."""
    return {(scheme, support): entropy_budget(profiles, scheme, selection, support)
            for scheme in SCHEMES_REPORTED for support in SUPPORTS}


def row_label(row: Mapping) -> str:
    """``1-hop optimal (subjectwise, generating)``: a row's name in tables and figures."""
    return f"{row['hops']:g}-hop {row['scheme']} ({row['path']}, {row['support']})"


def _capacity(budget: EntropyBudget, hops: float, path: str, one: Mapping[str, float],
              two: Mapping[str, float] | None) -> float:
    if hops == 2.1:
        return capacity_2_1_hop(budget, two, one, path=path).total_bits
    losses = one if hops == 1 else two
    if path == "average":
        return capacity_from_mean_loss(budget, mean_subject_loss(budget, losses), hops=int(hops)).total_bits
    return capacity_from_losses(budget, losses, hops=int(hops)).total_bits


def capacity_rows(budgets: Mapping[tuple[str, str], EntropyBudget], one_hop_losses: Mapping[str, float],
                  two_hop_losses: Mapping[str, float] | None = None, num_parameters: int | None = None) -> list[dict]:
    """One row per reported (hops, scheme, path) and support: capacity, the dataset's bits (the capacity at zero
    loss under the same rule) and, with ``num_parameters``, bits per parameter. 2-hop rows need ``two_hop_losses``
    (per-subject losses in bits on 2-hop training questions) and are left out without them."""
    rows = []
    for hops, scheme, path in REPORTED:
        if hops != 1 and not two_hop_losses:
            continue
        for support in SUPPORTS:
            budget = budgets[(scheme, support)]
            if hops != 1:
                budget = budget.restricted(two_hop_losses)
            zeros = {s: 0.0 for s in budget.subject_bits}
            capacity = _capacity(budget, hops, path, one_hop_losses, two_hop_losses)
            rows.append({"hops": hops, "scheme": scheme, "path": path, "selection": budget.selection,
                         "support": support, "capacity_bits": capacity,
                         "dataset_bits": _capacity(budget, hops, path, zeros, zeros),
                         "bits_per_param": capacity / num_parameters if num_parameters else math.nan})
    return rows


def find_row(rows: Sequence[Mapping], hops: float, scheme: str, path: str, support: str) -> Mapping:
    """The row of ``rows`` with these names; ``KeyError`` listing what there is otherwise."""
    for row in rows:
        if (row["hops"], row["scheme"], row["path"], row["support"]) == (hops, scheme, path, support):
            return row
    raise KeyError(f"no capacity row ({hops}, {scheme}, {path}, {support}); rows: {[row_label(r) for r in rows]}")


def capacity_bound(required_bits: float, num_parameters: int) -> bool:
    """Whether a dataset of ``required_bits`` exceeds what ``num_parameters`` hold at 2 bits per parameter."""
    return required_bits > LAW_BITS_PER_PARAM * num_parameters


# ---------------------------------------------------------------------- when to evaluate
def capacity_eval_steps(max_steps: int, every: int | None, log_points: int = 10, first: int = 100) -> list[int]:
    """Steps at which to evaluate capacity: ``log_points`` log-spaced steps from ``min(first, every)`` to
    ``every``, then every multiple of ``every``, and ``max_steps``; only ``max_steps`` when ``every`` is None."""
    check_positive("max_steps", max_steps)
    if every is None:
        return [max_steps]
    check_positive("every", every)
    start = min(first, every)
    early = np.unique(np.round(np.geomspace(start, every, log_points)).astype(np.int64)).tolist()
    steps = set(early) | set(range(every, max_steps + 1, every)) | {max_steps}
    return sorted(s for s in steps if 0 < s <= max_steps)


# ---------------------------------------------------------------------- 2-hop questions per subject
def two_hop_subject_questions(split: TwoHopSplit, per_subject: int, rng: np.random.Generator,
                              max_rounds: int = 100) -> QuestionBatch:
    """``per_subject`` 2-hop training-distribution questions for each final subject that 2-hop training asks
    (the held-out second attributes have none), drawn uniformly; subject by subject."""
    check_positive("per_subject", per_subject)
    num_subjects = split.shape[2]
    wanted = ~split.second_attributes
    need = np.where(wanted, per_subject, 0)
    parts = []
    for _ in range(max_rounds):
        if not need.any():
            break
        draw = split.sample("train", int(2 * need.sum() * num_subjects / max(1, wanted.sum())) + 64, rng)
        for s in np.flatnonzero(need):
            chosen = np.flatnonzero(draw.subject == s)[:need[s]]
            parts.append(draw[chosen])
            need[s] -= len(chosen)
    if need.any():
        raise ValueError(f"could not draw {per_subject} 2-hop training questions for subjects "
                         f"{np.flatnonzero(need).tolist()} in {max_rounds} rounds")
    batch = QuestionBatch.concat(parts)
    return batch[np.lexsort((batch.person, batch.subject))]


# ---------------------------------------------------------------------- convergence
def window_convergence(rows: Sequence[Mapping], window: int, tolerance: float, stable_steps: int | None = None,
                       key: str = "loss") -> dict:
    """The loss slope over the last ``window`` steps of ``rows`` (``{"step", key}``, up to ``stable_steps``).

    Returns ``slope`` (per step), ``change`` (|slope| x window), ``mean`` (of the loss in the window), ``points``,
    ``covered`` (the series spans at least one window and has >= 3 points in it) and ``converged`` (covered and
    change <= tolerance x mean). A run shorter than ``window`` steps is never converged."""
    check_positive("window", window)
    kept = [r for r in rows if (stable_steps is None or r["step"] <= stable_steps)
            and r.get(key) is not None and math.isfinite(r[key])]
    out = {"window": window, "tolerance": tolerance, "slope": math.nan, "change": math.nan, "mean": math.nan,
           "points": 0, "covered": False, "converged": False}
    if not kept:
        return out
    end = kept[-1]["step"]
    inside = [r for r in kept if r["step"] >= end - window]
    out["points"] = len(inside)
    if end < window or len(inside) < 3:
        return out
    steps = np.array([r["step"] for r in inside], dtype=float)
    losses = np.array([r[key] for r in inside], dtype=float)
    slope = float(np.polyfit(steps, losses, 1)[0])
    out.update(slope=slope, change=abs(slope) * window, mean=float(losses.mean()), covered=True)
    out["converged"] = bool(out["change"] <= tolerance * out["mean"])
    return out


def is_converged(history: Sequence[Mapping], window: int, tolerance: float, stable_steps: int | None = None,
                 key: str = "loss") -> bool:
    """True when the loss moved by at most ``tolerance`` of itself over the last ``window`` steps (before
    ``stable_steps``); False for a run shorter than the window (:func:`window_convergence`)."""
    return window_convergence(history, window, tolerance, stable_steps, key)["converged"]


def loss_slope(history: Sequence[Mapping], window: int, stable_steps: int | None = None, key: str = "loss") -> float:
    """d(loss)/d(step) fitted over the last ``window`` steps; NaN when the run is shorter than the window."""
    return window_convergence(history, window, 0.0, stable_steps, key)["slope"]


__all__ = ["REPORTED", "SCHEMES_REPORTED", "capacity_bound", "capacity_budgets", "capacity_eval_steps",
           "capacity_rows", "find_row", "is_converged", "loss_slope", "row_label", "two_hop_subject_questions",
           "window_convergence"]
