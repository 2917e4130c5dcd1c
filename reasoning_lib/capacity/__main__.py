"""Train capacity models from the command line, one size per process, e.g. four sizes in parallel:

    for i in 0 1 2 3; do python -m reasoning_lib.capacity --preset tiny --size $i & done; wait
    python -m reasoning_lib.capacity --preset paper --world N30000-r17 --size 4   # one run of the paper sweep
    python -m reasoning_lib.capacity --preset paper --size 4      # size 4 on every world, one after another
    python -m reasoning_lib.capacity --preset tiny --multihop     # chapter 06's 1-hop + 2-hop model
    torchrun --nproc_per_node=2 -m reasoning_lib.capacity --preset paper --dry-run   # the paper path on a CPU

Chapter 5's presets are sweeps over worlds (N people, R relations; ``presets.SWEEPS``): ``--world`` picks one by
index or label (default: all). Outputs go where the chapters look (``outputs/05_knowledge_capacity``, one folder
per world when the sweep has several, or ``outputs/06_probing_multihop`` with ``--multihop``), so a chapter run
afterwards reloads these models.
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..resources import announce
from ..runtime import launch_info, resolve_device
from .presets import SWEEPS, get_multihop_config, get_sweep, plan_name
from .sweep import train_run
from .training import train_size

OUTPUT_DIRS = {False: "outputs/05_knowledge_capacity", True: "outputs/06_probing_multihop"}


def _indices(value: str, count: int, name: str) -> list[int]:
    if value == "all":
        return list(range(count))
    try:
        index = int(value)
    except ValueError:
        raise ValueError(f"--{name}={value!r} must be an integer index or 'all'") from None
    return [index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(SWEEPS))
    parser.add_argument("--size", default="all", help="index into the preset's model_sizes, or 'all' (default)")
    parser.add_argument("--world", default="all", help="a world of the sweep: index, label (N10000-r17) or 'all'")
    parser.add_argument("--multihop", action="store_true", help="train chapter 06's model instead of the sweep")
    parser.add_argument("--max-steps", type=int, default=None, help="override the preset's training length")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --preset paper: the published shapes for a few steps on one world (a CPU check)")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else {}  # 0 too: refused by name
    # settings first: a bad one is refused before any folder is made
    config = get_multihop_config(args.preset, args.dry_run, **overrides) if args.multihop else None
    sweep = None if args.multihop else get_sweep(args.preset, args.dry_run, **overrides)
    out = resolve_output_dir(args.output_dir or OUTPUT_DIRS[args.multihop])
    if args.multihop:
        jobs = [(config, size, (lambda size=size: train_size(config, size, out, args.seed, args.device)))
                for size in _indices(args.size, len(config.model_sizes), "size")]
    else:
        worlds = range(len(sweep.worlds)) if args.world == "all" else [sweep.world_index(args.world)]
        sizes = _indices(args.size, len(sweep.base.model_sizes), "size")
        for size in sizes:
            sweep.base.check_size(size)
        jobs = [(sweep.world_config(w), s, (lambda w=w, s=s: train_run(sweep, w, s, out, args.seed, args.device)))
                for w in worlds for s in sizes]
    if args.preset == "paper":  # print the runs' resource plans; on a GPU one does not fit, refuse before training
        launch = launch_info()
        for config, size, _ in jobs:
            announce(plan_name(config, size, args.multihop), resolve_device(args.device), launch.world_size,
                     config.train_config(args.seed, args.device).batch_size, launch.is_main)
    results = [job() for _, _, job in jobs]
    if launch_info().is_main:
        for result in results:
            m = result.metrics
            print(f"N{m['num_people']}-r{m['num_relations']} {m['size']}: {m['num_parameters']:,} params, "
                  f"{m['steps']} steps, 1-hop loss {m['one_hop_loss_bits']:.2f} bits/answer, capacity "
                  f"{m['capacity_bits']:,.0f} bits = {m['bits_per_param']:.3f} bits/param ({m['support']} support; "
                  f"observed {m['capacity_bits_by_support']['observed']:,.0f}), "
                  f"converged: {m['converged']} -> {result.folder}")


if __name__ == "__main__":
    main()
