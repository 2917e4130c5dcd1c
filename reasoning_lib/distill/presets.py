"""Settings of the causal-distillation chapter."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choice, check_positive, check_range, from_preset
from ..run_settings import num_steps, train_settings
from ..train import TrainConfig
from .data import TASKS


@dataclass(frozen=True)
class DistillConfig:
    """Task, teacher, student and the distillation objective (the task-specific DIITO step and defaults of the
    reference ``frankaging/Causal-Distill-XXS``, ``causal_distiller.py``)."""

    task: str = "sentiment"  # the generated task, or a GLUE task name ('sst2', ...)
    teacher: str | int = 4  # layers of a random tiny BERT, or a hub id / folder to fine-tune
    student_init: str = "teacher"  # copy student blocks from the teacher, from this hub id / folder, or "random"
    student_layers: tuple[int, ...] = (0, 2)  # blocks of student_init the student starts from
    mapping: str = "full"  # student j <-> teacher {2j, 2j+1}; or explicit '0:1;1:3'
    num_train: int = 10_000  # generated task only (GLUE uses its train split)
    max_train: int | None = None  # GLUE only: a seeded random subset of the train split (None: all of it)
    num_test: int = 1000
    train_sizes: tuple[int, ...] = (500, 1000, 10_000)  # accuracy vs training-set size
    max_length: int = 128
    batch_size: int = 32  # global: examples per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass; None: the whole per-process share
    teacher_epochs: float = 4
    teacher_lr: float = 5e-4
    student_epochs: float = 5
    min_student_steps: int = 300  # small training sets still get this many updates
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    alpha: float = 0.7
    beta: float = 1.0  # weight of the counterfactual term for DIITO (KD uses 0)
    temperature: float = 2.0
    prop: float = 0.3
    consecutive: bool = False
    exclude_special: bool = False  # keep [CLS]/[SEP] out of intervention sites
    dropout: float = 0.1
    eval_pairs: int = 1000  # held-out examples used as IIA bases

    def __post_init__(self):
        check_choice("task", self.task, TASKS)
        for name in ("num_train", "num_test", "batch_size", "teacher_epochs", "student_epochs", "lr", "teacher_lr",
                     "temperature", "eval_pairs"):
            check_positive(name, getattr(self, name))
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("prop", self.prop, 0.0, 1.0)
        check_range("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        if self.max_train is not None:
            check_positive("max_train", self.max_train)
        if self.task == "sentiment" and max(self.train_sizes) > self.num_train:
            raise ValueError(f"train_sizes {self.train_sizes} exceed num_train={self.num_train}")
        if self.task != "sentiment" and self.max_train and max(self.train_sizes) > self.max_train:
            raise ValueError(f"train_sizes {self.train_sizes} exceed max_train={self.max_train}: lower the sizes or "
                             "raise max_train")

    def train_config(self, num_examples: int, epochs: float, lr: float, seed: int, device: str,
                     world_size: int | None = None, min_steps: int = 1) -> TrainConfig:
        """The shared loop's settings for ``epochs`` over ``num_examples``: the same steps on any number of processes."""
        steps = max(min_steps, num_steps(self.batch_size, num_examples, epochs))
        return train_settings(
            global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, steps=steps, world_size=world_size,
            lr=lr, weight_decay=self.weight_decay, warmup_steps=int(self.warmup_fraction * steps), schedule="linear",
            seed=seed, device=device,
        )


PRESETS = {
    "smoke": DistillConfig(num_train=256, num_test=64, train_sizes=(128, 256), teacher_epochs=1, student_epochs=1,
                           min_student_steps=4, eval_pairs=64, batch_size=32),
    # 2 CPU cores, about 9 minutes. A randomly initialised student: one copied from the teacher's blocks would
    # inherit its mechanism under plain KD too, hiding what the interchange-intervention term adds.
    "tiny": DistillConfig(student_init="random"),
    # XXS (task-specific) setting: fine-tuned bert-base-uncased teacher on SST-2, 6-layer student from the
    # first six pretrained layers, T 20, alpha 0.7, lr 2e-5, batch 32, 5 epochs, warmup 10% + linear decay.
    "paper": DistillConfig(task="sst2", teacher="bert-base-uncased", student_init="bert-base-uncased",
                           student_layers=(0, 1, 2, 3, 4, 5), train_sizes=(500, 1000, 10_000, 67_349),
                           num_test=872, teacher_epochs=3, teacher_lr=2e-5, student_epochs=5, min_student_steps=1,
                           lr=2e-5, temperature=20.0, eval_pairs=872),
}


# ``paper`` with ``dry_run``: bert-base-uncased teacher and its 6-block student at 128 tokens, the published global
# batch of 32 (in micro-batches of 4: gradient accumulation on any number of processes) on 64 training sentences, so
# the teacher and the full-size students take 2 steps and the 32-example ones 1; a short test and IIA evaluation.
DRY_RUN = {"max_train": 64, "num_test": 8, "eval_pairs": 4, "train_sizes": (32, 64), "teacher_epochs": 1.0,
           "student_epochs": 1.0, "micro_batch_size": 4}


def get_config(preset: str, dry_run: bool = False, **overrides) -> DistillConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it); ``dry_run`` applies
    ``DRY_RUN`` first (given overrides still win)."""
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    return from_preset(PRESETS, preset, **overrides)
