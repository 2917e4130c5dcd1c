"""Question generation and training throughput of the capacity chapters (QA text as the reference's
``train/dataset.py`` builds it; the ``tiny`` preset is sized for 2 CPU cores).

Usage: ``python benchmarks/bench_capacity.py [--preset tiny|paper] [--questions 20000] [--steps 12]``.

1. Questions per second, token ids and labels included: the library (:class:`QuestionSampler` draws index
   arrays, :class:`QAEncoder` assembles pre-tokenised pieces with numpy gathers) against a one-string-at-a-time
   baseline written here, as the reference's ``InfiniteQADataset`` does it: draw with ``random``, format the QA
   with an f-string, tokenise it, label the tokens after ``Answer:``.
2. Training tokens/s of the preset's model sizes with the shared loop (the second half of ``--steps`` steps,
   so start-up is excluded). ``--preset paper`` builds its world with fewer tokenizer texts and trains the
   reference sizes: it wants a GPU.
Prints markdown tables; nothing is written.
"""
from __future__ import annotations

import argparse
import platform
import random
import time

import numpy as np
import torch

from reasoning_lib.capacity import QADataset, QuestionSampler
from reasoning_lib.capacity.presets import get_config
from reasoning_lib.capacity.profiles import ATTRIBUTES
from reasoning_lib.capacity.questions import subject_text
from reasoning_lib.capacity.sizing import build_llama, config_parameter_count
from reasoning_lib.capacity.training import prepare_world
from reasoning_lib.runtime import resolve_device
from reasoning_lib.train import TrainConfig, train


def library_rate(world, num: int) -> float:
    """Questions/s: sample index arrays, assemble ids + answer mask from pre-tokenised pieces."""
    sampler = QuestionSampler(world.profiles, (1, 2), hop_ratio=1.0, split=world.split)
    world.encoder  # build the piece table outside the timing (once per world)
    tic = time.perf_counter()
    for start in range(0, num, 1000):  # the dataset asks for small batches too
        world.encoder.encode(sampler.sample(min(1000, num - start), np.random.default_rng(start)))
    return num / (time.perf_counter() - tic)


def dataset_rate(world, config, num: int) -> float:
    """Questions/s through ``QADataset`` items (one seeded draw + packing per sequence), as training reads them."""
    sampler = QuestionSampler(world.profiles, (1, 2), hop_ratio=1.0, split=world.split)
    data = QADataset(world.encoder, sampler, num_sequences=num, qas_per_sequence=config.qas_per_sequence)
    count = num // config.qas_per_sequence
    tic = time.perf_counter()
    for index in range(count):
        data[index]
    return count * config.qas_per_sequence / (time.perf_counter() - tic)


def baseline_rate(world, num: int) -> float:
    """Questions/s of the simple way: one f-string and one tokenizer call per question, labels after 'Answer:'."""
    profiles, tokenizer = world.profiles, world.tokenizer
    names, relations = list(profiles.names), profiles.relations.tolist()
    attributes = {a: list(profiles.attribute_strings(a)) for a in ATTRIBUTES}
    subjects, relation_names = profiles.subjects, profiles.relation_names
    marker = tokenizer(" Answer:", add_special_tokens=False)["input_ids"]
    rng = random.Random(0)
    tic = time.perf_counter()
    for _ in range(num):
        person, subject = rng.randrange(len(names)), rng.randrange(len(subjects))
        relation = rng.randrange(len(relation_names)) if rng.random() < 0.5 else None
        bridge = person if relation is None else relations[person][relation]
        middle = "" if relation is None else f"'s {subject_text(relation_names[relation])}"
        name = subjects[subject]
        answer = attributes[name][bridge] if name in attributes else names[relations[bridge][subject - len(ATTRIBUTES)]]
        text = f"Question: What was {names[person]}{middle}'s {subject_text(name)}? Answer: {answer}"
        ids = tokenizer(text)["input_ids"]
        start = next(i for i in range(len(ids)) if ids[i:i + len(marker)] == marker) + len(marker)
        _labels = [-100] * start + ids[start:]
    return num / (time.perf_counter() - tic)


def training_rate(config, world, size: int, steps: int, device: str) -> tuple[int, float]:
    """(parameters, tokens/s over the second half of ``steps`` optimizer steps) for grid entry ``size``."""
    torch.manual_seed(0)
    model = build_llama(config.model_config(size, world.tokenizer))
    sampler = QuestionSampler(world.profiles, config.orders, config.hop_ratio, world.split)
    data = QADataset(world.encoder, sampler, num_sequences=steps * config.batch_size,
                     qas_per_sequence=config.qas_per_sequence, max_seq_len=config.max_seq_len)
    settings = TrainConfig(max_steps=steps, batch_size=config.batch_size, lr=config.lr_for(model.config.hidden_size),
                           log_every=max(1, steps // 2), device=device, progress=False)
    history = train(model, data, settings, data.collate).history
    return config_parameter_count(model.config), history[-1]["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--questions", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="/tmp/bench_capacity", help="where the world is cached")
    args = parser.parse_args()
    overrides = {"tokenizer_texts": 20_000} if args.preset == "paper" else {}
    config = get_config(args.preset, **overrides)
    world = prepare_world(config, args.output_dir, seed=0)
    device = str(resolve_device(args.device))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, device {device}; world N = {config.num_people}, r{config.num_relations}, "
          f"vocabulary {len(world.tokenizer)}\n")
    baseline, library = baseline_rate(world, args.questions), library_rate(world, args.questions)
    items = dataset_rate(world, config, args.questions)
    print("| question generation (ids + labels) | questions/s | speed-up |\n|---|---|---|")
    print(f"| one f-string + tokenizer call per QA | {baseline:,.0f} | 1.0x |")
    print(f"| library: index sampling + pre-tokenised pieces, 1,000 at a time | {library:,.0f} | "
          f"{library / baseline:.1f}x |")
    print(f"| library through QADataset items ({config.qas_per_sequence} QAs each, as training reads them) | "
          f"{items:,.0f} | {items / baseline:.1f}x |\n")
    print(f"| model ({args.preset}) | parameters | training tokens/s |\n|---|---|---|")
    for size in range(len(config.model_sizes)):
        params, rate = training_rate(config, world, size, args.steps, device)
        print(f"| {config.size_label(size)} | {params:,} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
