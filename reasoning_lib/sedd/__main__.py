"""Train a SEDD model from the command line, data-parallel under torchrun, e.g.

    torchrun --nproc_per_node=8 -m reasoning_lib.sedd --preset paper

The run goes where chapter 3 looks for it (``<output-dir>/model_<graph>``), so the chapter afterwards reloads it.
A hub corpus (the paper preset's OpenWebText) is first tokenised once into memory-mapped token files under
``--data-dir`` (default ``outputs/data`` in the book's root), by rank 0 while the other ranks wait; an
interrupted tokenisation resumes where it stopped. The folder must be visible to every process. Without the hub,
``--data-files`` names local copies of the corpus's documents (e.g. OpenWebText's Parquet files).
"""
from __future__ import annotations

import argparse

from ..chapter import resolve_output_dir
from ..resources import announce
from ..runtime import launch_info, resolve_device, seed_everything
from .data import DEFAULT_CACHE_DIR, prepare_corpus
from .likelihood import real_tokens
from .training import GRAPH_NOISE, PRESETS, get_config, num_states, run_folder, train_sedd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--output-dir", default="outputs/03_discrete_diffusion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=DEFAULT_CACHE_DIR,
                        help="token files of hub corpora (relative: from the book's root; shared by every rank)")
    parser.add_argument("--data-files", nargs="+", default=None, metavar="FILE",
                        help="the corpus's training documents as local json/jsonl/parquet/text files (globs allowed) "
                             "instead of the hub; held-out documents are then the last of them")
    parser.add_argument("--graph", default=None, choices=("absorb", "uniform"),
                        help="the forward process (default: the preset's); uniform trains with the geometric schedule")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --preset paper: the published shapes and pipeline, a few steps (CPU)")
    args = parser.parse_args(argv)
    graph = {"graph": args.graph, "noise": GRAPH_NOISE[args.graph]} if args.graph else {}
    config = get_config(args.preset, dry_run=args.dry_run, **graph)
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    if args.preset == "paper":  # print the run's resource plan; on a GPU it does not fit, refuse before tokenising
        launch = launch_info()
        announce("ch3_sedd_small_owt", resolve_device(args.device), launch.world_size,
                 config.train_config(args.seed, args.device).batch_size, launch.is_main)
    tokenizer, train_rows, test_rows, _ = prepare_corpus(config.corpus, config.tokenizer, config.num_sequences,
                                                 config.num_test, config.length, args.seed, cache_dir=args.data_dir,
                                                 data_files={"train": args.data_files} if args.data_files else None,
                                                 held_out_documents=config.held_out_documents,
                                                 progress=launch_info().is_main)
    states = num_states(tokenizer, config.graph)
    # the EMA's held-out bound during training, as the chapter draws it
    _, history = train_sedd(config, train_rows, states, out / run_folder(config.graph), args.seed, args.device,
                            validate_sequences=test_rows, validate_count_mask=real_tokens(test_rows, tokenizer.eos_token_id))
    if launch_info().is_main:
        print(f"{config.graph}: {len(history) and history[-1]['step']} steps of {config.max_steps}; "
              f"final loss {history[-1]['loss']:.2f}")


if __name__ == "__main__":
    main()
