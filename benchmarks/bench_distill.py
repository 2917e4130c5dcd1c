"""Training steps/s of KD vs DIITO students: what the counterfactual term's extra forward passes cost.

Usage: ``python benchmarks/bench_distill.py [--steps 40] [--scale tiny|base]``. ``tiny`` is the chapter's tiny
preset (4-block 128-wide teacher, 2-block student, generated task); ``base`` uses BERT-base shapes
(12 -> 6 blocks, 768 wide, sequences of 64 tokens) built from a config, so it needs no download (use a GPU).
A KD step is one teacher forward + one student forward/backward; a DIITO step adds a source and a
counterfactual forward for both. Prints one table; copy it into benchmarks/RESULTS.md with the machine.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from reasoning_lib import distill
from reasoning_lib.models import attention_implementation
from reasoning_lib.runtime import resolve_device, seed_everything


def models_and_batches(scale: str, device: torch.device, batch_size: int):
    config = distill.get_config("tiny")
    tokenizer = distill.build_word_tokenizer()
    train_set, _ = distill.load_sentiment(tokenizer, 2000, 10, seed=0)
    if scale == "tiny":
        teacher = distill.build_teacher(config.teacher, tokenizer)
        student_layers = list(config.student_layers)
    else:  # BERT-base shapes, random weights, the generated sentences repeated to 64 tokens
        shape = BertConfig(vocab_size=len(tokenizer), num_labels=2, pad_token_id=tokenizer.pad_token_id)
        teacher = AutoModelForSequenceClassification.from_config(shape, attn_implementation=attention_implementation())
        student_layers = [0, 2, 4, 7, 9, 11]
        train_set = [{**e, "input_ids": (e["input_ids"] * 4)[:64], "token_type_ids": [0] * 64} for e in train_set]
    teacher = distill.freeze(teacher.to(device))
    mapping = distill.layer_mapping("full", teacher.config.num_hidden_layers, len(student_layers))
    batches = [{k: v.to(device) for k, v in distill.collate(train_set[i:i + batch_size]).items()}
               for i in range(0, len(train_set) - batch_size, batch_size)]
    return teacher, student_layers, mapping, batches


def steps_per_second(method: str, teacher, student_layers, mapping, batches, steps: int, device) -> float:
    seed_everything(0)
    student = distill.build_student(teacher, student_layers).to(device).train()
    objective = distill.DistillObjective(teacher, mapping, beta=1.0 if method == "diito" else 0.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    use_bf16 = device.type == "cuda"

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = objective(student, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:3]:  # warm-up
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--scale", default="tiny", choices=["tiny", "base"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    teacher, student_layers, mapping, batches = models_and_batches(args.scale, device, args.batch_size)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}")
    print(f"scale {args.scale}: teacher {teacher.config.num_hidden_layers} blocks x {teacher.config.hidden_size}, "
          f"student {len(student_layers)} blocks, batch {args.batch_size}, {batches[0]['input_ids'].shape[1]} tokens\n")
    print("| objective | steps/s | relative to KD |")
    print("|---|---|---|")
    speeds = {m: steps_per_second(m, teacher, student_layers, mapping, batches, args.steps, device) for m in distill.METHODS}
    for method, speed in speeds.items():
        print(f"| {method} | {speed:.1f} | {speed / speeds['kd']:.2f}x |")


if __name__ == "__main__":
    main()
