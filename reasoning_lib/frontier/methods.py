"""Train (or reload) the model behind each capstone method and wrap it as one interface: a batch of problems in,
their final answers out (the text after ``####``, or None when the model wrote none).

The trainers are the chapters' own (``baselines``, ``implicit_cot``, ``dot``), with the chapters' presets. The
runs of one task live side by side in ``runs_dir`` (``explicit_cot/`` is both a method and the implicit-CoT
teacher; ``dot_sc`` reuses ``dot/``), so every run is trained once and later methods reload it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import baselines, dot
from ..answers import extract_answer
from ..chapter import read_metrics
from ..data.examples import Example
from ..dot.answers import majority_vote
from ..evaluate import generate_text
from ..implicit_cot import generate_implicit, train_coupled, train_emulator, train_student
from ..implicit_cot import presets as implicit_presets
from ..runtime import resolve_device, seed_everything
from .presets import METHODS

# the run folders each trained model needs, in training order
RUN_FOLDERS = {"no_cot": ("no_cot",), "explicit_cot": ("explicit_cot",),
               "implicit_cot": ("explicit_cot", "student", "emulator", "coupled"),
               "dot": ("dot",), "dot_mp": ("dot_mp",)}


@dataclass
class TrainedMethod:
    """A method ready to answer: ``answer(problems)`` → final answers; its size and training budget."""

    method: str
    answer: Callable[[list[Example]], list[str | None]]
    parameters: int
    train_sequences: int  # training sequences seen over all its stages (batch x steps, summed)


# the published data's layout (the implicit-CoT repository's data/ folder): one folder per task
PUBLISHED_FOLDERS = {"4x4": "4_by_4_mult", "5x5": "5_by_5_mult", "gsm8k": "gsm8k"}
PUBLISHED_FILES = {"train_file": ("train.txt",), "valid_file": ("valid.txt",), "test_file": ("test_bigbench.txt", "test.txt")}


def data_files(task: str, train_file: str | None, valid_file: str | None, test_file: str | None,
               data_dir: str | None = None) -> dict:
    """The data files of one task's runs. ``data_dir`` is a folder in the published layout (``4_by_4_mult/``,
    ``5_by_5_mult/``, ``gsm8k/``): each task then tests on its published test set and validates on its valid set.
    Single ``*_file`` paths are GSM8K's (one sweep spans several tasks, so a file must not become every task's)."""
    files = {}
    folder = Path(data_dir) / PUBLISHED_FOLDERS[task] if data_dir and task in PUBLISHED_FOLDERS else None
    if folder is not None and folder.is_dir():
        for key, names in PUBLISHED_FILES.items():
            found = next((folder / n for n in names if (folder / n).is_file()), None)
            if found is not None and not (key == "train_file" and task != "gsm8k"):
                files[key] = str(found)
    if task == "gsm8k":
        given = {"train_file": train_file, "valid_file": valid_file, "test_file": test_file}
        files |= {k: v for k, v in given.items() if v}
    return files


def autoregressive_config(preset: str, task: str, files: dict, dry_run: bool = False) -> implicit_presets.ImplicitCoTConfig:
    """Chapter 2's settings for ``task``: its baseline config trains no-CoT and explicit CoT (the teacher)."""
    return implicit_presets.get_config(preset, task=task, dry_run=dry_run, **files)


def diffusion_config(preset: str, task: str, files: dict, num_train: int, num_test: int,
                     dry_run: bool = False) -> dot.DoTConfig:
    """Chapter 4's settings for ``task``, on the autoregressive methods' training-set size and test-set size."""
    files = {k: v for k, v in files.items() if k != "valid_file"}
    return dot.get_config(preset, dry_run=dry_run, task=task, num_train=num_train, num_test=num_test, **files)


def adopt_runs(runs_dir: Path, method: str, candidates: list[Path], preset: str, task: str, dry_run: bool = False,
               test_set: str | None = None) -> list[str]:
    """Copy finished runs of ``method`` from chapter output folders whose metrics.json says they used the same
    preset, task, dry run and test set (the test set decides which problems training excluded; the trainers then
    reload the runs, and their run records refuse one with other settings). Returns the folders copied. Only the
    newest checkpoint (and the kept best weights) of each run is copied."""
    copied = []
    eligible = []
    for folder in candidates:
        folder = Path(folder)
        if (folder / "metrics.json").is_file():
            recorded = read_metrics(folder)
            same = (recorded.get("preset"), recorded.get("task"), bool(recorded.get("dry_run"))) == (preset, task, dry_run)
            if same and (test_set is None or recorded.get("test_set") == test_set):
                eligible.append(folder)
    for name in RUN_FOLDERS[METHODS[method]]:
        target = runs_dir / name
        if target.exists():
            continue
        for folder in eligible:
            source = next((s for s in (folder / name, folder / "baselines" / name) if (s / "train_config.json").is_file()), None)
            if source is None:
                continue
            checkpoints = sorted(p.name for p in (source / "checkpoints").glob("step-*"))
            old = set(checkpoints[:-1])
            shutil.copytree(source, target, ignore=lambda _, names: [n for n in names if n in old],
                            copy_function=_link_or_copy)
            copied.append(str(source))
            break
    return copied


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows it (an adopted GPT-2 run is gigabytes; every later write replaces
    a file atomically, so the chapter's copy is never changed through the link), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_autoregressive(method: str, config, splits, runs_dir: Path, seed: int, device: str) -> TrainedMethod:
    """``no_cot``, ``explicit_cot`` or ``implicit_cot`` (teacher, student, emulator, then the coupled model)."""
    base = config.baseline

    def baseline(name):
        model, tokenizer, result = baselines.train_baseline(name, splits.train, base, runs_dir / name, seed, device,
                                                            splits.valid)
        return model, tokenizer, base.train_config(seed, device, len(splits.train), world_size=1)

    if method in baselines.METHODS:
        model, tokenizer, train_config = baseline(method)
        model.eval()
        separators = baselines.METHODS[method][1]

        def answer(problems):
            return [extract_answer(t) for t in generate_text(model, tokenizer, problems, separators, base.max_new_tokens)]

        return TrainedMethod(method, answer, _count(model), train_config.max_steps * base.batch_size)

    teacher, tokenizer, teacher_config = baseline("explicit_cot")
    stage = config.stage_config(seed, device, len(splits.train), world_size=1)
    seed_everything(seed)
    student, _ = train_student(teacher, tokenizer, splits.train, base.model, stage, runs_dir / "student", config.delta,
                               splits.valid, base.pretrained)
    seed_everything(seed)
    emulator, _ = train_emulator(teacher, tokenizer, splits.train, base.model, stage, runs_dir / "emulator", config.delta,
                                 config.mixture_size, config.mixture_weight, splits.valid, base.pretrained)
    seed_everything(seed)
    coupled, _ = train_coupled(emulator, student, tokenizer, splits.train, stage, runs_dir / "coupled", config.fix_emulator,
                               splits.valid)
    coupled.eval()

    def answer(problems):
        texts = generate_implicit(coupled.emulator, coupled.student, tokenizer, problems, base.max_new_tokens)
        return [extract_answer(t) for t in texts]

    seen = teacher_config.max_steps * base.batch_size + 3 * stage.max_steps * config.batch_size  # global batches
    return TrainedMethod(method, answer, _count(coupled), seen)


def train_diffusion(method: str, config: dot.DoTConfig, test: list[Example], runs_dir: Path, seed: int, device: str,
                    sc_samples: int) -> TrainedMethod:
    """``dot`` / ``dot_mp`` (one sample per problem) or ``dot_sc`` / ``dot_mp_sc`` (a majority vote over
    ``sc_samples`` samples, drawn as one batch per problem). Refuses a DoT training set that holds a test problem."""
    variant = METHODS[method]
    tokenizer, layout, splits = dot.prepare_data(config, seed)
    leaked = {e.question for e in test} & {e.question for e in splits.train}
    if leaked:
        raise ValueError(f"{len(leaked)} test problems are in DoT's training split (e.g. {sorted(leaked)[0]!r}): "
                         "the autoregressive and diffusion splits disagree; use the same num_train and test_file")
    seed_everything(seed)
    model, _ = dot.train_dot(variant, config, splits.train, tokenizer, layout, runs_dir / variant, seed, device)
    model.to(resolve_device(device)).eval()
    sampler = dot.make_sampler(model, config, tokenizer, layout)
    generator = torch.Generator().manual_seed(seed)
    votes = sc_samples if method.endswith("_sc") else 1

    def answer(problems):
        questions = [p.question for p in problems for _ in range(votes)]
        answers = sampler.generate(variant, questions, config.max_passes, generator).answers
        return [majority_vote(answers[i:i + votes]) for i in range(0, len(answers), votes)]

    seen = config.max_steps * config.batch_size
    return TrainedMethod(method, answer, _count(model), seen)
