"""One measurement for every method: the same test problems, the same answer scoring, the same clocks.

``measure`` times a method's ``answer`` function at batch size 1 (the papers' protocol; the first problem is
a warm-up) and over the whole test set in batches, and scores each answer with ``answer_correct``, the book's one
rule (``reasoning_lib.answers``: exact on a product's digit sequence, by value on a GSM8K number).
``run_one`` trains or reloads one (method, task) and writes its ``metrics.json``; ``collect`` reads them back.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import baselines
from ..answers import answers_match, extract_answer
from ..chapter import read_metrics, resolve_output_dir, write_metrics
from ..data.examples import Example
from ..evaluate import evaluate_generator
from ..runtime import resolve_device, seed_everything
from .methods import (TrainedMethod, adopt_runs, autoregressive_config, data_files, diffusion_config,
                      train_autoregressive, train_diffusion)
from .presets import METHODS, FrontierConfig, get_config


answer_correct = answers_match  # the book's one scoring rule (``reasoning_lib.answers``), under chapter 8's name


def measure(trained: TrainedMethod, test: list[Example], batch_size: int, throughput_examples: int,
            device: str | torch.device = "cpu") -> dict:
    """Accuracy over ``test`` (batched) and examples/s at batch size 1 and batched; the clocks of
    ``evaluate_generator`` cover answering and scoring, with the device synchronised before each read."""
    if len(test) < 2:
        raise ValueError("measure() needs at least 2 test problems (the first batch-1 problem is a warm-up)")

    def score(answer: str | None, example: Example) -> bool:
        return answer_correct(answer, extract_answer(example.answer))

    batched = evaluate_generator(trained.answer, test, batch_size, device, score)
    timed = test[: min(throughput_examples, len(test))]
    trained.answer(timed[:1])  # warm-up
    single = evaluate_generator(trained.answer, timed[1:], 1, device, score)
    return {"accuracy": batched.accuracy, "examples_per_s": single.throughput,
            "examples_per_s_batched": batched.throughput, "num_test": len(test), "batch_size": batch_size}


def shared_split(preset: str, task: str, seed: int, files: dict, dry_run: bool = False):
    """(chapter 2's config, its split): the split whose test problems every method is measured on."""
    config = autoregressive_config(preset, task, files, dry_run)
    return config, baselines.prepare_data(config.baseline, seed)


def run_one(method: str, task: str, preset: str = "tiny", output_dir: str | Path = "outputs/08_reasoning_frontier",
            seed: int = 0, device: str = "auto", reuse_dirs: tuple[str, ...] = (), train_file: str | None = None,
            valid_file: str | None = None, test_file: str | None = None, data_dir: str | None = None,
            dry_run: bool = False) -> dict:
    """Train (or reload) ``method`` on ``task`` with the chapters' ``preset`` settings, measure it, and write
    ``<output_dir>/results/<task>/<method>/metrics.json``. ``reuse_dirs``: chapter output folders whose finished
    runs are copied in when their metrics say the same preset and task. ``data_dir``: the published data folder
    (each task's test and valid files). ``dry_run``: the paper path at its real shapes for a few steps (CPU)."""
    frontier = get_config(preset)
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
    out = resolve_output_dir(output_dir)
    runs_dir = out / "runs" / task
    files = data_files(task, train_file, valid_file, test_file, data_dir)
    seed_everything(seed)
    config, splits = shared_split(frontier.method_preset, task, seed, files, dry_run)
    test_set = baselines.test_set_name(config.baseline, seed)
    adopted = adopt_runs(runs_dir, method, [resolve_output_dir(d) for d in reuse_dirs], frontier.method_preset, task,
                         dry_run, test_set)
    if METHODS[method] in ("dot", "dot_mp"):
        diffusion = diffusion_config(frontier.method_preset, task, files, len(splits.train), len(splits.test), dry_run)
        trained = train_diffusion(method, diffusion, splits.test, runs_dir, seed, device, frontier.sc_samples)
    else:
        trained = train_autoregressive(method, config, splits, runs_dir, seed, device)
    seed_everything(seed)
    with torch.no_grad():
        result = measure(trained, splits.test, frontier.eval_batch_size, frontier.throughput_examples, resolve_device(device))
    metrics = {"method": method, "task": task, "preset": preset, "dry_run": dry_run, **result,
               "test_set": test_set, "parameters": trained.parameters,
               "train_sequences": trained.train_sequences, "adopted_runs": adopted,
               "sc_samples": frontier.sc_samples if method.endswith("_sc") else 1}
    write_metrics(resolve_output_dir(out / "results" / task / method), metrics)
    return metrics


def collect(output_dir: str | Path, config: FrontierConfig) -> list[dict]:
    """Every finished run's metrics, in the order of ``config.tasks`` x ``config.methods``; raises naming the
    missing runs."""
    out = resolve_output_dir(output_dir)
    rows, missing = [], []
    for task in config.tasks:
        for method in config.methods:
            folder = out / "results" / task / method
            if (folder / "metrics.json").is_file():
                rows.append(read_metrics(folder))
            else:
                missing.append(f"{task}/{method}")
    if missing:
        raise FileNotFoundError(f"no metrics.json under {out / 'results'} for {missing}: run the sweep first")
    return rows
