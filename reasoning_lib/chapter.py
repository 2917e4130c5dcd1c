"""Conventions every chapter shares: where its outputs go and how it reports its headline numbers."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

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


def write_metrics(output_dir: str | os.PathLike, metrics: dict) -> Path:
    """Write ``output_dir/metrics.json`` (flat ``"method.metric"`` keys, as every chapter reports them)."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(_finite(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


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
