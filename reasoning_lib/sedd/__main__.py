"""Train a SEDD model from the command line, data-parallel under torchrun, e.g.

    torchrun --nproc_per_node=8 -m reasoning_lib.sedd --preset paper

The run goes where chapter 3 looks for it (``<output-dir>/model_run``), so the chapter afterwards reloads it.
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
from .training import PRESETS, get_config, train_sedd


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
    args = parser.parse_args(argv)
    config = get_config(args.preset)
    out = resolve_output_dir(args.output_dir)
    seed_everything(args.seed)
    if args.preset == "paper":  # print the run's resource plan; on a GPU it does not fit, refuse before tokenising
        launch = launch_info()
        announce("ch3_sedd_small_owt", resolve_device(args.device), launch.world_size,
                 config.train_config(args.seed, args.device).batch_size, launch.is_main)
    _, train_rows, _, num_states = prepare_corpus(config.corpus, config.tokenizer, config.num_sequences, 200,
                                                  config.length, args.seed, cache_dir=args.data_dir,
                                                  data_files={"train": args.data_files} if args.data_files else None,
                                                  progress=launch_info().is_main)
    _, history = train_sedd(config, train_rows, num_states, out / "model_run", args.seed, args.device)
    if launch_info().is_main:
        print(f"trained {len(history) and history[-1]['step']} steps; final loss {history[-1]['loss']:.2f}")


if __name__ == "__main__":
    main()
