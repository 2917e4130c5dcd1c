"""SEDD training tokens/s and sampling steps/s for the tiny and SEDD-small shapes.

Usage: ``python benchmarks/bench_sedd.py [--scale tiny|small] [--steps 10] [--batch-size 8]``. Models are built
from config with random weights (no download); ``small`` is the published SEDD-small shape (12 x 768, GPT-2
vocabulary + mask) at length 1024 and wants a GPU. On CUDA training runs in bf16 autocast, and attention uses
flash-attn when installed (else SDPA; run once with each to compare). Prints one table for RESULTS.md.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from reasoning_lib.models import attention_implementation
from reasoning_lib.runtime import resolve_device
from reasoning_lib.sedd import SEDD, SEDDObjective, build_graph, build_noise, get_config, sample


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = get_config("tiny" if args.scale == "tiny" else "paper")
    num_states = 46 if args.scale == "tiny" else 50258
    batch = args.batch_size or (64 if args.scale == "tiny" else 8)
    torch.manual_seed(0)
    model = SEDD(config.model_config(num_states)).to(device)
    graph, noise = build_graph(config.graph, num_states), build_noise(config.noise_config())
    objective = SEDDObjective(graph, noise)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(num_states - 1, (batch, config.length), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = objective(model, {"input_ids": x})
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step()  # warm-up
    sync(device)
    tic = time.perf_counter()
    for _ in range(args.steps):
        train_step()
    sync(device)
    tokens_per_s = args.steps * batch * config.length / (time.perf_counter() - tic)
    sample(model, graph, noise, batch, config.length, 2, "analytic")
    sync(device)
    tic = time.perf_counter()
    out = sample(model, graph, noise, batch, config.length, args.steps, "analytic")
    sync(device)
    steps_per_s = args.steps / (time.perf_counter() - tic)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}, "
          f"attention {attention_implementation()}")
    print(f"scale {args.scale}: {sum(p.numel() for p in model.parameters()):,} parameters, batch {batch} x {config.length} tokens\n")
    print("| training tokens/s | sampling steps/s (batch) | NFE |")
    print("|---|---|---|")
    print(f"| {tokens_per_s:,.0f} | {steps_per_s:.1f} | {out.nfe} |")


if __name__ == "__main__":
    main()
