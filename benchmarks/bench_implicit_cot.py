"""Inference examples/s of no-CoT, explicit-CoT and implicit-CoT models, at batch size 1 and batched.

Usage: ``python benchmarks/bench_implicit_cot.py [--preset mini] [--examples 100]``. Models are random-init
GPT-2s of the given size preset ('tiny', 'mini', or 'small' for GPT-2 small's shape); their outputs are
forced to the task's real lengths (answer only, or CoT + answer) so the timings are those of trained models.
"""
from __future__ import annotations

import argparse
import platform

import torch

from reasoning_lib import baselines
from reasoning_lib.evaluate import evaluate_generator, greedy_generate, prompt_batch
from reasoning_lib.implicit_cot import MindReadingStudent, ThoughtEmulator
from reasoning_lib.models import build_model
from reasoning_lib.runtime import resolve_device, seed_everything
from reasoning_lib.tokenization import build_digit_tokenizer


def timed(generate, examples, batch_size, device) -> float:
    return evaluate_generator(generate, examples, batch_size, device).throughput


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--task", default="3x3")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    device = resolve_device("auto")
    tokenizer = build_digit_tokenizer()
    config = baselines.get_config("tiny", task=args.task)
    examples = baselines.prepare_data(config, seed=0).test[: args.examples]
    seed_everything(0)
    lm = build_model(args.preset, tokenizer=tokenizer).to(device).eval()
    emulator = ThoughtEmulator(build_model(args.preset, tokenizer=tokenizer)).to(device).eval()
    student = MindReadingStudent(lm).eval()
    answer_tokens = 2 + 2 * int(args.task.split("x")[0])  # '####', the digits, E
    cot_tokens = len(examples[0].cot.split()) + 1 + answer_tokens

    def plain(length):  # random weights: generate a fixed number of tokens, as a trained model would
        def run(chunk):
            batch = prompt_batch(tokenizer, chunk, device)
            greedy_generate(lm, **batch, eos_token_id=-1, pad_token_id=0, max_new_tokens=length)
            return [""] * len(chunk)
        return run

    def implicit(chunk):
        batch = prompt_batch(tokenizer, chunk, device)
        mask = batch["attention_mask"]
        sep = torch.full((len(chunk),), mask.shape[1] - 1, device=device)
        states = emulator(batch["input_ids"], sep, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).states
        with student.injecting(sep, states):
            greedy_generate(lm, **batch, eos_token_id=-1, pad_token_id=0, max_new_tokens=answer_tokens)
        return [""] * len(chunk)

    print(f"{platform.machine()}, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"GPT-2 preset {args.preset}, task {args.task}, {args.examples} problems")
    print(f"| method | ex/s (batch 1) | ex/s (batch {args.batch}) |\n|---|---|---|")
    with torch.no_grad():
        for name, generate in (("no_cot", plain(answer_tokens)), ("implicit_cot", implicit), ("explicit_cot", plain(cot_tokens))):
            print(f"| {name} | {timed(generate, examples, 1, device):.1f} | {timed(generate, examples, args.batch, device):.1f} |")


if __name__ == "__main__":
    main()
