"""Two CPU jobs side by side: how much each slows down, per OpenMP thread setting.

Each job trains the book's tiny GPT-2 on 2x2 multiplication for a fixed number of steps. It runs alone, then two
copies at once, under each setting:

* ``default``: torch's own choice (one thread per core) and OpenMP's default wait policy, which spins a waiting
  thread on its core for a while before it sleeps;
* ``passive``: the same threads with ``OMP_WAIT_POLICY=PASSIVE``, so a waiting thread yields its core at once
  (the Makefile sets it for the book and the tests);
* ``split``: ``OMP_NUM_THREADS`` = cores / 2 for each job.

A ratio near 2 means two jobs share the cores fairly (each takes twice as long); far above 2 means they fight.

Usage: ``python benchmarks/bench_threads.py [--steps 40] [--quick]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

JOB = """
import time, torch
from reasoning_lib.data import collate, encode_examples, make_splits
from reasoning_lib.models import build_model
from reasoning_lib.tokenization import build_digit_tokenizer
tok = build_digit_tokenizer()
data = encode_examples(tok, make_splits(2, 256, 0, 0, seed=0).train, "all")
model = build_model("tiny", tokenizer=tok)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
batch = collate(data[:64], tok.pad_token_id)
start = time.perf_counter()
for _ in range({steps}):
    loss = model(**{{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}}).loss
    loss.backward(); opt.step(); opt.zero_grad()
print(time.perf_counter() - start)
"""


def run_jobs(count: int, steps: int, env: dict) -> list[float]:
    """Seconds each of ``count`` simultaneous jobs took for its training steps."""
    jobs = [subprocess.Popen([sys.executable, "-c", JOB.format(steps=steps)], env=env, stdout=subprocess.PIPE,
                             text=True) for _ in range(count)]
    times = []
    for job in jobs:
        out, _ = job.communicate(timeout=1800)
        if job.returncode != 0:
            raise RuntimeError(f"a benchmark job failed with exit status {job.returncode}")
        times.append(float(out.strip().splitlines()[-1]))
    return times


def settings(cores: int) -> dict[str, dict]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    return {"default": base,
            "passive": {**base, "OMP_WAIT_POLICY": "PASSIVE"},
            "split": {**base, "OMP_NUM_THREADS": str(max(1, cores // 2))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="5 steps: checks the script, not figures to quote")
    args = parser.parse_args()
    steps = 5 if args.quick else args.steps
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; {steps} training steps of the tiny GPT-2 (batch 64) per job")
    print(f"{'setting':<8} {'alone (s)':>10} {'two at once (s, each)':>22} {'slowdown':>9}")
    for name, env in settings(cores).items():
        alone = run_jobs(1, steps, env)[0]
        pair = run_jobs(2, steps, env)
        print(f"{name:<8} {alone:>10.2f} {' / '.join(f'{t:.2f}' for t in pair):>22} {max(pair) / alone:>8.1f}x")
    print("slowdown: the slower of the two simultaneous jobs against the job alone (2.0x is a fair share)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - started:.0f} s")
