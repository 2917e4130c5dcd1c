"""Resource planning for the book's training runs: FLOPs, GPU and host memory, hours (``python -m reasoning_lib.resources``).

``activations`` estimates (Korthikanti et al. 2022) and measures activation memory, ``plan`` holds
:class:`ResourcePlan` and :func:`check_fits`, ``paper`` builds a plan for every paper-scale run from the presets.
"""
from .activations import ActivationFit, estimate_activation_bytes, measure_activation_bytes
from .plan import GPUS, GPU, ModelSpec, ResourceError, ResourcePlan, check_fits, fitting_micro_batch
from .paper import chapter_runs, multiplication_tokens, paper_plans, presets_needing_micro_batch
from .runs import announce, plan_table, run_name, run_plan

__all__ = [
    "ActivationFit", "estimate_activation_bytes", "measure_activation_bytes", "GPUS", "GPU", "ModelSpec",
    "ResourceError", "ResourcePlan", "check_fits", "fitting_micro_batch", "chapter_runs", "multiplication_tokens",
    "paper_plans", "presets_needing_micro_batch", "announce", "plan_table", "run_name", "run_plan",
]
