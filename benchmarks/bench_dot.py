"""Diffusion of Thoughts: questions/s against the step count T for DoT and DoT-MP (batch 1, and batched).

Usage: ``python benchmarks/bench_dot.py [--runs outputs/04_diffusion_of_thoughts] [--preset tiny] [--examples 21]``.
With ``--runs`` pointing at chapter 4's output folder the trained models are timed (DoT-MP then makes as many
passes as it really needs); without trained models the tiny architecture is timed with random weights, and DoT-MP
is charged its maximum number of passes. Batch-1 timing follows the paper: one warm-up question, the clock around
sampling, every pass, the denoiser and decoding. Prints one table for RESULTS.md.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from reasoning_lib import dot
from reasoning_lib.runtime import resolve_device
from reasoning_lib.sedd import SEDD, load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="outputs/04_diffusion_of_thoughts")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--examples", type=int, default=21)
    parser.add_argument("--steps", default="1,2,4,8,16,32,64")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_grad_enabled(False)
    config = dot.get_config(args.preset)
    tokenizer, layout, splits = dot.prepare_data(config, seed=0)
    examples = splits.test[: args.examples]
    print(f"device: {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
          f"preset {args.preset}, task {config.task}, canvas {layout.length}")
    print("| variant | weights | T | NFE / question | questions/s (batch 1) | questions/s (batch 128) |")
    print("|---|---|---|---|---|---|")
    for variant in ("dot", "dot_mp"):
        folder = Path(args.runs) / variant / "model"
        if folder.is_dir():
            model, weights = load_model(str(folder))[0], "trained"
        else:
            torch.manual_seed(0)
            model, weights = SEDD(config.sedd_config().model_config(layout.num_states)), "random"
        model.to(device).eval()
        for steps in [int(s) for s in args.steps.split(",")]:
            sampler = dot.make_sampler(model, config, tokenizer, layout, steps)
            single = dot.throughput(sampler, variant, examples, max_passes=config.max_passes)
            run = dot.evaluate(sampler, variant, examples, batch_size=len(examples), max_passes=config.max_passes)
            tic = time.perf_counter()
            dot.evaluate(sampler, variant, splits.test[:128], batch_size=128, max_passes=config.max_passes)
            batched = min(128, len(splits.test)) / (time.perf_counter() - tic)
            print(f"| {variant} | {weights} | {steps} | {run.mean_nfe:.1f} | {single:.1f} | {batched:.1f} |")


if __name__ == "__main__":
    main()
