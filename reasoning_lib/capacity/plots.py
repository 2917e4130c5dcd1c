"""Figures and tables of the capacity chapters (spec §3.5 plots; §2.5 eval modes).

Capacity against real parameter count on log-log axes with the 2 bits/parameter law and the dataset-entropy
ceiling (the most any model can be credited with), per-subject capacity per model size, and answer loss per
eval split (1-hop vs 2-hop). Inputs are the per-size ``metrics.json`` dicts of :mod:`.training`. Importing
``reasoning_lib.viz`` registers the book's plotly renderer.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from .. import viz  # noqa: F401  (registers the book renderer)
from ..probes import ProbeGrid
from .splits import EVAL_MODES

LAW_BITS_PER_PARAM = 2.0  # Allen-Zhu & Li (2024): at most ≈2 bits of knowledge per parameter
SIZE_COLORS = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880")
HOP_COLORS = {1: "#636EFA", 2: "#EF553B"}


def _label(row: Mapping) -> str:
    return f"{row['size']} ({row['num_parameters'] / 1e3:,.0f}k params)"


def capacity_vs_params(rows: Sequence[Mapping], title: str = "Capacity vs parameters") -> go.Figure:
    """Capacity (bits) against real parameters, log-log, with y = 2·params and the dataset-entropy ceiling.

    A capacity below 1 bit (an undertrained model can score below the baseline) is drawn at 1; hover shows it."""
    rows = sorted(rows, key=lambda r: r["num_parameters"])
    params = [r["num_parameters"] for r in rows]
    fig = go.Figure(go.Scatter(
        x=params, y=[max(r["capacity_bits"], 1.0) for r in rows], mode="lines+markers+text", name="capacity (1-hop)",
        text=[r["size"] for r in rows], textposition="top left", marker={"size": 10, "color": SIZE_COLORS[0]},
        customdata=[[r["capacity_bits"], r["bits_per_param"]] for r in rows],
        hovertemplate=("%{text}: %{x:,} params<br>%{customdata[0]:,.0f} bits, "
                       "%{customdata[1]:.3f} bits/param<extra></extra>"),
    ))
    if any("two_hop_capacity_bits" in r for r in rows):
        fig.add_trace(go.Scatter(x=params, y=[max(r.get("two_hop_capacity_bits", math.nan), 1.0) for r in rows],
                                 mode="lines+markers", name="capacity (2-hop, big-hash)",
                                 marker={"size": 10, "color": HOP_COLORS[2]}))
    low, high = min(params) / 1.5, max(params) * 1.5
    fig.add_trace(go.Scatter(x=[low, high], y=[LAW_BITS_PER_PARAM * low, LAW_BITS_PER_PARAM * high], mode="lines",
                             name="2 bits / parameter", line={"dash": "dash", "color": "#7F7F7F"}))
    ceiling = rows[0]["dataset_entropy_bits"]
    fig.add_trace(go.Scatter(x=[low, high], y=[ceiling, ceiling], mode="lines",
                             name=f"dataset entropy ({ceiling:,.0f} bits)",
                             line={"dash": "dot", "color": "#00CC96"}))
    fig.update_layout(title=title, xaxis_title="parameters (real count, log scale)",
                      yaxis_title="capacity (bits, log scale)", height=440)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
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
    """Bars per eval split (§2.5), one group per model: ``per_model[label][mode] = {loss_bits, accuracy, hops}``.

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
    """One line per model size: parameters, steps, loss, accuracy, capacity, and bits per parameter counted over all
    parameters (the reference's count) and over those outside the two embedding tables."""
    frame = pd.DataFrame([{
        "size": r["size"], "parameters": r["num_parameters"], "steps": r["steps"],
        "exposures / fact": round(r["exposures_per_fact"]),
        "1-hop loss (bits/answer)": round(r["one_hop_loss_bits"], 2),
        "1-hop exact match (%)": round(100 * r["one_hop_accuracy"], 1), "capacity (bits)": round(r["capacity_bits"]),
        "bits / param": round(r["bits_per_param"], 3),
        "bits / non-embedding param": round(r["capacity_bits"] / r["num_parameters_non_embedding"], 3),
        "converged": r["converged"],
    } for r in sorted(rows, key=lambda r: r["num_parameters"])])
    return frame.set_index("size")


def entropy_table(entropies: Mapping[str, float]) -> pd.DataFrame:
    """Dataset entropy per scheme, with the parameters a 2 bits/parameter model would need to hold it."""
    return pd.DataFrame({
        "scheme": list(entropies), "dataset entropy (bits)": [round(v) for v in entropies.values()],
        "params needed at 2 bits/param": [round(v / LAW_BITS_PER_PARAM) for v in entropies.values()],
    }).set_index("scheme")


__all__ = ["LAW_BITS_PER_PARAM", "capacity_vs_params", "entropy_table", "probe_curve", "split_losses",
           "subject_capacity_bars", "sweep_table"]
