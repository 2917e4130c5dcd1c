"""Chapter 1: the two baselines of the ICoT-KD paper on multiplication (Deng et al. 2023, Table 2).

* **no CoT** — a GPT-2 trained on `` {x} E {ans} E``: it must produce the product in one go;
* **explicit CoT** — a GPT-2 trained on `` {x} E {cot} E {ans} E``: it writes the partial products first.

Both use the shared data, tokenizer, model builder, training loop and evaluation. The explicit-CoT model
saved here is the teacher of the implicit-CoT chapter.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import check_choice, check_positive, from_preset
from .data import Example, collate, encode_examples, make_splits, parse_task, read_examples, write_examples
from .data.gsm8k import GSM8KSplits, load_gsm8k_splits
from .data.multiplication import MultiplicationSplits, parse_operands
from .evaluate import EvalResult, evaluate
from .models import build_model
from .runtime import launch_info
from .tokenization import load_tokenizer
from .train import TrainConfig, TrainResult, train

CONFIG_FILE = "baseline_config.json"
METHODS = {"no_cot": ("nocot", 1), "explicit_cot": ("all", 2)}  # training format, separators to generate


@dataclass(frozen=True)
class BaselineConfig:
    """Everything a baseline run needs; see ``PRESETS``."""

    task: str = "3x3"
    model: str = "tiny"  # size preset (random init) or hub id / folder (pretrained)
    tokenizer: str = "digits"  # 'digits' or a hub id / folder such as 'gpt2'
    num_train: int = 160_000
    num_valid: int = 500
    num_test: int = 500
    test_file: str | None = None  # e.g. test_bigbench.txt: used as the test set and excluded from training
    train_file: str | None = None  # GSM8K only: formula-format train file (e.g. GSM8K-Aug); else the hub
    valid_file: str | None = None  # GSM8K only
    num_epochs: float = 1.0
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    schedule: str = "wsd"  # constant peak, linear decay over the last 20%: ends on a settled model
    weight_decay: float = 0.01
    dropout: float = 0.0
    max_new_tokens: int = 128
    eval_batch_size: int = 1

    def __post_init__(self):
        if self.task == "gsm8k":
            if self.tokenizer == "digits":
                raise ValueError("task='gsm8k' is text: use a BPE tokenizer such as tokenizer='gpt2' (the paper preset)")
        else:
            parse_task(self.task)
            if self.train_file or self.valid_file:
                raise ValueError("train_file/valid_file are for task='gsm8k'; multiplication data is generated")
        for name in ("num_train", "num_test", "batch_size", "num_epochs", "eval_batch_size"):
            check_positive(name, getattr(self, name))

    def train_config(self, seed: int, device: str, world_size: int = 1, num_examples: int | None = None) -> TrainConfig:
        """``num_examples`` (default ``num_train``) is the real training-set size: a GSM8K file may be smaller."""
        steps = math.ceil((num_examples or self.num_train) * self.num_epochs / (self.batch_size * world_size))
        return TrainConfig(
            max_steps=steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=min(self.warmup_steps, steps - 1),
            schedule=self.schedule, weight_decay=self.weight_decay, seed=seed, device=device,
            log_every=max(1, min(25, steps // 20)), checkpoint_every=max(50, steps // 10),
        )


PRESETS = {
    # CI: seconds; proves the pipeline, not the result.
    "smoke": BaselineConfig(task="2x2", num_train=512, num_valid=16, num_test=16, batch_size=32, warmup_steps=2,
                            max_new_tokens=32),
    # 2 CPU cores, ~5 minutes for both models: explicit CoT solves 3x3 (100%), no CoT does not (0%).
    "tiny": BaselineConfig(),
    # Deng et al. 2023: pretrained GPT-2 small, 808k 4x4 problems, 1 epoch, lr 5e-5, batch 32, no warmup.
    "paper": BaselineConfig(task="4x4", model="gpt2", tokenizer="gpt2", num_train=808_000, num_valid=1000,
                            num_test=1000, batch_size=32, lr=5e-5, warmup_steps=0, schedule="constant", dropout=0.1),
}


def get_config(preset: str, **overrides) -> BaselineConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it).

    ``paper`` with ``task='gsm8k'`` trains 15 epochs (the reference maintainer's advice for the GSM8K teacher)
    and tests on all 1,319 test problems."""
    if preset == "paper" and overrides.get("task") == "gsm8k":
        overrides.setdefault("num_epochs", 15)
        overrides.setdefault("num_test", 1319)  # the whole GSM8K test set
    return from_preset(PRESETS, preset, **overrides)


def prepare_data(config: BaselineConfig, seed: int, data_dir: str | Path | None = None) -> MultiplicationSplits | GSM8KSplits:
    """Seeded disjoint splits for ``config.task``, saved in the published text format under ``data_dir``.

    Multiplication is generated; GSM8K is read from ``train_file``/``valid_file``/``test_file`` or the hub."""
    if config.task == "gsm8k":
        splits = load_gsm8k_splits(config.train_file, config.valid_file, config.test_file, config.num_valid)
        splits = GSM8KSplits(splits.train[: config.num_train], splits.valid, splits.test[: config.num_test])
        if data_dir is not None:
            for name in ("train", "valid", "test"):
                write_examples(Path(data_dir) / f"{name}.txt", getattr(splits, name))
        return splits
    n_digits = parse_task(config.task)
    test: list[Example] | None = read_examples(config.test_file) if config.test_file else None
    exclude = [parse_operands(e.question) for e in test] if test else []
    splits = make_splits(n_digits, config.num_train, config.num_valid, 0 if test else config.num_test, seed, exclude)
    if test:
        splits = MultiplicationSplits(n_digits, splits.train, splits.valid, test[: config.num_test])
    if data_dir is not None:
        for name in ("train", "valid", "test"):
            write_examples(Path(data_dir) / f"{name}.txt", getattr(splits, name))
    return splits


def train_baseline(
    method: str,
    train_examples: list[Example],
    config: BaselineConfig,
    output_dir: str | Path,
    seed: int = 0,
    device: str = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrainResult]:
    """Train the ``no_cot`` or ``explicit_cot`` model; resumes from ``output_dir`` and saves the model there."""
    check_choice("method", method, METHODS)
    fmt, _ = METHODS[method]
    tokenizer = load_tokenizer(config.tokenizer)
    model = build_model(config.model, tokenizer=tokenizer, dropout=config.dropout)
    dataset = encode_examples(tokenizer, train_examples, fmt)
    launch = launch_info()
    result = train(
        model, dataset, config.train_config(seed, device, launch.world_size, len(dataset)), lambda b: collate(b, tokenizer.pad_token_id),
        output_dir=output_dir,
    )
    if launch.is_main:
        model.save_pretrained(Path(output_dir) / "model")
        tokenizer.save_pretrained(Path(output_dir) / "model")
        (Path(output_dir) / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    return result.model, tokenizer, result


def trained_with(output_dir: str | Path, config: BaselineConfig) -> bool:
    """Whether ``output_dir`` holds a finished baseline trained with exactly ``config`` (so it can be reused)."""
    path = Path(output_dir) / CONFIG_FILE
    return path.is_file() and json.loads(path.read_text()) == asdict(config) and (Path(output_dir) / "model").is_dir()


def evaluate_baseline(
    method: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example], config: BaselineConfig,
    batch_size: int | None = None,
) -> EvalResult:
    """Accuracy and throughput with the paper's protocol (batch size 1 unless ``batch_size`` is given)."""
    check_choice("method", method, METHODS)
    _, separators = METHODS[method]
    return evaluate(model, tokenizer, examples, separators, batch_size or config.eval_batch_size, config.max_new_tokens)


def main(argv: list[str] | None = None) -> None:
    """Train one baseline from the command line, e.g. on 8 GPUs:
    ``torchrun --nproc_per_node=8 -m reasoning_lib.baselines --preset paper --method explicit_cot``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--method", default="explicit_cot", choices=sorted(METHODS))
    parser.add_argument("--task", default=None)
    parser.add_argument("--output-dir", default="outputs/01_multiplication_baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    config = get_config(args.preset, **({"task": args.task} if args.task else {}))
    from .chapter import resolve_output_dir

    out = resolve_output_dir(args.output_dir)
    splits = prepare_data(config, args.seed, data_dir=out / "data" if launch_info().is_main else None)
    model, tokenizer, _ = train_baseline(args.method, splits.train, config, out / args.method, args.seed, args.device)
    if launch_info().is_main:
        result = evaluate_baseline(args.method, model, tokenizer, splits.test, config)
        print(f"{args.method}: accuracy {result.accuracy:.3f}, {result.throughput:.1f} examples/s at batch size 1")


if __name__ == "__main__":
    main()
