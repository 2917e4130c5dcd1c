"""GLUE fine-tuning and evaluation of a distilled student, scored with the metric the paper reports per task.

Wu et al. 2022 ("Causal Distillation for Language Models", NAACL) evaluate their general-distilled students on the
GLUE dev sets (Wang et al. 2019) after fine-tuning each task with Hugging Face's ``run_glue.py``, as the reference
README runs it (``frankaging/Causal-Distill``): sequences of at most 128 tokens, batch 32, lr 2e-5, 3 epochs,
linear decay without warmup, no weight decay. Their table (DistilBERT's, Sanh et al. 2019) reports Matthews
correlation for CoLA, F1 for MRPC and QQP, Spearman correlation for STS-B and accuracy for the rest, on
MNLI's matched dev set, and averages the eight tasks without WNLI. Each task also reports its secondary metrics
(accuracy for CoLA, MRPC and QQP, Pearson for STS-B).

Data: the hub's ``nyu-mll/glue`` configurations, or local files with the hub's columns (``sentence`` / ``sentence1``,
``sentence2`` / ``question1``, ``question2`` / ``premise``, ``hypothesis`` / ``question``, ``sentence``, and
``label``) as ``.tsv``, ``.jsonl``/``.json``, ``.parquet`` or ``.csv``, one file per split, found as
``<data_dir>/<task>/<split>.<ext>``. The README's command runs ``run_glue.py`` on four visible GPUs, which the
Hugging Face trainer turns into a batch of 4 x 32; the batch here is the stated 32.
"""
from __future__ import annotations

import json
import math
import os
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from ..config import check_choice, check_positive, check_range, from_preset
from ..models import build_model
from ..run_settings import num_steps, train_settings
from ..runtime import autocast, launch_info, resolve_device
from ..train import TrainConfig, finished_run, mark_finished, train
from .general import FILE_BUILDERS, load_local


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its text columns, dev split, number of outputs (1: regression) and headline metric."""

    fields: tuple[str, ...]
    eval_split: str
    num_labels: int
    metric: str


GLUE_TASKS = {
    "cola": GlueTask(("sentence",), "validation", 2, "matthews"),
    "sst2": GlueTask(("sentence",), "validation", 2, "accuracy"),
    "mrpc": GlueTask(("sentence1", "sentence2"), "validation", 2, "f1"),
    "qqp": GlueTask(("question1", "question2"), "validation", 2, "f1"),
    "stsb": GlueTask(("sentence1", "sentence2"), "validation", 1, "spearman"),
    "mnli": GlueTask(("premise", "hypothesis"), "validation_matched", 3, "accuracy"),
    "qnli": GlueTask(("question", "sentence"), "validation", 2, "accuracy"),
    "rte": GlueTask(("sentence1", "sentence2"), "validation", 2, "accuracy"),
    "wnli": GlueTask(("sentence1", "sentence2"), "validation", 2, "accuracy"),
}
PAPER_TASKS = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb")  # the table's columns, WNLI left out
DISPLAY = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
           "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
# GLUE dev scores (x100) of 6-block students, from the reference repository's README; not reproduced here.
REFERENCE_GLUE = {
    "DistilBERT, 3.3B tokens (Sanh et al. 2019)": {"cola": 51.30, "mnli": 82.10, "mrpc": 87.50, "qnli": 89.20,
                                                    "qqp": 88.50, "rte": 59.90, "sst2": 91.30, "stsb": 86.90},
    "standard distillation, WikiText-103 (reference run)": {"cola": 40.43, "mnli": 78.95, "mrpc": 87.45,
                                                             "qnli": 84.76, "qqp": 84.96, "rte": 60.10,
                                                             "sst2": 89.38, "stsb": 80.40},
    "DIITO, WikiText-103 (reference run)": {"cola": 45.17, "mnli": 79.68, "mrpc": 88.18, "qnli": 85.83,
                                             "qqp": 85.31, "rte": 60.94, "sst2": 90.32, "stsb": 81.69},
}


# ---------------------------------------------------------------------- metrics
def _arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1 or not len(p):
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must be two equal-length non-empty 1-d arrays")
    return p, y


def accuracy(predictions, labels) -> float:
    """Fraction of exact matches."""
    p, y = _arrays(predictions, labels)
    return float((p == y).mean())


def f1_score(predictions, labels, positive: int = 1) -> float:
    """F1 of the ``positive`` class (MRPC's paraphrases, QQP's duplicates); 0 when it is never predicted nor true."""
    p, y = _arrays(predictions, labels)
    tp = int(((p == positive) & (y == positive)).sum())
    predicted, actual = int((p == positive).sum()), int((y == positive).sum())
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation (Gorodkin's K-class form; the usual one for two classes); 0 when undefined."""
    p, y = _arrays(predictions, labels)
    classes = np.union1d(p, y)
    confusion = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=np.float64)
    t, q, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - q @ q) * (s * s - t @ t))
    return float((c * s - t @ q) / denominator) if denominator else 0.0


def pearson(x, y) -> float:
    """Pearson correlation; 0 when either side is constant."""
    a, b = (v.astype(np.float64) for v in _arrays(x, y))
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denominator) if denominator else 0.0


def average_ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, groups = np.unique(x, return_inverse=True)
    return (np.bincount(groups, ranks) / np.bincount(groups))[groups]


def spearman(x, y) -> float:
    """Spearman correlation: Pearson's between the average ranks."""
    a, b = _arrays(x, y)
    return pearson(average_ranks(a), average_ranks(b))


def task_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Every metric GLUE reports for ``task`` (classes predicted, or STS-B scores)."""
    check_choice("task", task, GLUE_TASKS)
    if task == "stsb":
        return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
    metrics = {"accuracy": accuracy(predictions, labels)}
    if task == "cola":
        metrics["matthews"] = matthews_corrcoef(predictions, labels)
    if task in ("mrpc", "qqp"):
        metrics["f1"] = f1_score(predictions, labels)
    return metrics


def headline(task: str, metrics: dict) -> float:
    """The score the paper's table shows for ``task``."""
    return metrics[GLUE_TASKS[task].metric]


def glue_table(results: dict[str, dict[str, dict]], reference: bool = False):
    """A table of students (rows) by task (columns, the table's metric x 100) with the average of the tasks present;
    ``results`` maps a student's name to ``{task: metrics}``. ``reference`` adds the reference README's rows."""
    import pandas as pd

    rows = {}
    for name, by_task in results.items():
        rows[name] = {task: 100 * headline(task, metrics) for task, metrics in by_task.items() if metrics}
    if reference:
        rows |= REFERENCE_GLUE
    tasks = [t for t in (*PAPER_TASKS, "wnli") if any(t in r for r in rows.values())]
    frame = pd.DataFrame([[r.get(t, float("nan")) for t in tasks] for r in rows.values()], index=list(rows),
                         columns=[DISPLAY[t] for t in tasks])
    scored = [DISPLAY[t] for t in tasks if t != "wnli"]
    frame.insert(0, "average", frame[scored].mean(axis=1))
    return frame.round(2)


# ---------------------------------------------------------------------- data
def glue_files(task: str, data_dir: str | os.PathLike) -> dict[str, Path]:
    """Split -> local file of ``task`` under ``<data_dir>/<task>/`` (``train.tsv``, ``validation.jsonl``, …)."""
    check_choice("task", task, GLUE_TASKS)
    folder = Path(data_dir) / task
    found = {}
    for split in ("train", GLUE_TASKS[task].eval_split):
        matches = sorted(p for p in folder.glob(f"{split}.*") if p.suffix.lower() in FILE_BUILDERS)
        if len(matches) > 1:
            raise ValueError(f"{folder} holds several {split} files {[m.name for m in matches]}: keep one")
        if matches:
            found[split] = matches[0]
    missing = {"train", GLUE_TASKS[task].eval_split} - set(found)
    if missing:
        raise FileNotFoundError(f"{folder} has no {sorted(missing)} file; expected e.g. {folder}/train.tsv and "
                                f"{folder}/{GLUE_TASKS[task].eval_split}.tsv with the hub's columns "
                                f"{[*GLUE_TASKS[task].fields, 'label']}")
    return found


def load_glue_splits(task: str, data_dir: str | os.PathLike | None = None) -> dict:
    """``{"train", <dev split>}`` -> ``datasets.Dataset`` of ``task``, from local files or the hub's ``nyu-mll/glue``."""
    check_choice("task", task, GLUE_TASKS)
    wanted = ("train", GLUE_TASKS[task].eval_split)
    if data_dir is not None:
        return {split: load_local([path]) for split, path in glue_files(task, data_dir).items()}
    from datasets import load_dataset

    try:
        data = load_dataset("nyu-mll/glue", task)
    except Exception as err:  # datasets raises several types when offline
        offline = " (HF_DATASETS_OFFLINE=1: the hub is off; pass data_dir= with local copies)" \
            if os.environ.get("HF_DATASETS_OFFLINE") == "1" else ""
        raise FileNotFoundError(f"could not load GLUE {task!r}: {err}{offline}") from None
    return {split: data[split] for split in wanted}


def encode_glue(task: str, rows, tokenizer, max_length: int = 128) -> list[dict]:
    """``{"input_ids", "token_type_ids", "label"}`` per row: ``[CLS] a [SEP] (b [SEP])``, truncated to ``max_length``."""
    spec = GLUE_TASKS[task]
    if isinstance(rows, list):  # a list of row dicts
        rows = {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}
    columns = list(rows.column_names) if hasattr(rows, "column_names") else list(rows)
    missing = [c for c in (*spec.fields, "label") if c not in columns]
    if missing:
        raise ValueError(f"GLUE {task} rows have columns {columns}; missing {missing} (the hub's names)")
    firsts = [str(t) for t in rows[spec.fields[0]]]
    seconds = [str(t) for t in rows[spec.fields[1]]] if len(spec.fields) > 1 else None
    labels = [float(y) for y in rows["label"]] if spec.num_labels == 1 else [int(y) for y in rows["label"]]
    if spec.num_labels > 1 and any(not 0 <= y < spec.num_labels for y in labels):
        bad = next(y for y in labels if not 0 <= y < spec.num_labels)
        raise ValueError(f"GLUE {task} label {bad} is not a class in [0, {spec.num_labels}) (a test split has -1)")
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return [{"input_ids": ids, "token_type_ids": tt, "label": y} for ids, tt, y in zip(enc["input_ids"], types, labels)]


def load_glue_task(task: str, tokenizer, data_dir: str | os.PathLike | None = None, max_length: int = 128,
                   max_train: int | None = None, max_eval: int | None = None,
                   seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, dev)`` examples of ``task``, encoded; ``max_train`` keeps a seeded random subset (the first N
    would be an ordered slice of some tasks), ``max_eval`` the first N of the dev set."""
    splits = load_glue_splits(task, data_dir)
    train_set = encode_glue(task, splits["train"], tokenizer, max_length)
    eval_set = encode_glue(task, splits[GLUE_TASKS[task].eval_split], tokenizer, max_length)
    if max_train and max_train < len(train_set):
        train_set = random.Random(seed).sample(train_set, max_train)
    return train_set, eval_set[:max_eval] if max_eval else eval_set


def glue_collate(rows: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch; float labels for regression (STS-B), class indices otherwise."""
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["token_type_ids"]), 1
    regression = isinstance(rows[0]["label"], float)
    labels = torch.tensor([r["label"] for r in rows], dtype=torch.float32 if regression else torch.long)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------------- fine-tuning
def forward_inputs(model: torch.nn.Module, batch: dict) -> dict:
    """The inputs the classifier takes: DistilBERT has no token-type table, so it gets no ``token_type_ids``."""
    config = getattr(getattr(model, "module", model), "config", None)
    keys = ("input_ids", "attention_mask") + (("token_type_ids",) if getattr(config, "type_vocab_size", 0) else ())
    return {k: batch[k] for k in keys if k in batch}


def glue_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy, or mean squared error for a one-output (regression) head; fp32."""
    logits = model(**forward_inputs(model, batch)).logits.float()
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), batch["labels"].float())
    return F.cross_entropy(logits, batch["labels"])


@torch.no_grad()
def predict_glue(model: PreTrainedModel, examples: list[dict], batch_size: int = 128) -> np.ndarray:
    """Predicted classes (or STS-B scores) of ``examples``, under the training precision."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in glue_collate(examples[start:start + batch_size]).items()}
        with autocast(device):
            logits = model(**forward_inputs(model, batch)).logits.float()
        out.append((logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1)).cpu())
    return torch.cat(out).numpy()


def evaluate_glue(model: PreTrainedModel, task: str, examples: list[dict]) -> dict[str, float]:
    """``task``'s metrics of ``model`` on ``examples`` (its dev set)."""
    labels = np.array([e["label"] for e in examples])
    return task_metrics(task, predict_glue(model, examples), labels)


@dataclass(frozen=True)
class GlueConfig:
    """Which tasks, and how each is fine-tuned (``run_glue.py``'s settings as the reference README runs it)."""

    tasks: tuple[str, ...] = PAPER_TASKS
    max_length: int = 128
    batch_size: int = 32  # global
    micro_batch_size: int | None = None
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_fraction: float = 0.0
    max_grad_norm: float = 1.0
    max_train: int | None = None  # a seeded random subset of each train split
    max_eval: int | None = None  # the first N dev examples

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("tasks is empty; name GLUE tasks, e.g. ('sst2', 'mrpc')")
        for task in self.tasks:
            check_choice("task", task, GLUE_TASKS)
        for name in ("max_length", "batch_size", "epochs", "lr", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        for name in ("micro_batch_size", "max_steps", "max_train", "max_eval"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)

    def train_config(self, num_examples: int, seed: int, device: str, world_size: int | None = None) -> TrainConfig:
        """The shared loop's settings for one task of ``num_examples`` training examples."""
        steps = self.max_steps or num_steps(self.batch_size, num_examples, self.epochs)
        return train_settings(global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, steps=steps,
                              world_size=world_size, lr=self.lr, weight_decay=self.weight_decay,
                              warmup_steps=math.ceil(self.warmup_fraction * steps), schedule="linear",
                              max_grad_norm=self.max_grad_norm, seed=seed, device=device)


GLUE_PRESETS = {
    "smoke": GlueConfig(tasks=("sst2",), max_train=64, max_eval=32, max_steps=4, batch_size=16, lr=1e-4),
    "tiny": GlueConfig(tasks=("cola", "mrpc", "rte", "sst2", "stsb"), max_train=2000, max_eval=500, epochs=1.0,
                       lr=5e-5),
    "paper": GlueConfig(),
}
# A CPU check at the preset's shapes: three tasks that between them take every path (one sentence and Matthews
# correlation; sentence pairs, three classes and MNLI's matched dev split; regression), two steps of 4 on 16 examples.
GLUE_DRY_RUN = {"tasks": ("cola", "mnli", "stsb"), "max_train": 16, "max_eval": 8, "batch_size": 4,
                "micro_batch_size": 2, "max_steps": 2}


def get_glue_config(preset: str, dry_run: bool = False, **overrides) -> GlueConfig:
    """The named GLUE preset with ``overrides``; ``dry_run`` applies ``GLUE_DRY_RUN`` first."""
    if dry_run:
        overrides = {**GLUE_DRY_RUN, **overrides}
    return from_preset(GLUE_PRESETS, preset, **overrides)


METRICS_FILE = "glue_metrics.json"


@contextmanager
def _quiet_loading():
    """Loading a masked LM into a classifier is expected to drop its MLM head and start a new classifier:
    transformers' table of those weights would fill every chapter cell, so it is silenced while loading."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_classifier(student_dir: str | os.PathLike, task: str) -> PreTrainedModel:
    """The distilled student saved in ``student_dir`` with a fresh head for ``task`` (1 output for STS-B)."""
    with _quiet_loading():
        return build_model(str(student_dir), arch="bert", num_labels=GLUE_TASKS[task].num_labels)


def finetune_glue(student_dir: str | os.PathLike, task: str, tokenizer, train_set: list[dict], eval_set: list[dict],
                  config: GlueConfig, output_dir: str | os.PathLike, seed: int = 0,
                  device: str = "auto") -> dict[str, float]:
    """Fine-tune the student saved in ``student_dir`` on ``task`` and return its dev metrics (main process; {} on the
    others). A finished run with the same settings returns its recorded metrics without training."""
    check_choice("task", task, GLUE_TASKS)
    folder = Path(output_dir)
    tuning = {k: v for k, v in asdict(config).items() if k != "tasks"}
    settings = {"stage": f"glue-{task}", "student": str(Path(student_dir).resolve()), "seed": seed,
                "num_train": len(train_set), "num_eval": len(eval_set), **tuning}
    if finished_run(folder, settings) and (folder / METRICS_FILE).is_file():
        return json.loads((folder / METRICS_FILE).read_text())
    model = load_classifier(student_dir, task)
    pad = tokenizer.pad_token_id or 0
    train_config = config.train_config(len(train_set), seed, device, launch_info().world_size)
    result = train(model, train_set, train_config, lambda rows: glue_collate(rows, pad), glue_loss, output_dir=folder,
                   settings=settings)
    if not launch_info().is_main:
        return {}
    metrics = evaluate_glue(result.model.to(resolve_device(device)), task, eval_set)
    result.model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    mark_finished(folder, settings)
    return metrics


def run_glue(student_dir: str | os.PathLike, tokenizer, config: GlueConfig, output_dir: str | os.PathLike,
             data_dir: str | os.PathLike | None = None, seed: int = 0, device: str = "auto",
             tasks: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Fine-tune and score the student on every task of ``config`` (or ``tasks``), each in ``<output_dir>/<task>``."""
    results = {}
    for task in tasks or config.tasks:
        train_set, eval_set = load_glue_task(task, tokenizer, data_dir, config.max_length, config.max_train,
                                             config.max_eval, seed)
        results[task] = finetune_glue(student_dir, task, tokenizer, train_set, eval_set, config,
                                      Path(output_dir) / task, seed, device)
    return results


__all__ = [
    "GlueTask", "GLUE_TASKS", "PAPER_TASKS", "REFERENCE_GLUE", "accuracy", "f1_score", "matthews_corrcoef", "pearson",
    "spearman", "average_ranks", "task_metrics", "headline", "glue_table", "glue_files", "load_glue_splits",
    "encode_glue", "load_glue_task", "glue_collate", "forward_inputs", "glue_loss", "predict_glue", "evaluate_glue",
    "GlueConfig", "GLUE_PRESETS", "get_glue_config", "load_classifier", "finetune_glue", "run_glue",
]
