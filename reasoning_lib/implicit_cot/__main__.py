"""Train one implicit-CoT stage from the command line, data-parallel under torchrun, e.g. at paper scale:

    torchrun --nproc_per_node=8 -m reasoning_lib.baselines --preset paper --method explicit_cot   # the teacher
    torchrun --nproc_per_node=8 -m reasoning_lib.implicit_cot --preset paper --stage student
    torchrun --nproc_per_node=8 -m reasoning_lib.implicit_cot --preset paper --stage emulator
    torchrun --nproc_per_node=8 -m reasoning_lib.implicit_cot --preset paper --stage coupled

The teacher comes from chapter 1's folder (or this chapter's ``baselines/``); each stage writes where chapter 2
looks for it (``<output-dir>/{student,emulator,coupled}``), so the chapter afterwards reloads and evaluates.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import baselines
from ..chapter import resolve_output_dir
from ..models import load_saved
from ..resources import announce, run_name
from ..runtime import launch_info, resolve_device, seed_everything
from ..tokenization import load_tokenizer
from .persist import load_stage
from .presets import PRESETS, get_config
from .stages import train_coupled, train_emulator, train_student

STAGES = ("student", "emulator", "coupled")


def find_teacher(config, baseline_dir: Path, output_dir: Path) -> Path:
    """The folder of a finished explicit-CoT teacher trained with ``config.baseline``."""
    for folder in (baseline_dir / "explicit_cot", output_dir / "baselines" / "explicit_cot"):
        if baselines.trained_with(folder, config.baseline):
            return folder / "model"
    raise FileNotFoundError(
        f"no explicit-CoT teacher trained with this preset's settings in {baseline_dir} or {output_dir / 'baselines'}: "
        "train it first (python -m reasoning_lib.baselines --method explicit_cot with the same preset and task)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--dry-run", action="store_true", help="the paper path at its real shapes, a few steps (CPU)")
    parser.add_argument("--stage", required=True, choices=STAGES)
    baselines.add_data_arguments(parser)
    parser.add_argument("--output-dir", default="outputs/02_implicit_cot")
    parser.add_argument("--baseline-dir", default="outputs/01_multiplication_baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    config = get_config(args.preset, dry_run=args.dry_run, **baselines.data_overrides(args))
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    splits = baselines.prepare_data(config.baseline, args.seed)
    stage = config.stage_config(args.seed, args.device, len(splits.train))
    base = config.baseline
    if args.preset == "paper":  # print the stage's resource plan; on a GPU it does not fit, refuse before training
        announce(run_name("ch2", args.stage, base.task, base.model), resolve_device(args.device),
                 launch_info().world_size, stage.batch_size, launch_info().is_main)
    if args.stage == "coupled":
        student, emulator = load_stage(out / "student" / "final"), load_stage(out / "emulator" / "final")
        tokenizer = load_tokenizer(str(out / "student" / "final" / "lm"))
        seed_everything(args.seed)
        _, result = train_coupled(emulator, student, tokenizer, splits.train, stage, out / "coupled", config.fix_emulator,
                                  splits.valid)
    else:
        teacher_path = find_teacher(config, resolve_output_dir(args.baseline_dir), out)
        teacher, tokenizer = load_saved(str(teacher_path)), load_tokenizer(str(teacher_path))
        seed_everything(args.seed)  # the same initial weights as the chapter's
        if args.stage == "student":
            _, result = train_student(teacher, tokenizer, splits.train, base.model, stage, out / "student", config.delta,
                                      splits.valid, base.pretrained)
        else:
            _, result = train_emulator(teacher, tokenizer, splits.train, base.model, stage, out / "emulator",
                                       config.delta, config.mixture_size, config.mixture_weight, splits.valid,
                                       base.pretrained)
    if launch_info().is_main:
        best = f"; kept step {result.best['step']} (epoch {result.best['epoch']})" if result.best else ""
        print(f"{args.stage}: trained {result.steps_trained} steps of {result.step}{best}; "
              f"final loss {result.final_loss:.3f}")


if __name__ == "__main__":
    main()
