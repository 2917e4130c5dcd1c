"""Experiment tracking: the rows ``train()`` writes to its JSONL log, also sent to TensorBoard and W&B.

``make_tracker`` builds one :class:`Tracker` from a list of backends; ranks other than 0 get a no-op one, so
a ``torchrun`` job logs each point once. A run resumed from the checkpoint of step ``resume_step`` hides
the TensorBoard points the crashed run logged after it (``purge_step``) and continues the same W&B run
(its id is kept in ``output_dir/wandb_id.txt``).
"""
from __future__ import annotations

import importlib
import json
import numbers
import os
import uuid
from pathlib import Path

from .config import check_choice

BACKENDS = ("tensorboard", "wandb", "none")


class Tracker:
    """Where scalar rows go: this base class forwards every call to ``children``; with none it is the
    no-op tracker of non-main ranks and of backend "none"."""

    def __init__(self, children: list[Tracker] | None = None):
        self.children = children or []

    def log(self, row: dict, step: int) -> None:
        """Log the scalar numbers of ``row`` at ``step``."""
        for child in self.children:
            child.log(row, step)

    def log_hparams(self, settings: dict) -> None:
        """Record the run's settings (a config dict)."""
        for child in self.children:
            child.log_hparams(settings)

    def close(self) -> None:
        """Flush and release files and connections."""
        for child in self.children:
            child.close()


def scalars(row: dict) -> dict[str, float]:
    """``row``'s numbers as ``{"train/key": value}`` (keys with a "/" kept); skips None, strings, bools, "step"."""
    return {key if "/" in key else f"train/{key}": float(value) for key, value in row.items()
            if key != "step" and isinstance(value, numbers.Real) and not isinstance(value, bool)}


class TensorBoardTracker(Tracker):
    """Event files in ``log_dir``; with ``resume_step`` the points logged after that step are purged."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError("TensorBoard tracking needs the tensorboard package: pip install tensorboard") from error
        # A resumed run logs step resume_step + 1 next; the crashed run's points from there on are stale.
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def log(self, row: dict, step: int) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=step)

    def log_hparams(self, settings: dict) -> None:
        # Text, not add_hparams: that one writes a separate sub-run per call.
        self.writer.add_text("config", "```\n" + json.dumps(settings, indent=2, default=str) + "\n```")

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """One W&B run per ``output_dir``: a resumed run continues it through the id saved in ``wandb_id.txt``."""

    def __init__(self, wandb, output_dir: Path, project: str | None, run_name: str | None, settings: dict | None):
        id_path = output_dir / "wandb_id.txt"
        if not id_path.is_file():
            id_path.write_text(uuid.uuid4().hex[:12])
        self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "reasoning-lib"), dir=str(output_dir),
                              name=run_name, config=settings or {}, resume="allow", id=id_path.read_text().strip())

    def log(self, row: dict, step: int) -> None:
        self.run.log(scalars(row), step=step)

    def log_hparams(self, settings: dict) -> None:
        self.run.config.update(settings, allow_val_change=True)

    def close(self) -> None:
        self.run.finish()


def make_tracker(output_dir: str | Path, backends: str | tuple = "tensorboard", run_name: str | None = None,
                 is_main: bool = True, resume_step: int | None = None, settings: dict | None = None,
                 project: str | None = None) -> Tracker:
    """A tracker for ``backends`` ("tensorboard", "wandb", "none"; a tuple or a comma-separated string)
    writing under ``output_dir``; env ``REASONING_WANDB=1`` adds "wandb". Non-main ranks get a no-op one."""
    names = [b.strip() for b in (backends.split(",") if isinstance(backends, str) else backends) if b.strip()]
    if os.environ.get("REASONING_WANDB") == "1" and "wandb" not in names:
        names.append("wandb")
    for name in names:
        check_choice("backends", name, BACKENDS)
    try:  # on every rank, so all of them fail alike and none waits on the others
        wandb = importlib.import_module("wandb") if "wandb" in names else None
    except ImportError as error:
        raise ImportError("backend 'wandb' was asked for (backends or REASONING_WANDB=1) but wandb is not "
                          "installed: pip install wandb, or drop 'wandb' from backends") from error
    if not is_main:
        return Tracker()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trackers = [TensorBoardTracker(output_dir / "tensorboard", resume_step)] if "tensorboard" in names else []
    if wandb is not None:
        trackers.append(WandbTracker(wandb, output_dir, project, run_name, settings))
    return Tracker(trackers)
