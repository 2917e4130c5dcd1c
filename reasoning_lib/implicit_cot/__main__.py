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
from ..runtime import launch_info, seed_everything
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
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--task", default=None, help="e.g. 5x5 (default: the preset's)")
    parser.add_argument("--model", default=None, help="e.g. gpt2-medium (default: the preset's)")
    parser.add_argument("--train-file", default=None, help="GSM8K: formula-format train file (default: the hub)")
    parser.add_argument("--valid-file", default=None)
    parser.add_argument("--test-file", default=None)
    parser.add_argument("--output-dir", default="outputs/02_implicit_cot")
    parser.add_argument("--baseline-dir", default="outputs/01_multiplication_baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    config = get_config(args.preset, task=args.task, model=args.model, train_file=args.train_file,
                        valid_file=args.valid_file, test_file=args.test_file)
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    splits = baselines.prepare_data(config.baseline, args.seed)
    stage = config.stage_config(args.seed, args.device, launch_info().world_size)
    if args.stage == "coupled":
        student, emulator = load_stage(out / "student" / "final"), load_stage(out / "emulator" / "final")
        tokenizer = load_tokenizer(str(out / "student" / "final" / "lm"))
        _, result = train_coupled(emulator, student, tokenizer, splits.train, stage, out / "coupled", config.fix_emulator)
    else:
        teacher_path = find_teacher(config, resolve_output_dir(args.baseline_dir), out)
        teacher, tokenizer = load_saved(str(teacher_path)), load_tokenizer(str(teacher_path))
        if args.stage == "student":
            _, result = train_student(teacher, tokenizer, splits.train, config.baseline.model, stage, out / "student", config.delta)
        else:
            _, result = train_emulator(teacher, tokenizer, splits.train, config.baseline.model, stage, out / "emulator",
                                       config.delta, config.mixture_size, config.mixture_weight)
    if launch_info().is_main:
        print(f"{args.stage}: trained {result.step} steps; final loss {result.history[-1]['loss']:.3f}")


if __name__ == "__main__":
    main()
