"""The shape every paper dry run shares: train with a 2-process gloo ``torchrun`` as a researcher on a GPU box
would, then run the chapter with papermill at ``preset="paper"`` and ``dry_run=True`` so it reloads those runs.

The hub stand-in is a local cache (``HF_HUB_CACHE``) in the hub's exact layout (``hub_layout``); the papermill
kernels inherit it through the environment."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]


def offline_env(cache: Path) -> dict:
    """The environment of a launched command: the local hub cache, offline, one thread per process."""
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def torchrun(module: str, args: list[str], cache: Path, timeout: int = 1200) -> str:
    """``torchrun --standalone --nproc_per_node=2 -m module args``; its stdout, or a failure showing both streams."""
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [launcher, "--standalone", "--nproc_per_node=2", "-m", module, *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=offline_env(cache), cwd=ROOT)
    assert run.returncode == 0, f"{' '.join(command)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    return run.stdout


@contextlib.contextmanager
def hub_cache(cache: Path):
    """``HF_HUB_CACHE`` set to ``cache`` in this process (the papermill kernels inherit it), restored after."""
    previous = os.environ.get("HF_HUB_CACHE")
    os.environ["HF_HUB_CACHE"] = str(cache)
    try:
        yield
    finally:
        os.environ.pop("HF_HUB_CACHE") if previous is None else os.environ.__setitem__("HF_HUB_CACHE", previous)


def run_chapter(name: str, book: Path, cache: Path, **parameters) -> None:
    """Execute ``notebooks/<name>.ipynb`` at ``paper`` + ``dry_run`` into ``book/notebooks``."""
    (book / "notebooks").mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        try:
            with hub_cache(cache):
                papermill.execute_notebook(
                    str(ROOT / "notebooks" / f"{name}.ipynb"), str(book / "notebooks" / f"{name}.ipynb"),
                    cwd=str(book / "notebooks"), kernel_name="python3", progress_bar=False,
                    parameters={"preset": "paper", "dry_run": True, **parameters},
                    execution_timeout=CELL_TIMEOUT_S,
                )
            return
        except TimeoutError:
            # a kernel that went idle without replying (seen in CI, as in the smoke runs): run the chapter once
            # more; it reloads every finished run, so the second attempt trains nothing already trained
            if attempt == 2:
                raise


CELL_TIMEOUT_S = 900  # the slowest dry-run cell (the capstone's measurements) takes a few minutes
