"""The capstone (chapter 8): every reasoning method of the book on the same tasks, measured by one harness.

``presets`` (tasks, methods, measurement), ``methods`` (train or reload each method with its chapter's trainer
and expose it as problems → answers), ``harness`` (one scoring rule, batch-1 and batched clocks, one run's
metrics.json), ``sweep`` (a papermill run per task x method) and ``plots`` (the accuracy-vs-speed figure).
"""
from .harness import answer_correct, collect, measure, run_one, shared_split
from .methods import METHODS, TrainedMethod, adopt_runs, data_files
from .plots import frontier_figure, frontier_table
from .presets import PRESETS, FrontierConfig, get_config
from .sweep import run_sweep, runner_notebook

__all__ = ["answer_correct", "collect", "measure", "run_one", "shared_split", "METHODS", "TrainedMethod", "adopt_runs", "data_files",
           "frontier_figure", "frontier_table", "PRESETS", "FrontierConfig", "get_config", "run_sweep", "runner_notebook"]
