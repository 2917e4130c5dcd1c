"""Chapter 1: the two baselines of the ICoT-KD paper on multiplication (Deng et al. 2023, Table 2).

* **no CoT** — a GPT-2 trained on `` {x} E {ans} E``: it must produce the product in one go;
* **explicit CoT** — a GPT-2 trained on `` {x} E {cot} E {ans} E``: it writes the partial products first.

Both use the shared data, tokenizer, model builder, training loop and evaluation. The explicit-CoT model
saved here is the teacher of the implicit-CoT chapter.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import check_choice, check_positive, from_preset
from .data import Example, collate, data_digest, encode_examples, make_splits, parse_task, read_examples, write_examples
from .data.gsm8k import GSM8KSplits, load_gsm8k_splits
from .data.multiplication import MultiplicationSplits, parse_operands
from .evaluate import EvalResult, evaluate
from .models import build_model
from .run_record import file_digest, test_set_name
from .run_settings import train_settings
from .runtime import launch_info, resolve_device, seed_everything
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
    valid_file: str | None = None  # e.g. the published valid.txt: the valid set, excluded from training
    num_epochs: float = 1.0
    batch_size: int = 128  # global: examples per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass (memory); None: the whole per-process share
    pretrained: bool = True  # a hub model's weights; False: random init at its shapes (the paper dry run)
    select_best: bool = False  # validate each epoch and keep the best (the reference's checkpoint choice)
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
            if self.train_file:
                raise ValueError("train_file is for task='gsm8k'; multiplication training data is generated")
        for name in ("num_train", "num_test", "batch_size", "num_epochs", "eval_batch_size"):
            check_positive(name, getattr(self, name))
        check_positive("num_valid", self.num_valid, allow_zero=True)
        if self.select_best and not self.num_valid:
            raise ValueError("select_best=True validates each epoch: it needs num_valid > 0")

    def train_config(self, seed: int, device: str, num_examples: int | None = None, world_size: int | None = None) -> TrainConfig:
        """The shared loop's settings (``run_settings.train_settings``): ``num_examples`` (default ``num_train``) is
        the training set actually loaded (a GSM8K file may be smaller); the same steps on any number of processes."""
        examples = num_examples or self.num_train
        settings = train_settings(
            global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, num_examples=examples,
            epochs=self.num_epochs, world_size=world_size, lr=self.lr, warmup_steps=self.warmup_steps,
            schedule=self.schedule, weight_decay=self.weight_decay, seed=seed, device=device,
        )
        if self.select_best:  # once per epoch, as the reference picks its checkpoint
            settings = replace(settings, validate_every=max(1, round(examples / self.batch_size)))
        return settings


PRESETS = {
    # CI: seconds; proves the pipeline, not the result.
    "smoke": BaselineConfig(task="2x2", num_train=512, num_valid=16, num_test=16, batch_size=32, warmup_steps=2,
                            max_new_tokens=32),
    # 2 CPU cores, about 5 minutes for both models: 3x3, where the chain of thought should make the difference.
    "tiny": BaselineConfig(),
    # Deng et al. 2023: pretrained GPT-2 small, 808k 4x4 problems, 1 epoch, lr 5e-5, batch 32, no warmup.
    # Validate on 1,000 problems each epoch and keep the best (the reference's selection).
    "paper": BaselineConfig(task="4x4", model="gpt2", tokenizer="gpt2", num_train=808_000, num_valid=1000,
                            num_test=1000, batch_size=32, micro_batch_size=32, lr=5e-5, warmup_steps=0,
                            schedule="constant", dropout=0.1, select_best=True),
}
# The paper dry run: everything of the paper path (model shapes, tokenizer, formats, hub-layout loading, the
# global batch, validation, save/reload/evaluate) but random init, a few optimizer steps at a small micro-batch,
# and small data and test counts. Proves the full-scale path on a CPU.
DRY_RUN = {"pretrained": False, "num_train": 64, "num_valid": 2, "num_test": 2, "num_epochs": 1.0, "micro_batch_size": 8,
           "max_new_tokens": 24}


def get_config(preset: str, dry_run: bool = False, **overrides) -> BaselineConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it).

    ``paper`` with ``task='gsm8k'`` trains 15 epochs (the reference maintainer's advice for the GSM8K teacher)
    and tests on all 1,319 test problems. ``dry_run`` applies ``DRY_RUN`` on top (overrides still win)."""
    if preset == "paper" and overrides.get("task") == "gsm8k":
        overrides.setdefault("num_epochs", 15)
        overrides.setdefault("num_test", 1319)  # the whole GSM8K test set
    if preset == "paper" and overrides.get("model") and overrides.get("tokenizer") is None:
        overrides["tokenizer"] = overrides["model"]  # another GPT-2 (gpt2-medium, a local folder) brings its tokenizer
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    return from_preset(PRESETS, preset, **{k: v for k, v in overrides.items() if v is not None})


def run_settings(method: str, config: BaselineConfig, train_examples: list[Example]) -> dict:
    """What defines a baseline run besides the loop's settings: method, task, data, model, tokenizer, dropout."""
    return {"method": method, "task": config.task, "train_data": data_digest(train_examples), "model": config.model,
            "tokenizer": config.tokenizer, "pretrained": config.pretrained, "dropout": config.dropout,
            "select_best": config.select_best}


def prepare_data(config: BaselineConfig, seed: int, data_dir: str | Path | None = None) -> MultiplicationSplits | GSM8KSplits:
    """Seeded disjoint splits for ``config.task``, saved in the published text format under ``data_dir``.

    Multiplication is generated; GSM8K is read from ``train_file``/``valid_file``/``test_file`` or the hub."""
    if config.task == "gsm8k":
        splits = load_gsm8k_splits(config.train_file, config.valid_file, config.test_file, config.num_valid)
        splits = GSM8KSplits(splits.train[: config.num_train], splits.valid, splits.test[: config.num_test])
        if data_dir is not None:
            save_splits(data_dir, splits)
        return splits
    n_digits = parse_task(config.task)
    test = _published(config.test_file, n_digits)
    valid = _published(config.valid_file, n_digits)
    exclude = [parse_operands(e.question) for e in (test or []) + (valid or [])]  # every published problem
    splits = make_splits(n_digits, config.num_train, 0 if valid is not None else config.num_valid,
                         0 if test is not None else config.num_test, seed, exclude)
    splits = MultiplicationSplits(n_digits, splits.train, splits.valid if valid is None else valid[: config.num_valid],
                                  splits.test if test is None else test[: config.num_test])
    if data_dir is not None:
        save_splits(data_dir, splits)
    return splits


def save_splits(data_dir: str | Path, splits) -> None:
    """Write train/valid/test in the published format; a folder already holding other problems is refused, not
    overwritten (it belongs to another run's settings, whose models were trained on it)."""
    files = {name: Path(data_dir) / f"{name}.txt" for name in ("train", "valid", "test")}
    for name, path in files.items():
        lines = "".join(e.to_line() + "\n" for e in getattr(splits, name))
        if path.is_file() and path.read_text(encoding="utf-8") != lines:
            raise ValueError(f"{path} holds other {name} problems than these settings make (another seed, task or "
                             "size wrote it): use another output_dir, or delete that folder to start again")
    for name, path in files.items():
        if not path.is_file():
            write_examples(path, getattr(splits, name))


def _published(path: str | None, n_digits: int) -> list[Example] | None:
    """The problems of a published file, which must all be ``n_digits`` x ``n_digits``."""
    if not path:
        return None
    examples = read_examples(path)
    if not examples:
        raise ValueError(f"{path} holds no examples: give a published test/valid file, or none")
    for line, example in enumerate(examples, start=1):
        parse_operands(example.question)  # digits only
        widths = [len(side.split()) for side in example.question.split("*")]
        if widths != [n_digits, n_digits]:
            raise ValueError(f"{path}:{line} is a {widths[0]}x{widths[-1]} problem but the task is "
                             f"{n_digits}x{n_digits}: pass the file of the same task")
    return examples


def train_baseline(
    method: str,
    train_examples: list[Example],
    config: BaselineConfig,
    output_dir: str | Path,
    seed: int = 0,
    device: str = "auto",
    valid_examples: list[Example] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, TrainResult]:
    """Train the ``no_cot`` or ``explicit_cot`` model; resumes from ``output_dir`` and saves the model there.

    A finished run with the same settings is reloaded (zero steps); with ``config.select_best`` the model is the
    epoch with the best accuracy on ``valid_examples``."""
    check_choice("method", method, METHODS)
    fmt, _ = METHODS[method]
    tokenizer = load_tokenizer(config.tokenizer)
    seed_everything(seed)  # the same initial weights from the chapter, the CLI or torchrun
    model = build_model(config.model, tokenizer=tokenizer, dropout=config.dropout, pretrained=config.pretrained)
    dataset = encode_examples(tokenizer, train_examples, fmt)
    validate = None
    if config.select_best:
        if not valid_examples:
            raise ValueError("select_best=True needs valid_examples (the valid split of prepare_data)")
        validate = lambda m: evaluate_baseline(method, m, tokenizer, valid_examples, config, batch_size=64).accuracy  # noqa: E731
    result = train(
        model, dataset, config.train_config(seed, device, len(dataset)), lambda b: collate(b, tokenizer.pad_token_id),
        output_dir=output_dir, settings=run_settings(method, config, train_examples), validate=validate,
    )
    if launch_info().is_main and result.steps_trained:
        model.save_pretrained(Path(output_dir) / "model")
        tokenizer.save_pretrained(Path(output_dir) / "model")
        (Path(output_dir) / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2))
    return result.model, tokenizer, result


# Settings that only change how a model is tested, not which model is trained.
EVALUATION_FIELDS = ("num_test", "max_new_tokens", "eval_batch_size")


def trained_with(output_dir: str | Path, config: BaselineConfig) -> bool:
    """Whether ``output_dir`` holds a finished baseline trained with ``config``'s training settings (so it can be
    reused); ``train_baseline`` itself checks the data too before it reloads."""
    path = Path(output_dir) / CONFIG_FILE
    if not (path.is_file() and (Path(output_dir) / "model").is_dir()):
        return False
    saved, now = json.loads(path.read_text()), json.loads(json.dumps(asdict(config)))
    return all(saved.get(k) == v for k, v in now.items() if k not in EVALUATION_FIELDS)


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
    parser.add_argument("--dry-run", action="store_true", help="the paper path at its real shapes, a few steps (CPU)")
    parser.add_argument("--method", default="explicit_cot", choices=sorted(METHODS))
    add_data_arguments(parser)
    parser.add_argument("--output-dir", default="outputs/01_multiplication_baselines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    config = get_config(args.preset, dry_run=args.dry_run, **data_overrides(args))
    from .chapter import resolve_output_dir

    seed_everything(args.seed)
    out = resolve_output_dir(args.output_dir)
    splits = prepare_data(config, args.seed, data_dir=out / "data" if launch_info().is_main else None)
    if args.preset == "paper":  # print the run's resource plan; on a GPU it does not fit, refuse before training
        from .resources import announce, run_name

        loop = config.train_config(args.seed, args.device, len(splits.train))
        announce(run_name("ch1", args.method, config.task, config.model), resolve_device(args.device),
                 launch_info().world_size, loop.batch_size, launch_info().is_main)
    model, tokenizer, run = train_baseline(args.method, splits.train, config, out / args.method, args.seed, args.device,
                                           splits.valid)
    if launch_info().is_main:
        result = evaluate_baseline(args.method, model, tokenizer, splits.test, config)
        print(f"{args.method}: trained {run.steps_trained} steps; accuracy {result.accuracy:.3f} on the "
              f"{test_set_name(config, args.seed)}, {result.throughput:.1f} examples/s at batch size 1")


def add_data_arguments(parser) -> None:
    """The options a chapter's ``task``/``model``/``*_file`` parameters map to (shared by every trainer's CLI)."""
    parser.add_argument("--task", default=None, help="e.g. 4x4, 5x5 or gsm8k (default: the preset's)")
    parser.add_argument("--model", default=None, help="e.g. gpt2-medium or a local folder (default: the preset's)")
    parser.add_argument("--train-file", default=None, help="GSM8K: a formula-format train file (default: the hub)")
    parser.add_argument("--valid-file", default=None, help="GSM8K: its valid file")
    parser.add_argument("--test-file", default=None, help="a published test file, e.g. test_bigbench.txt")


def data_overrides(args) -> dict:
    """The given ``add_data_arguments`` options as config overrides."""
    names = ("task", "model", "train_file", "valid_file", "test_file")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


if __name__ == "__main__":
    main()
