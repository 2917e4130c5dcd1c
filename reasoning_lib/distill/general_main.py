"""Distil a general-purpose student (and optionally fine-tune it on GLUE) from the command line, e.g.

    torchrun --nproc_per_node=4 -m reasoning_lib.distill.general_main --preset paper --method causal
    python -m reasoning_lib.distill.general_main --preset paper --method standard --glue all

Wu et al. 2022's general distillation (``reasoning_lib.distill.general``): ``bert-base-uncased`` -> a 6-block
DistilBERT on WikiText-103 with the MLM, KD and cosine losses, plus DIITO's interchange term for ``--method
causal``. The run goes where chapter 7 looks for it (``<output-dir>/general-<method>``, its GLUE fine-tunes in
``<output-dir>/general-<method>/glue/<task>``), so the chapter afterwards reloads it. Without the hub,
``--data-files`` names local copies of the corpus (the hub's ``text`` column), ``--teacher`` a local BERT masked
LM folder and ``--glue-dir`` local GLUE files (``<dir>/<task>/train.tsv``, ``validation.tsv``, …).
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..runtime import launch_info, resolve_device, seed_everything
from .general import METHODS, PRESETS, distill_general, get_config, prepare_general, run_folder
from .glue import GLUE_TASKS, get_glue_config, glue_table, run_glue


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--method", default="causal", choices=METHODS,
                        help="standard: MLM + KD + cosine; causal: the same plus the interchange-intervention term")
    parser.add_argument("--output-dir", default="outputs/07_causal_distillation")
    parser.add_argument("--data-files", nargs="+", default=None, metavar="FILE",
                        help="local corpus files with a 'text' column (txt/jsonl/parquet/…) instead of the hub")
    parser.add_argument("--teacher", default=None, help="a BERT masked LM: hub id or local folder (default: preset's)")
    parser.add_argument("--glue", nargs="*", default=None, metavar="TASK",
                        help="fine-tune and score the student on these GLUE tasks afterwards ('all': the preset's)")
    parser.add_argument("--glue-dir", default=None, help="local GLUE files, <dir>/<task>/<split>.<ext>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="the preset's path at its shapes, two steps (CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = get_config(args.preset, dry_run=args.dry_run, **({"teacher": args.teacher} if args.teacher else {}))
    out = resolve_output_dir(args.output_dir)
    launch = launch_info()
    seed_everything(args.seed)
    if args.preset == "paper":  # print the run's resource plan; on a GPU where it does not fit, refuse before loading
        from ..resources import announce

        micro = config.train_config(1, args.seed, args.device).batch_size
        announce(f"ch7_general_{args.method}", resolve_device(args.device), launch.world_size, micro, launch.is_main)
    tokenizer, teacher, corpus = prepare_general(config, args.data_files, args.seed, cache_dir=out / "data")
    if launch.is_main:
        print(f"corpus: {len(corpus):,} sequences, {corpus.num_tokens:,} tokens")
    folder = out / run_folder(args.method)
    seed_everything(args.seed)
    run = distill_general(args.method, config, teacher, tokenizer, corpus, folder, args.seed, args.device,
                          args.data_files)
    if launch.is_main and run.history:
        print(f"{args.method}: trained {run.steps_trained} steps of {run.history[-1]['step']} (global batch "
              f"{config.batch_size}); final loss {run.history[-1]['loss']:.3f}")
    if args.glue is None:
        return
    glue = get_glue_config(args.preset, dry_run=args.dry_run)
    tasks = glue.tasks if not args.glue or args.glue == ["all"] else tuple(args.glue)
    unknown = [t for t in tasks if t not in GLUE_TASKS]
    if unknown:
        raise SystemExit(f"unknown GLUE task(s) {unknown}; choose from {sorted(GLUE_TASKS)} or 'all'")
    results = run_glue(folder / "model", tokenizer, glue, folder / "glue", args.glue_dir, args.seed, args.device, tasks)
    if launch.is_main:
        print(glue_table({args.method: results}).to_string())


if __name__ == "__main__":
    main()
