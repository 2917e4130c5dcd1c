"""Train capacity models from the command line, one size per process, e.g. four sizes in parallel:

    for i in 0 1 2 3; do python -m reasoning_lib.capacity --preset tiny --size $i & done; wait
    torchrun --nproc_per_node=8 -m reasoning_lib.capacity --preset paper --size 4
    python -m reasoning_lib.capacity --preset tiny --multihop     # chapter 06's 1-hop + 2-hop model

Outputs go where the chapters look (``outputs/05_knowledge_capacity/size-<label>``, or
``outputs/06_probing_multihop`` with ``--multihop``), so a chapter run afterwards reloads these models.
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..resources import announce
from ..runtime import launch_info, resolve_device
from .presets import PRESETS, get_config, get_multihop_config
from .training import run_sweep, train_size

OUTPUT_DIRS = {False: "outputs/05_knowledge_capacity", True: "outputs/06_probing_multihop"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--size", default="all", help="index into the preset's model_sizes, or 'all' (default)")
    parser.add_argument("--multihop", action="store_true", help="train chapter 06's model instead of the sweep")
    parser.add_argument("--max-steps", type=int, default=None, help="override the preset's training length")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else {}  # 0 too: refused by name
    config = (get_multihop_config if args.multihop else get_config)(args.preset, **overrides)
    out = resolve_output_dir(args.output_dir or OUTPUT_DIRS[args.multihop])
    if args.preset == "paper":  # print the runs' resource plans; on a GPU one does not fit, refuse before training
        launch = launch_info()
        chosen = range(len(config.model_sizes)) if args.size == "all" else [int(args.size)]
        for index in chosen:
            name = f"{'ch6_multihop' if args.multihop else 'ch5_capacity'}_{config.model_sizes[index] / 1e6:g}M"
            announce(name, resolve_device(args.device), launch.world_size,
                     config.train_config(args.seed, args.device).batch_size, launch.is_main)
    if args.size == "all":
        results = run_sweep(config, out, args.seed, args.device)
    else:
        try:
            size = int(args.size)
        except ValueError:
            raise ValueError(f"--size={args.size!r} must be an integer index or 'all'") from None
        results = [train_size(config, size, out, args.seed, args.device)]
    if launch_info().is_main:
        for result in results:
            m = result.metrics
            print(f"{m['size']}: {m['num_parameters']:,} params, {m['steps']} steps, 1-hop loss "
                  f"{m['one_hop_loss_bits']:.2f} bits/answer, capacity {m['capacity_bits']:,.0f} bits = "
                  f"{m['bits_per_param']:.3f} bits/param (converged: {m['converged']}) -> {result.folder}")


if __name__ == "__main__":
    main()
