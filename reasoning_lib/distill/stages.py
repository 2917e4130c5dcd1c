"""The chapter's runs: data, teacher fine-tuning, KD and DIITO students, all through the shared loop.

Each run lives in its own folder (``model/`` written with ``save_pretrained`` plus ``run_config.json``) and
resumes from its checkpoints; a finished run with the same settings is loaded instead of retrained (with its logged loss history).
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..config import check_choice
from ..models import attention_implementation, load_saved
from ..runtime import launch_info, resolve_device
from ..tokenization import load_tokenizer
from ..train import TrainResult, finished_run, mark_finished, read_log, train
from .data import build_word_tokenizer, collate, load_glue, load_sentiment, subset
from .intervention import model_inputs
from .losses import DistillObjective
from .models import build_student, build_teacher, freeze, layer_mapping
from .presets import DistillConfig

METHODS = ("kd", "diito")


class Trained(tuple):
    """A run's ``(model, history)``, unpacked as a pair; ``steps_trained`` is the optimizer steps this call took
    (0: a finished run was reloaded)."""

    def __new__(cls, model: PreTrainedModel, history: list[dict], steps_trained: int = 0):
        run = super().__new__(cls, (model, history))
        run.steps_trained = steps_trained
        return run

    @property
    def model(self) -> PreTrainedModel:
        return self[0]

    @property
    def history(self) -> list[dict]:
        return self[1]


def prepare_data(config: DistillConfig, seed: int, glue_dir: str | Path | None = None):
    """``(tokenizer, train, test)``: the generated task offline, or a GLUE task from the hub or from local files
    ``<glue_dir>/<task>/<split>.tsv`` (the hub's columns)."""
    if config.task == "sentiment":
        tokenizer = build_word_tokenizer()
        train_set, test_set = load_sentiment(tokenizer, config.num_train, config.num_test, seed)
    else:
        tokenizer = load_tokenizer(str(config.teacher))
        train_set, test_set = load_glue(config.task, tokenizer, config.max_length, config.num_test, glue_dir,
                                        config.max_train, seed)
    return tokenizer, train_set, test_set


def classification_loss(model, batch: dict):
    """Cross-entropy of a sequence classifier (fp32)."""
    return F.cross_entropy(model(**model_inputs(batch)).logits.float(), batch["labels"])


# What defines the teacher's run (the students' settings do not), and what only changes how a model is tested.
TEACHER_FIELDS = ("task", "teacher", "num_train", "max_train", "max_length", "batch_size", "teacher_epochs",
                  "teacher_lr", "weight_decay", "warmup_fraction", "dropout")
EVALUATION_FIELDS = ("num_test", "eval_pairs", "train_sizes")


def _run(model, dataset, train_config, loss_fn, folder: Path, settings: dict, tokenizer) -> TrainResult:
    pad = tokenizer.pad_token_id or 0
    defining = {k: v for k, v in settings.items() if k not in EVALUATION_FIELDS}
    result = train(model, dataset, train_config, lambda b: collate(b, pad), loss_fn, output_dir=folder,
                   settings=defining)
    if launch_info().is_main:
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        mark_finished(folder, settings)
    wait_for_main()
    return result


def wait_for_main() -> None:
    """Under torchrun, hold every process until the main one has saved its run: the next stage may read it from
    disk (the general student's GLUE fine-tuning loads it on every process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def train_teacher(config: DistillConfig, tokenizer, train_set: list[dict], output_dir: str | Path, seed: int = 0,
                  device: str = "auto") -> Trained:
    """Fine-tune (or train from scratch) the teacher classifier; returns it frozen, with its loss history."""
    folder = Path(output_dir)
    settings = {"stage": "teacher", "seed": seed, **{k: getattr(config, k) for k in TEACHER_FIELDS}}
    if finished_run(folder, settings):
        return Trained(freeze(load_saved(str(folder / "model"), arch="bert")), read_log(folder))
    num_labels = 1 + max(e["label"] for e in train_set)
    model = build_teacher(config.teacher, tokenizer, num_labels, config.dropout, config.max_length)
    train_config = config.train_config(len(train_set), config.teacher_epochs, config.teacher_lr, seed, device,
                                       launch_info().world_size)
    result = _run(model, train_set, train_config, classification_loss, folder, settings, tokenizer)
    return Trained(freeze(result.model), result.history, result.steps_trained)


def init_student(config: DistillConfig, teacher: PreTrainedModel) -> PreTrainedModel:
    """The student before distillation: blocks copied from the teacher or a pretrained BERT, or random."""
    if config.student_init == "random":
        random_init = copy.deepcopy(teacher.config)
        random_init.num_hidden_layers = len(config.student_layers)
        return AutoModelForSequenceClassification.from_config(random_init, attn_implementation=attention_implementation())
    source = teacher if config.student_init == "teacher" else build_teacher(config.student_init, num_labels=teacher.config.num_labels)
    return build_student(source, list(config.student_layers))


def distill(method: str, teacher: PreTrainedModel, train_set: list[dict], config: DistillConfig, tokenizer,
            output_dir: str | Path, seed: int = 0, device: str = "auto", size: int | None = None,
            ) -> Trained:
    """Train a ``kd`` (beta = 0) or ``diito`` student on ``size`` random training examples (all by default)."""
    check_choice("method", method, METHODS)
    size = size or len(train_set)
    data = subset(train_set, size, seed) if size < len(train_set) else train_set
    folder = Path(output_dir)
    settings = {"stage": method, "size": size, "seed": seed, **asdict(config)}
    if finished_run(folder, settings):
        return Trained(load_saved(str(folder / "model"), arch="bert").eval(), read_log(folder))
    student = init_student(config, teacher)
    mapping = layer_mapping(config.mapping, teacher.config.num_hidden_layers, len(config.student_layers))
    objective = DistillObjective(
        teacher.to(resolve_device(device)), mapping, config.alpha,
        config.beta if method == "diito" else 0.0, config.temperature, config.prop, config.consecutive,
        special_ids(tokenizer) if config.exclude_special else None,
    )
    train_config = config.train_config(size, config.student_epochs, config.lr, seed, device, launch_info().world_size,
                                       config.min_student_steps)
    result = _run(student, data, train_config, objective, folder, settings, tokenizer)
    return Trained(result.model.eval(), result.history, result.steps_trained)


def special_ids(tokenizer) -> list[int]:
    """Ids of [CLS], [SEP] and [PAD]-like tokens, for excluding them from intervention sites."""
    return [i for i in (tokenizer.cls_token_id, tokenizer.sep_token_id) if i is not None]
