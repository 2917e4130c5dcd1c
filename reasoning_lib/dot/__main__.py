"""Train one Diffusion-of-Thoughts variant from the command line, data-parallel under torchrun, e.g.

    torchrun --nproc_per_node=4 -m reasoning_lib.dot --preset paper --task gsm8k --variant dot \
        --train-file data/gsm8k/train.txt --test-file data/gsm8k/test.txt

The run goes where chapter 4 looks for it (``<output-dir>/<variant>``), so the chapter afterwards reloads it
and only evaluates.
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..resources import announce
from ..runtime import launch_info, resolve_device, seed_everything
from .data import VARIANTS
from .presets import PRESETS, get_config
from .stages import prepare_data, train_dot


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--variant", default="dot", choices=VARIANTS)
    parser.add_argument("--task", default=None, help="e.g. 4x4, 5x5 or gsm8k (default: the preset's)")
    parser.add_argument("--train-file", default=None)
    parser.add_argument("--test-file", default=None)
    parser.add_argument("--init", default=None, help="SEDD folder or hub id to fine-tune (default: the preset's)")
    parser.add_argument("--output-dir", default="outputs/04_diffusion_of_thoughts")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --preset paper: the published shapes and pipeline, random init, a few steps (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("task", args.task), ("train_file", args.train_file), ("test_file", args.test_file),
                                   ("init", args.init)) if v is not None}
    config = get_config(args.preset, dry_run=args.dry_run, **overrides)
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    tokenizer, layout, splits = prepare_data(config, args.seed)
    if args.preset == "paper":  # print the run's resource plan; on a GPU it does not fit, refuse before training
        owner = "ch4" if config.task in ("4x4", "gsm8k") else "ch8"
        launch = launch_info()
        announce(f"{owner}_{args.variant}_{config.task}", resolve_device(args.device), launch.world_size,
                 config.sedd_config().train_config(args.seed, args.device).batch_size, launch.is_main)
    _, history = train_dot(args.variant, config, splits.train, tokenizer, layout, out / args.variant, args.seed, args.device)
    if launch_info().is_main:
        print(f"{args.variant}: {history[-1]['step']} steps of {config.max_steps}; final loss {history[-1]['loss']:.2f}")


if __name__ == "__main__":
    main()
