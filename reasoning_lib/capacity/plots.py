"""Figures and tables of the capacity chapters (the plots of the reference's ``evaluation/plot_capacity.py``; the
eval splits of its ``train/dataset.py``).

Capacity against real parameter count on log-log axes with the 2 bits/parameter law and the dataset-entropy
ceiling (the most any model can be credited with), one line per world (N, R) of a sweep; per-subject capacity
per model size; answer loss per eval split (1-hop vs 2-hop); capacity over training steps under each reported
scheme (1-hop, 2-hop, 2.1-hop). Inputs are the per-size ``metrics.json`` dicts of :mod:`.training`. Importing
``reasoning_lib.viz`` registers the book's plotly renderer.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import viz  # noqa: F401  (registers the book renderer)
from ..probes import ProbeGrid
from .entropy import LAW_BITS_PER_PARAM, SUPPORTS
from .report import row_label
from .splits import EVAL_MODES
SIZE_COLORS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880")
HOP_COLORS = {1: "#636EFA", 2: "#EF553B"}


def _label(row: Mapping) -> str:
    return f"{row['size']} ({row['num_parameters'] / 1e3:,.0f}k params)"


def _world(row: Mapping) -> str:
    return row.get("world") or f"N{row['num_people']}-r{row['num_relations']}"


def _capacity(row: Mapping, support: str | None) -> float:
    """A row's 1-hop capacity under ``support`` (None: the run's own convention)."""
    if support is None:
        return row["capacity_bits"]
    return row["capacity_bits_by_support"][support]


def capacity_vs_params(rows: Sequence[Mapping], title: str = "Capacity vs parameters",
                       support: str | None = None) -> go.Figure:
    """Capacity (bits) against real parameters, log-log, one line per world (N, R), with y = 2·params and each
    world's dataset-entropy ceiling (dotted, in the world's colour); ``support`` picks the entropy convention.

    A capacity below 1 bit (an undertrained model can score below the baseline) is drawn at 1; hover shows it."""
    rows = sorted(rows, key=lambda r: r["num_parameters"])
    worlds = list(dict.fromkeys(_world(r) for r in sorted(rows, key=lambda r: (r["num_relations"], r["num_people"]))))
    params = [r["num_parameters"] for r in rows]
    low, high = min(params) / 1.5, max(params) * 1.5
    fig = go.Figure()
    for i, world in enumerate(worlds):
        mine = [r for r in rows if _world(r) == world]
        color = SIZE_COLORS[i % len(SIZE_COLORS)]
        name = "capacity (1-hop)" if len(worlds) == 1 else f"{world} (1-hop)"
        values = [_capacity(r, support) for r in mine]
        fig.add_trace(go.Scatter(
            x=[r["num_parameters"] for r in mine], y=[max(v, 1.0) for v in values], mode="lines+markers+text",
            name=name, text=[r["size"] for r in mine] if len(worlds) == 1 else None, textposition="top left",
            marker={"size": 10, "color": color}, customdata=[[v, v / r["num_parameters"], r["size"]] for v, r in
                                                              zip(values, mine)],
            hovertemplate=(f"{world} " + "%{customdata[2]}: %{x:,} params<br>%{customdata[0]:,.0f} bits, "
                           "%{customdata[1]:.3f} bits/param<extra></extra>"),
        ))
        if any("two_hop_capacity_bits" in r for r in mine):
            fig.add_trace(go.Scatter(x=[r["num_parameters"] for r in mine],
                                     y=[max(r.get("two_hop_capacity_bits", math.nan), 1.0) for r in mine],
                                     mode="lines+markers", name=f"{world} (2-hop, big-hash)",
                                     marker={"size": 10, "color": HOP_COLORS[2] if len(worlds) == 1 else color,
                                             "symbol": "diamond"}))
        ceiling = mine[0]["dataset_entropy_bits"] if support is None else mine[0]["dataset_entropy_bits_by_support"][support]
        fig.add_trace(go.Scatter(x=[low, high], y=[ceiling, ceiling], mode="lines",
                                 name=f"{'dataset' if len(worlds) == 1 else world} entropy ({ceiling:,.0f} bits)",
                                 line={"dash": "dot", "color": "#00CC96" if len(worlds) == 1 else color}))
    fig.add_trace(go.Scatter(x=[low, high], y=[LAW_BITS_PER_PARAM * low, LAW_BITS_PER_PARAM * high], mode="lines",
                             name="2 bits / parameter", line={"dash": "dash", "color": "#7F7F7F"}))
    convention = "" if support is None else f", {support} support"
    fig.update_layout(title=title, xaxis_title="parameters (real count, log scale)",
                      yaxis_title=f"capacity (bits, log scale{convention})", height=440 if len(worlds) == 1 else 520)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def capacity_over_steps(metrics: Mapping, support: str | None = None,
                        title: str = "Capacity during training, per scheme") -> go.Figure:
    """Capacity (bits) at each evaluated checkpoint of one run, one line per reported (hops, scheme, path), under
    ``support`` (default: the run's); log-scale steps, the 2 bits/parameter level dashed."""
    support = support or metrics["support"]
    checkpoints = metrics["checkpoints"] or [{"step": metrics["steps"], "capacities": metrics["capacities"]}]
    fig = go.Figure()
    labels = [row_label(r) for r in checkpoints[-1]["capacities"] if r["support"] == support]
    for i, label in enumerate(labels):
        points = [(c["step"], r["capacity_bits"]) for c in checkpoints for r in c["capacities"] if row_label(r) == label]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=label.replace(f", {support})", ")"),
                                 line={"color": SIZE_COLORS[i % len(SIZE_COLORS)],
                                       "dash": "solid" if label.startswith("1-hop") else
                                       ("dot" if label.startswith("2.1") else "dash")}))
    steps = [c["step"] for c in checkpoints]
    law = LAW_BITS_PER_PARAM * metrics["num_parameters"]
    fig.add_trace(go.Scatter(x=[min(steps), max(steps)], y=[law, law], mode="lines", name="2 bits / parameter",
                             line={"dash": "dash", "color": "#7F7F7F"}))
    fig.update_layout(title=title, xaxis_title="training step (log scale)",
                      yaxis_title=f"capacity (bits, {support} support)", height=440)
    fig.update_xaxes(type="log")
    return fig


def subject_capacity_bars(rows: Sequence[Mapping], title: str = "Where the bits go: capacity per subject") -> go.Figure:
    """Grouped bars: capacity (bits) of each subject, one colour per model size, and each subject's maximum N·H_s."""
    rows = sorted(rows, key=lambda r: r["num_parameters"])
    subjects = list(rows[0]["subject_capacity_bits"])
    fig = go.Figure()
    for i, row in enumerate(rows):
        fig.add_trace(go.Bar(x=subjects, y=[row["subject_capacity_bits"][s] for s in subjects], name=_label(row),
                             marker_color=SIZE_COLORS[i % len(SIZE_COLORS)]))
    most = [rows[0]["num_people"] * rows[0]["subject_entropy_bits"][s] for s in subjects]
    fig.add_trace(go.Scatter(x=subjects, y=most, mode="markers", name="N · H_s (all of it learned)",
                             marker={"symbol": "line-ew-open", "size": 28, "color": "#1f2430", "line": {"width": 2}}))
    fig.update_layout(title=title, barmode="group", xaxis_title="subject", yaxis_title="capacity (bits)", height=420)
    return fig


def split_losses(per_model: Mapping[str, Mapping[str, Mapping]], title: str = "Answer loss per eval split",
                 metric: str = "loss_bits") -> go.Figure:
    """Bars per eval split, one group per model: ``per_model[label][mode] = {loss_bits, accuracy, hops}``.

    Splits follow the reference's order (1-hop first); 1-hop splits are drawn solid, 2-hop splits hatched."""
    fig = go.Figure()
    for i, (label, splits) in enumerate(per_model.items()):
        modes = sorted(splits, key=lambda m: EVAL_MODES.index(m) if m in EVAL_MODES else len(EVAL_MODES))
        fig.add_trace(go.Bar(
            x=[m.removeprefix("eval_").replace("_", " ") for m in modes], y=[splits[m][metric] for m in modes],
            name=label, marker={"color": SIZE_COLORS[i % len(SIZE_COLORS)],
                                "pattern": {"shape": ["" if splits[m]["hops"] == 1 else "/" for m in modes]}},
        ))
    unit = "bits per answer" if metric == "loss_bits" else "exact-match accuracy"
    fig.update_layout(title=title, barmode="group", xaxis_title="eval split (hatched: 2-hop)", yaxis_title=unit,
                      height=420)
    if metric == "accuracy":  # an all-zero split would otherwise autoscale to [-1, 1]
        fig.update_yaxes(range=[0, 1])
    return fig


def probe_curve(grids: Mapping[str, ProbeGrid], position: str,
                title: str = "Is the bridge entity linearly decodable, layer by layer?") -> go.Figure:
    """Probe accuracy at one token group across hidden states: one line per named grid, and the majority class."""
    fig = go.Figure()
    for i, (name, grid) in enumerate(grids.items()):
        column = list(grid.position_names).index(position)
        fig.add_trace(go.Scatter(x=list(grid.layer_names), y=[100 * a for a in grid.accuracy[:, column].tolist()],
                                 mode="lines+markers", name=name, line={"color": SIZE_COLORS[i % len(SIZE_COLORS)]}))
    first = next(iter(grids.values()))
    fig.add_trace(go.Scatter(x=list(first.layer_names), y=[100 * first.baseline_accuracy] * len(first.layer_names),
                             mode="lines", name="majority class", line={"dash": "dot", "color": "#7F7F7F"}))
    fig.update_layout(title=title, xaxis_title=f"hidden state (read at the {position} token)",
                      yaxis_title="probe accuracy (%)", height=400)
    fig.update_yaxes(range=[-3, 103])
    return fig


def sweep_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One line per run: world (with several), parameters, steps, 1-hop exposures per fact actually trained, loss,
    accuracy, capacity and bits per parameter under both entropy conventions (generating and observed support)
    and over the parameters outside the two embedding tables, the capacity-bound flag and convergence."""
    worlds = {_world(r) for r in rows}
    ordered = sorted(rows, key=lambda r: (r["num_relations"], r["num_people"], r["num_parameters"]))
    lines = []
    for r in ordered:
        line = {"run": r["size"] if len(worlds) == 1 else f"{_world(r)} {r['size']}"}
        if len(worlds) > 1:
            line.update({"N": r["num_people"], "R": r["num_relations"]})
        line.update({
            "parameters": r["num_parameters"], "steps": r["steps"],
            "exposures / fact": _round(r.get("exposures_per_fact"), 0),
            "1-hop loss (bits/answer)": round(r["one_hop_loss_bits"], 2),
            "1-hop exact match (%)": round(100 * r["one_hop_accuracy"], 1),
        })
        by_support = r.get("capacity_bits_by_support") or {r["support"]: r["capacity_bits"]}
        for support in SUPPORTS:
            if support in by_support:
                line[f"capacity (bits, {support})"] = round(by_support[support])
                line[f"bits / param ({support})"] = round(by_support[support] / r["num_parameters"], 3)
        line["bits / non-embedding param"] = round(r["capacity_bits"] / r["num_parameters_non_embedding"], 3)
        entropy = (r.get("dataset_entropy_bits_by_support") or {}).get(r["support"], r["dataset_entropy_bits"])
        line["capacity-bound (E₁ > 2 bits/param)"] = entropy > LAW_BITS_PER_PARAM * r["num_parameters"]
        line["converged"] = r["converged"]
        lines.append(line)
    return pd.DataFrame(lines).set_index("run")


def _round(value, digits: int):
    return None if value is None or not math.isfinite(value) else round(value, digits)


def capacity_table(metrics: Mapping) -> pd.DataFrame:
    """Every reported capacity of one run at its last step: hops, scheme, path and support as columns."""
    frame = pd.DataFrame(metrics["capacities"])
    frame["hops"] = frame["hops"].map(lambda h: f"{h:g}-hop")
    return frame.pivot_table(index=["hops", "scheme", "path"], columns="support", values="capacity_bits",
                             sort=False).round(0)


def entropy_table(entropies: Mapping[str, float]) -> pd.DataFrame:
    """Dataset entropy per scheme, with the parameters a 2 bits/parameter model would need to hold it."""
    return pd.DataFrame({
        "scheme": list(entropies), "dataset entropy (bits)": [round(v) for v in entropies.values()],
        "params needed at 2 bits/param": [round(v / LAW_BITS_PER_PARAM) for v in entropies.values()],
    }).set_index("scheme")


__all__ = ["LAW_BITS_PER_PARAM", "capacity_over_steps", "capacity_table", "capacity_vs_params", "entropy_table",
           "probe_curve", "split_losses", "subject_capacity_bars", "sweep_table"]
