"""The capstone's sweep: one papermill run of ``notebooks/frontier/run_method.ipynb`` per (task, method), each
writing its own metrics.json, then ``harness.collect`` reads them back. A finished run is not run again."""
from __future__ import annotations

from pathlib import Path

from ..chapter import book_root, read_metrics, resolve_output_dir
from .harness import collect
from .presets import get_config

RUNNER = Path("notebooks") / "frontier" / "run_method.ipynb"


def runner_notebook() -> Path:
    """The per-run notebook, found from the book's root."""
    roots = [r for r in (book_root(), book_root(Path(__file__).resolve().parent)) if r is not None]
    for root in roots:
        if (root / RUNNER).is_file():
            return root / RUNNER
    raise FileNotFoundError(f"the sweep's runner notebook {RUNNER} is not under {roots or 'any book folder'}: "
                            "run from the book's checkout")


def run_sweep(preset: str = "tiny", output_dir: str | Path = "outputs/08_reasoning_frontier", seed: int = 0,
              device: str = "auto", reuse_dirs: tuple[str, ...] = (), tasks: tuple[str, ...] | None = None,
              methods: tuple[str, ...] | None = None, force: bool = False, log=print, dry_run: bool = False,
              **files) -> list[dict]:
    """Execute the runner once per missing (task, method) with papermill and return every run's metrics.
    ``files``: ``train_file``/``valid_file``/``test_file`` for GSM8K, ``data_dir`` for the published test sets."""
    import papermill

    overrides = {k: v for k, v in (("tasks", tasks), ("methods", methods)) if v}
    config = get_config(preset, **overrides)
    out = resolve_output_dir(output_dir)
    runner = runner_notebook()
    for task in config.tasks:
        for method in config.methods:
            result = out / "results" / task / method
            done = (result / "metrics.json").is_file() and read_metrics(result)
            if not force and done and done.get("preset") == preset and bool(done.get("dry_run")) == dry_run:
                log(f"{task}/{method}: done before, reading {result / 'metrics.json'}")
                continue
            log(f"{task}/{method}: running {runner.name} with papermill")
            executed = out / "executed" / f"{task}-{method}.ipynb"
            executed.parent.mkdir(parents=True, exist_ok=True)
            papermill.execute_notebook(
                str(runner), str(executed), cwd=str(runner.parent), kernel_name="python3", progress_bar=False,
                parameters={"method": method, "task": task, "preset": preset, "dry_run": dry_run, "output_dir": str(out), "seed": seed,
                            "device": device, "reuse_dirs": ",".join(map(str, reuse_dirs)), **{k: v for k, v in files.items() if v}},
            )
    return collect(out, config)
