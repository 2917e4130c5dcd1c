"""The capstone's figure and table: accuracy against examples/s, one marker per (method, task)."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go

from ..stats import wilson_interval
from ..viz import METHOD_COLORS, label

SPEEDS = {"examples_per_s": "batch size 1", "examples_per_s_batched": "batched"}
SHORT = {"dot_sc": "DoT + SC", "dot_mp_sc": "DoT-MP + SC"}  # marker text; hover and table give the full name


def frontier_figure(rows: Iterable[Mapping], speed: str = "examples_per_s",
                    title: str = "Accuracy vs speed: every method on one task") -> go.Figure:
    """Scatter of accuracy (%) against ``speed`` (log x) with a dropdown over tasks; hover gives both speeds,
    parameters and training sequences."""
    if speed not in SPEEDS:
        raise ValueError(f"speed={speed!r}: expected one of {list(SPEEDS)}")
    rows = list(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = go.Figure()
    for row in rows:
        fig.add_trace(go.Scatter(
            x=[row[speed]], y=[100 * row["accuracy"]], mode="markers+text", name=label(row["method"]),
            text=[SHORT.get(row["method"], label(row["method"]))], textposition="top center",
            visible=row["task"] == tasks[0],
            marker={"size": 14, "color": METHOD_COLORS.get(row["method"]),
                    "symbol": "diamond" if row["method"].endswith("_sc") else "circle"},
            customdata=[[row["examples_per_s"], row["examples_per_s_batched"], row["parameters"], row["train_sequences"]]],
            hovertext=[label(row["method"])],
            hovertemplate=("%{hovertext}<br>%{y:.1f}% exact match<br>%{customdata[0]:.1f} examples/s at batch 1, "
                           "%{customdata[1]:.0f} batched<br>%{customdata[2]:,} parameters, "
                           "%{customdata[3]:,} training sequences<extra></extra>"),
        ))
    buttons = [{"label": task, "method": "update",
                "args": [{"visible": [r["task"] == task for r in rows]}, {"title.text": f"{title} ({task})"}]}
               for task in tasks]
    fig.update_layout(title=f"{title} ({tasks[0]})", height=480, showlegend=False,
                      xaxis_title=f"examples/s, {SPEEDS[speed]} (log scale)", yaxis_title="exact-match accuracy (%)",
                      updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.12, "yanchor": "top",
                                    "showactive": True}])
    speeds = [r[speed] for r in rows]
    fig.update_xaxes(type="log", range=[math.log10(min(speeds)) - 0.3, math.log10(max(speeds)) + 0.3])  # room for labels
    fig.update_yaxes(range=[-5, 110])
    return fig


def _interval(row: Mapping) -> str:
    """The accuracy's Wilson interval over the run's test problems, in percent ('' for a run without the count)."""
    n = row.get("num_test")
    if not n:
        return ""
    low, high = wilson_interval(round(row["accuracy"] * n), n)
    return f"{100 * low:.1f}-{100 * high:.1f}"


def frontier_table(rows: Iterable[Mapping]) -> pd.DataFrame:
    """One row per (task, method): accuracy (%), both speeds, parameters and training sequences."""
    frame = pd.DataFrame([{
        "task": r["task"], "method": label(r["method"]), "accuracy (%)": round(100 * r["accuracy"], 1),
        "95% interval (%)": _interval(r),
        "examples/s (batch 1)": round(r["examples_per_s"], 1), "examples/s (batched)": round(r["examples_per_s_batched"], 1),
        "parameters": r["parameters"], "training sequences": r["train_sequences"],
    } for r in rows])
    return frame.set_index(["task", "method"])
