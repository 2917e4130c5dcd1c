"""Training tokens/s and generation examples/s of chapter 1's tiny models on this machine.

Usage: ``python benchmarks/bench_train.py [--steps 60] [--examples 200] [--quick]``. Generation uses the trained
models in ``outputs/01_multiplication_baselines`` (trained there first if missing, as the chapter would), so the
generated lengths are the real ones. ``--quick`` (seconds, for ``run_all.py --quick``) uses the ``smoke`` preset
instead, trained in a temporary folder, 5 steps and 16 problems: it checks the script, not the speed.
Prints one table; copy it into benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from reasoning_lib import baselines
from reasoning_lib.chapter import resolve_output_dir
from reasoning_lib.data import collate, encode_examples
from reasoning_lib.models import build_model
from reasoning_lib.runtime import seed_everything
from reasoning_lib.tokenization import load_tokenizer
from reasoning_lib.train import TrainConfig, train


def training_tokens_per_second(method: str, config, examples, steps: int) -> float:
    fmt, _ = baselines.METHODS[method]
    tokenizer = load_tokenizer(config.tokenizer)
    seed_everything(0)
    model = build_model(config.model, tokenizer=tokenizer)
    dataset = encode_examples(tokenizer, examples, fmt)
    train_config = TrainConfig(max_steps=steps, batch_size=config.batch_size, lr=config.lr, log_every=steps, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        train(model, dataset, train_config, lambda b: collate(b, tokenizer.pad_token_id), output_dir=tmp)
        seconds = time.perf_counter() - tic
    tokens = sum(len(dataset[i % len(dataset)].input_ids) for i in range(steps * config.batch_size))
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="smoke preset in a temporary folder, 5 steps, 16 problems")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.examples = 5, 16
        config = baselines.get_config("smoke")
        scratch = tempfile.TemporaryDirectory(prefix="bench_train_")  # removed when the script exits
        out = Path(scratch.name)
    else:
        config = baselines.get_config("tiny")
        out = resolve_output_dir("outputs/01_multiplication_baselines")
    splits = baselines.prepare_data(config, seed=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}")
    print(f"task {config.task}, model preset {config.model}, train batch {config.batch_size}\n")
    print("| model | train tokens/s | gen ex/s (batch 1) | gen ex/s (batch 64) | accuracy |")
    print("|---|---|---|---|---|")
    for method in baselines.METHODS:
        speed = training_tokens_per_second(method, config, splits.train, args.steps)
        model, tokenizer, _ = baselines.train_baseline(method, splits.train, config, out / method, seed=0)
        test = splits.test[: args.examples]
        single = baselines.evaluate_baseline(method, model, tokenizer, test, config, batch_size=1)
        batched = baselines.evaluate_baseline(method, model, tokenizer, test, config, batch_size=64)
        print(f"| {method} | {speed:,.0f} | {single.throughput:.1f} | {batched.throughput:.1f} | {single.accuracy:.3f} |")


if __name__ == "__main__":
    main()
