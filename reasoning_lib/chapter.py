"""Conventions every chapter shares: where its outputs go and how it reports its headline numbers."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .stats import fraction_interval

BOOK_MARKER = "_toc.yml"


def book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The folder holding ``_toc.yml`` at or above ``start`` (default: the working directory), if any."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / BOOK_MARKER).is_file():
            return folder
    return None


def resolve_output_dir(output_dir: str | os.PathLike) -> Path:
    """Absolute output folder; a relative one is taken from the book's root when run inside the book.

    So a chapter executed by the book build (cwd ``notebooks/``) and by papermill from the repository root
    write to the same place, where later chapters find it."""
    path = Path(output_dir)
    if not path.is_absolute():
        path = (book_root() or Path.cwd()) / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_metrics(output_dir: str | os.PathLike, metrics: dict, num_test: int | dict[str, int] | None = None) -> Path:
    """Write ``output_dir/metrics.json`` (flat ``"method.metric"`` keys, as every chapter reports them).

    With ``num_test`` (the test problems every accuracy is scored on, or ``{key prefix: count}`` when they differ,
    e.g. ``{"4x4.": 500}``), each ``*.accuracy`` gets ``*.accuracy_interval``, its 95% Wilson interval, and
    ``*.accuracy_n``, unless the chapter states them itself."""
    if num_test is not None:
        metrics = with_intervals(metrics, num_test)
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(_finite(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def with_intervals(metrics: dict, num_test: int | dict[str, int]) -> dict:
    """``metrics`` with a 95% Wilson interval and the count beside every fraction key ending in ``.accuracy``."""
    out = dict(metrics)
    for key, value in metrics.items():
        if not key.endswith(".accuracy") or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        n = num_test if isinstance(num_test, int) else next(
            (count for prefix, count in num_test.items() if key.startswith(prefix)), None)
        if n is None:
            raise ValueError(f"write_metrics: no test count for {key!r} in num_test={num_test}: give one for its prefix")
        if not math.isfinite(value):
            continue
        out.setdefault(f"{key}_interval", fraction_interval(value, n))
        out.setdefault(f"{key}_n", n)
    return out


def _finite(value):
    """NaN/inf (e.g. a rate over zero cases) become null: metrics.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def read_metrics(output_dir: str | os.PathLike) -> dict:
    """Read a chapter's ``metrics.json``."""
    path = Path(output_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.json in {output_dir}: has that chapter been run?")
    return json.loads(path.read_text())
