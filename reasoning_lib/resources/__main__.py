"""Print the resource plan of every paper-scale run: ``python -m reasoning_lib.resources``.

    python -m reasoning_lib.resources                      # one row per run (H100 80GB, MFU 35%)
    python -m reasoning_lib.resources --run ch3_sedd_small_owt   # one plan in detail
    python -m reasoning_lib.resources --gpu H200 --mfu 0.4 --markdown   # a table to paste into a README
    python -m reasoning_lib.resources --chapters --markdown   # one row per chapter (the README's table)
"""
from __future__ import annotations

import argparse

from .paper import chapter_runs, paper_plans, presets_needing_micro_batch
from .plan import DEFAULT_GPU, DEFAULT_MFU, GB, GPUS, ResourceError, ResourcePlan, check_fits

COLUMNS = ("run", "params (M)", "tokens/step", "steps", "PFLOP", "GPU GB/proc", "host GB/node", "procs",
           "micro x accum", "hours", "GPU-h", "bound")


def plan_row(plan: ResourcePlan) -> list[str]:
    """One table row: the numbers a reader compares between runs."""
    frozen = f" + {plan.frozen_parameters / 1e6:.1f}" if plan.frozen_parameters else ""
    micro = f"{plan.micro_batch}{'' if plan.micro_batch_from_preset else '*'} x {plan.grad_accum}"
    return [plan.name, f"{plan.trainable_parameters / 1e6:.1f}{frozen}", f"{plan.tokens_per_step:,}", f"{plan.steps:,}",
            f"{plan.train_flops / 1e15:,.0f}", f"{plan.peak_gpu_bytes / GB:.1f}", f"{plan.host_bytes / GB:.1f}",
            str(plan.processes), micro, f"{plan.wall_hours:,.1f}", f"{plan.gpu_hours:,.0f}",
            "launch" if plan.latency_bound else "FLOPs"]


def format_table(rows: list[list[str]], markdown: bool, columns: tuple[str, ...] = COLUMNS) -> str:
    """Rows under ``columns``: a markdown pipe table, or aligned plain text."""
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def footnotes(plans: dict[str, ResourcePlan]) -> list[str]:
    """What does not fit, which presets need a micro_batch_size, and how chapter 8 reuses runs."""
    notes = [f"GPU {next(iter(plans.values())).gpu}, MFU {next(iter(plans.values())).mfu:.0%}; * = the preset sets "
             "no micro_batch_size (the largest power of two that fits); bound: what sets the hours (FLOPs at the "
             "MFU, or the kernel-launch floor of small micro-batches)."]
    for name, plan in plans.items():
        try:
            check_fits(plan)
        except ResourceError as err:
            notes.append(f"DOES NOT FIT: {err}")
    for name, micro in presets_needing_micro_batch(plans).items():
        notes.append(f"{name}: the preset needs micro_batch_size={micro} (its per-process share does not fit)")
    total = sum(p.gpu_hours for p in plans.values())
    notes.append(f"all {len(plans)} runs: {total:,.0f} GPU-hours (params: trained + frozen, in millions).")
    runs = chapter_runs()
    reused = [n for n in runs["ch8"] if not n.startswith("ch8_")]
    notes.append(f"ch8 reuses {len(reused)} runs of ch1/ch2/ch4 (4x4, gsm8k) and adds the ch8_* runs (3x3, 5x5).")
    return notes


CHAPTER_COLUMNS = ("chapter", "runs", "GPU-h", "largest GPU GB/proc", "largest host GB/node")


def chapter_rows(plans: dict[str, ResourcePlan]) -> list[list[str]]:
    """One row per chapter: its runs, their GPU-hours and the largest memory any of them needs; chapter 8 counts
    only the runs it adds to those it reuses."""
    rows = []
    for chapter, names in chapter_runs().items():
        own = [plans[n] for n in names if chapter != "ch8" or n.startswith("ch8_")]
        label = chapter if chapter != "ch8" else f"ch8 (+ {len(names) - len(own)} reused)"
        rows.append([label, str(len(own)), f"{sum(p.gpu_hours for p in own):,.0f}",
                     f"{max(p.peak_gpu_bytes for p in own) / GB:.1f}", f"{max(p.host_bytes for p in own) / GB:.1f}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reasoning_lib.resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="print one plan in detail (a name from the table)")
    parser.add_argument("--gpu", default=DEFAULT_GPU, choices=sorted(GPUS))
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="model FLOPs utilisation, e.g. 0.35")
    parser.add_argument("--no-launch-floor", action="store_true", help="hours from FLOPs at the MFU alone")
    parser.add_argument("--markdown", action="store_true", help="a markdown table (for a README)")
    parser.add_argument("--chapters", action="store_true", help="one row per chapter instead of one per run")
    args = parser.parse_args(argv)
    plans = paper_plans(args.gpu, args.mfu, launch_floor=not args.no_launch_floor)
    if args.run is not None:
        if args.run not in plans:
            parser.error(f"--run {args.run!r} is not a paper run; choose one of: {', '.join(plans)}")
        print(plans[args.run].to_markdown())
        return
    if args.chapters:
        print(format_table(chapter_rows(plans), args.markdown, CHAPTER_COLUMNS))
    else:
        print(format_table([plan_row(p) for p in plans.values()], args.markdown))
    print()
    print("\n".join(("- " if args.markdown else "") + note for note in footnotes(plans)))


if __name__ == "__main__":
    main()
