"""The chapter's stages as library calls: data, training one variant (from scratch or fine-tuning a SEDD
checkpoint, resumable, data-parallel under torchrun) and a ready-to-use sampler."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from .. import baselines
from ..baselines import BaselineConfig, prepare_data as prepare_baseline_data
from ..sedd import build_graph, build_noise, load_model
from ..sedd.loading import build_random
from ..sedd.training import train_sedd
from .data import VARIANTS, Layout, build_tokenizer, check_canvas, encode_examples, encode_pair, training_pairs
from .inference import Sampler
from .presets import DoTConfig


def prepare_data(config: DoTConfig, seed: int, data_dir: str | Path | None = None):
    """(tokenizer, layout, splits): generated multiplication or GSM8K, in the published text format.

    With ``truncate``, every variant's test canvases are counted first (``data.check_canvas``): a canvas that cuts
    more than ``max_truncated_fraction`` of the test answers is refused before any training."""
    baseline = BaselineConfig(task=config.task, tokenizer="gpt2" if config.task == "gsm8k" else "digits",
                              num_train=config.num_train, num_valid=0,
                              num_test=config.num_test, test_file=config.test_file, train_file=config.train_file)
    splits = prepare_baseline_data(baseline, seed, data_dir)
    tokenizer = build_tokenizer(config.tokenizer, config.split_digits)
    layout = Layout.for_tokenizer(tokenizer, config.length)
    if config.truncate:
        for variant in VARIANTS:
            check_canvas(tokenizer, layout, splits.test, variant, config.max_truncated_fraction, "test")
    return tokenizer, layout, splits


class RandomStepPairs(torch.utils.data.Dataset):
    """DoT-MP training as the Plaid branch does it: each visit to an example draws one of its steps at random
    (the draw depends on the seed, the example and how often it was visited, so a resumed run draws anew)."""

    def __init__(self, tokenizer, layout: Layout, examples, seed: int, truncate: bool = False,
                 max_truncated_fraction: float | None = None):
        if truncate:  # count (and maybe refuse) the cut answers before encoding
            check_canvas(tokenizer, layout, examples, "dot_mp", max_truncated_fraction)
        self.rows = [[encode_pair(tokenizer, layout, s, t, truncate) for s, t in training_pairs(e, "dot_mp")]
                     for e in examples]
        self.input_ids = torch.stack([ids for pairs in self.rows for ids, _ in pairs])
        self.seed, self.visits = seed, [0] * len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        pairs = self.rows[index]
        choice = random.Random(hash((self.seed, index, self.visits[index]))).randrange(len(pairs))
        self.visits[index] += 1
        ids, fixed = pairs[choice]
        return {"input_ids": ids, "fixed": fixed}


def train_dot(variant: str, config: DoTConfig, train_examples, tokenizer, layout: Layout, output_dir: str | Path,
              seed: int = 0, device: str = "auto"):
    """Train ``variant`` ('dot', 'dot_mp' or 'answer_only'); resumes, or reloads a finished run. → (model, history)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    describe = {"variant": variant, "mp_pairs": config.mp_pairs if variant == "dot_mp" else None, "init": config.init,
                "pretrained": config.pretrained,
                "truncate": config.truncate, "test_file": config.test_file, "train_file": config.train_file}
    if config.tokenizer != "digits":  # BPE runs tokenized with split digits are other data: never reload them
        describe["split_digits"] = config.split_digits
    if variant == "dot_mp" and config.mp_pairs == "random":
        rows, fixed = RandomStepPairs(tokenizer, layout, train_examples, seed, config.truncate,
                                      config.max_truncated_fraction), None
    else:
        rows, fixed = encode_examples(tokenizer, layout, train_examples, variant, config.truncate,
                                      config.max_truncated_fraction)
    init = None  # loaded after the data, so a canvas that cuts answers is refused first
    if config.init:
        init = load_model(config.init)[0] if config.pretrained else build_random(config.init)
    return train_sedd(config.sedd_config(), rows, layout.num_states, output_dir, seed, device, fixed, init, describe)


def make_sampler(model, config: DoTConfig, tokenizer, layout: Layout, steps: int | None = None) -> Sampler:
    """A :class:`Sampler` for ``model`` with the absorbing graph and log-linear noise it was trained with."""
    sedd = config.sedd_config()
    return Sampler(model, build_graph(sedd.graph, layout.num_states), build_noise(sedd.noise_config()), tokenizer,
                   layout, steps or config.sample_steps, config.predictor, config.truncate)



def autoregressive_baselines(config: DoTConfig, splits, output_dir: str | Path, seed: int = 0, device: str = "auto",
                             epochs: float = 20.0) -> list[dict]:
    """Chapter 1's no-CoT and explicit-CoT GPT-2s trained (or reloaded) on exactly this chapter's split, so the
    autoregressive rows of the table use the same task and test problems: ``[{method, accuracy, throughput}]``."""
    if config.task == "gsm8k" or config.tokenizer != "digits":
        raise ValueError("the in-chapter baselines are for generated multiplication with the digit tokenizer")
    ar = baselines.get_config("tiny", task=config.task, num_train=len(splits.train), num_valid=0,
                              num_test=len(splits.test), num_epochs=epochs)
    rows = []
    for method in ("no_cot", "explicit_cot"):
        model, tokenizer, _ = baselines.train_baseline(method, splits.train, ar, Path(output_dir) / method, seed, device)
        result = baselines.evaluate_baseline(method, model, tokenizer, splits.test, ar)
        rows.append({"method": method, "accuracy": result.accuracy, "throughput": result.throughput})
    return rows
