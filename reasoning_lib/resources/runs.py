"""The resource plan of the run a trainer is about to start: printed at its start, checked against the GPU.

Trainers name their run as ``resources.paper`` does (``ch1_explicit_cot_4x4``, ``ch2_student_4x4``, …); the plan
is re-cut for the processes actually launched and the micro-batch the loop actually uses. On CUDA a plan that
does not fit the device refuses to start, naming the knob (micro-batch, accumulation, processes)."""
from __future__ import annotations

from dataclasses import replace

from .paper import chapter_runs, paper_plans
from .plan import ResourcePlan, check_fits


def run_name(chapter: str, part: str, task: str, model: str = "gpt2") -> str:
    """The plan name of a chapter-1 (``part`` a method) or chapter-2 (``part`` a stage) run; chapter 8 plans the
    tasks chapters 1 and 2 do not run."""
    owner = chapter if task in ("4x4", "gsm8k") else "ch8"
    return f"{owner}_{part}_{task}" + ("" if model == "gpt2" else f"_{model}")


def run_plan(name: str, processes: int | None = None, micro_batch: int | None = None) -> ResourcePlan | None:
    """The paper plan called ``name`` on ``processes`` GPUs at ``micro_batch``, or None when no such run is planned."""
    plan = paper_plans().get(name)
    if plan is None:
        return None
    processes = processes or plan.processes
    micro = micro_batch or plan.micro_batch
    if plan.global_batch % (processes * micro):  # the loop's own split (run_settings.batch_split) refuses this first
        return plan
    return replace(plan, processes=processes, micro_batch=micro)


def announce(name: str, device, processes: int, micro_batch: int, is_main: bool = True, log=print) -> ResourcePlan | None:
    """Print the plan of run ``name`` (main process) and, on a CUDA ``device``, refuse it when it does not fit."""
    plan = run_plan(name, processes, micro_batch)
    if plan is None:
        if is_main:
            log(f"resource plan: no paper plan named {name!r} (python -m reasoning_lib.resources lists them)")
        return None
    if is_main:
        log(f"resource plan of {name} (python -m reasoning_lib.resources --run {name}):\n{plan.to_markdown()}")
    if str(device).startswith("cuda"):
        check_fits(plan, use_cuda=True)
    return plan


def plan_table(chapter: str):
    """The paper plans of ``chapter`` ('ch1' … 'ch8') as a display table, one row per run (a chapter's full-scale
    section shows it; ``python -m reasoning_lib.resources`` prints every chapter's)."""
    import pandas as pd

    from .__main__ import COLUMNS, plan_row

    plans = paper_plans()
    rows = [plan_row(plans[name]) for name in chapter_runs()[chapter]]
    return pd.DataFrame(rows, columns=list(COLUMNS)).set_index("run")


__all__ = ["announce", "plan_table", "run_name", "run_plan"]
