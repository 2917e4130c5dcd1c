"""Train the teacher and one student from the command line, data-parallel under torchrun, e.g.

    torchrun --nproc_per_node=8 -m reasoning_lib.distill --preset paper --method diito --size 1000

Outputs go where the chapter looks for them (``<output-dir>/teacher``, ``<output-dir>/<method>-<size>``), so a
chapter run afterwards reloads these models instead of training them again. ``--dry-run`` runs the preset's path
at its shapes for a few steps (``presets.DRY_RUN``); ``--glue-dir`` reads local GLUE files instead of the hub.
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..resources import announce
from ..runtime import launch_info, resolve_device, seed_everything
from . import METHODS, PRESETS, accuracy, distill, get_config, interchange_accuracy, layer_mapping, prepare_data, train_teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--method", default="diito", choices=METHODS)
    parser.add_argument("--task", default=None, help="'sentiment' or a GLUE task name (default: the preset's)")
    parser.add_argument("--size", type=int, default=None, help="training examples for the student (default: all)")
    parser.add_argument("--output-dir", default="outputs/07_causal_distillation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--glue-dir", default=None,
                        help="local GLUE files, <dir>/<task>/<split>.tsv with the hub's columns (default: the hub)")
    parser.add_argument("--dry-run", action="store_true", help="the preset's path at its shapes, a few steps (CPU)")
    args = parser.parse_args(argv)
    task = {"task": args.task} if args.task else {}
    config = get_config(args.preset, dry_run=args.dry_run, **task)
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    tokenizer, train_set, test_set = prepare_data(config, args.seed, args.glue_dir)
    size = args.size or len(train_set)
    launch = launch_info()
    if args.preset == "paper":  # print the runs' resource plans; on a GPU one does not fit, refuse before training
        # a dry run prints the plan of the full run it stands for (the paper's whole training set)
        planned = args.size or (max(get_config(args.preset, **task).train_sizes) if args.dry_run else size)
        micro = config.train_config(size, config.student_epochs, config.lr, args.seed, args.device).batch_size
        for name in ("ch7_teacher", f"ch7_{args.method}_{planned}"):
            announce(name, resolve_device(args.device), launch.world_size, micro, launch.is_main)
    teacher_run = train_teacher(config, tokenizer, train_set, out / "teacher", args.seed, args.device)
    teacher = teacher_run.model
    seed_everything(args.seed)
    student_run = distill(args.method, teacher, train_set, config, tokenizer, out / f"{args.method}-{size}",
                          args.seed, args.device, size=size)
    student = student_run.model
    if launch.is_main:
        for name, run in (("teacher", teacher_run), (f"{args.method}-{size}", student_run)):
            last = run.history[-1]["step"] if run.history else 0
            print(f"{name}: trained {run.steps_trained} steps of {last} (global batch {config.batch_size})")
        mapping = layer_mapping(config.mapping, teacher.config.num_hidden_layers, len(config.student_layers))
        iia = interchange_accuracy(student, teacher, test_set[:config.eval_pairs], mapping, config.prop, seed=args.seed)
        print(f"teacher accuracy {accuracy(teacher, test_set):.3f}; {args.method} student on {size} examples: "
              f"accuracy {accuracy(student, test_set):.3f}, IIA {iia.iia:.3f} (teacher flip rate {iia.flip_rate:.3f})")


if __name__ == "__main__":
    main()
