"""Run the capstone's sweep from the command line (one papermill run per task x method), e.g. at paper scale:

    python -m reasoning_lib.frontier --preset paper --train-file data/gsm8k/train.txt --test-file ...

or one run in this process: ``python -m reasoning_lib.frontier --preset tiny --task 2x2 --method dot``.
Training at paper scale goes faster data-parallel: train each model first with its chapter's torchrun command
and ``--output-dir outputs/08_reasoning_frontier/runs/<task>`` (see the README); the sweep then reloads them.
"""
from __future__ import annotations

import argparse
import json

from .harness import run_one
from .presets import METHODS, PRESETS
from .sweep import run_sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--task", default=None, help="one task (with --method: a single run in this process)")
    parser.add_argument("--method", default=None, choices=sorted(METHODS))
    parser.add_argument("--output-dir", default="outputs/08_reasoning_frontier")
    parser.add_argument("--reuse-dir", action="append", default=[], help="a chapter output folder to adopt runs from")
    parser.add_argument("--train-file", default=None)
    parser.add_argument("--valid-file", default=None)
    parser.add_argument("--test-file", default=None)
    parser.add_argument("--data-dir", default=None, help="the published data folder (4_by_4_mult/, 5_by_5_mult/, gsm8k/)")
    parser.add_argument("--dry-run", action="store_true", help="the paper path at its real shapes, a few steps (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--force", action="store_true", help="rerun finished runs")
    args = parser.parse_args(argv)
    files = {"train_file": args.train_file, "valid_file": args.valid_file, "test_file": args.test_file,
             "data_dir": args.data_dir}
    common = {"preset": args.preset, "output_dir": args.output_dir, "seed": args.seed, "device": args.device,
              "reuse_dirs": tuple(args.reuse_dir)}
    if args.task and args.method:
        print(json.dumps(run_one(args.method, args.task, **common, **files, dry_run=args.dry_run), indent=2))
        return
    rows = run_sweep(**common, tasks=(args.task,) if args.task else None, methods=(args.method,) if args.method else None,
                     force=args.force, dry_run=args.dry_run, **files)
    for row in rows:
        print(f"{row['task']:>6} {row['method']:>13}: {100 * row['accuracy']:5.1f}%  "
              f"{row['examples_per_s']:8.1f} ex/s (batch 1)  {row['examples_per_s_batched']:8.1f} ex/s (batched)")


if __name__ == "__main__":
    main()
