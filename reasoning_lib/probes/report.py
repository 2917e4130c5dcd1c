"""A probe grid in words, for a chapter's summary: its most accurate (hidden state, token group) cell, against
the majority-class baseline and an untrained model's probes, with 95% Wilson intervals over the rows scored
(``reasoning_lib.stats``)."""
from __future__ import annotations

import torch

from ..stats import format_accuracy, verdict
from .grid import ProbeGrid


def best_cell(grid: ProbeGrid) -> tuple[float, str]:
    """(accuracy, ``'layer, group token'``) of the grid's most accurate cell."""
    flat = int(torch.as_tensor(grid.accuracy).argmax())
    row, column = divmod(flat, len(grid.position_names))
    return float(grid.accuracy[row, column]), f"{grid.layer_names[row]}, {grid.position_names[column]} token"


def probe_line(name: str, grid: ProbeGrid, untrained_grid: ProbeGrid | None = None) -> str:
    """``'- name: best ..., at layer, group token; majority class ...; best vs majority class: apart.'``, and the
    untrained model's best with its verdict when ``untrained_grid`` is given (the same rows scored)."""
    n_rows = grid.num_examples
    if n_rows <= 0:
        raise ValueError(f"the {name!r} grid has num_examples={n_rows}: it needs the rows it was scored on")
    top, where = best_cell(grid)
    line = (f"- {name}: best {format_accuracy(top, n_rows)}, at {where}; majority class "
            f"{format_accuracy(grid.baseline_accuracy, n_rows)}; best vs majority class: "
            f"{verdict(top, grid.baseline_accuracy, n_rows)}.")
    if untrained_grid is not None:
        untrained_top = best_cell(untrained_grid)[0]
        line += (f" The untrained model at best {format_accuracy(untrained_top, n_rows)}; trained vs untrained: "
                 f"{verdict(top, untrained_top, n_rows)}.")
    return line
