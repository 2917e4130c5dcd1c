"""Layer x position heat-map of probe accuracy: one cell per (hidden state, token position).

Every (target, split) grid is drawn once as its own trace and a dropdown toggles which one is visible, so the
figure works in a static HTML page without a kernel. Importing ``reasoning_lib.viz`` registers the book's
plotly renderer, without which the figure would not show in the built book.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from .. import viz  # noqa: F401  (registers the book renderer)
from .grid import ProbeGrid

HOVER = ("%{y}, position %{x}<br>accuracy %{z:.3f} (majority class %{customdata[1]:.3f})"
         "<br>CE %{customdata[0]:.3f} nats (train marginal %{customdata[2]:.3f})<extra></extra>")


def _subtitle(target: str, split: str, grid: ProbeGrid) -> str:
    text = (f"{target}, {split}: majority {grid.baseline_accuracy:.3f}, "
            f"marginal CE {grid.baseline_cross_entropy:.3f} nats")
    if grid.model_cross_entropy is not None:
        text += f", model CE {grid.model_cross_entropy:.3f}"
    return text


def _trace(grid: ProbeGrid, name: str, visible: bool) -> go.Heatmap:
    ce = np.asarray(grid.cross_entropy.tolist(), dtype=float)  # (L+1, P)
    custom = np.stack([ce, np.full_like(ce, grid.baseline_accuracy), np.full_like(ce, grid.baseline_cross_entropy)], -1)
    return go.Heatmap(
        z=grid.accuracy.tolist(), x=list(grid.position_names), y=list(grid.layer_names), customdata=custom,
        zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": {"text": "accuracy"}}, texttemplate="%{z:.2f}",
        hovertemplate=HOVER, name=name, visible=visible,
    )


def probe_heatmap(grids: Mapping[str, Mapping[str, ProbeGrid]], title: str = "Linear probe accuracy") -> go.Figure:
    """Accuracy over hidden state x position, one trace per ``grids[target][split]`` and a dropdown between them."""
    combos = [(target, split, grid) for target, per_split in grids.items() for split, grid in per_split.items()]
    if not combos:
        raise ValueError("grids is empty: give at least one {target: {split: ProbeGrid}}")
    fig = go.Figure([_trace(grid, f"{target} · {split}", i == 0) for i, (target, split, grid) in enumerate(combos)])
    buttons = [
        {"label": f"{target} · {split}", "method": "update",
         "args": [{"visible": [j == i for j in range(len(combos))]},
                  {"title.text": f"{title}<br><sup>{_subtitle(target, split, grid)}</sup>"}]}
        for i, (target, split, grid) in enumerate(combos)
    ]
    first_target, first_split, first_grid = combos[0]
    fig.update_layout(
        title={"text": f"{title}<br><sup>{_subtitle(first_target, first_split, first_grid)}</sup>"},
        updatemenus=[{"buttons": buttons, "direction": "down", "active": 0, "showactive": True,
                      "x": 1.0, "xanchor": "right", "y": 1.18, "yanchor": "top"}],
        xaxis_title="token position / group", yaxis_title="hidden state", height=460, margin={"t": 110},
    )
    return fig
