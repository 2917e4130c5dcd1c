"""Settings of the implicit-CoT chapter: the baseline run it builds on plus the three stages' budgets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..baselines import BaselineConfig, get_config as get_baseline_config
from ..config import check_positive, from_preset
from ..train import TrainConfig


@dataclass(frozen=True)
class ImplicitCoTConfig:
    """``baseline`` fixes task, data, model size and the teacher; the rest sets the three stages."""

    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    stage_epochs: float = 0.8  # passes over the training set in each stage (student, emulator, coupling)
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 50
    schedule: str = "wsd"
    delta: str | int = "dynamic"  # 'dynamic' spreads the layers over the CoT; an int k reads every k-th position
    mixture_size: int = 1  # 1 for multiplication; the vocabulary size for the supervised GSM8K mixture
    mixture_weight: float = 1.0
    fix_emulator: bool = False  # stage 2 trains the student only
    eval_batch_size: int = 1

    def __post_init__(self):
        check_positive("stage_epochs", self.stage_epochs)
        check_positive("batch_size", self.batch_size)
        if self.delta != "dynamic" and not (isinstance(self.delta, int) and self.delta >= 0):
            raise ValueError(f"delta={self.delta!r} must be 'dynamic' or an integer >= 0")

    def stage_config(self, seed: int, device: str, world_size: int = 1) -> TrainConfig:
        steps = math.ceil(self.baseline.num_train * self.stage_epochs / (self.batch_size * world_size))
        return TrainConfig(
            max_steps=steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=min(self.warmup_steps, steps - 1),
            schedule=self.schedule, seed=seed, device=device, log_every=max(1, min(25, steps // 20)),
            checkpoint_every=max(50, steps // 10),
        )


GPT2_VOCABULARY = 50257

PRESETS = {
    "smoke": ImplicitCoTConfig(baseline=get_baseline_config("smoke"), stage_epochs=1.0, batch_size=32, warmup_steps=2),
    # 2 CPU cores, 20-35 minutes for all five models (33 measured on one busy core). Chapter 1's tiny setting
    # (3x3, 2 layers) gives the student a 2-state diagonal whose first state is the separator's embedding, and
    # it learns nothing from it;
    # 2x2 with 4 layers (chapter 4's task and split) is the smallest setting that shows the paper's result.
    "tiny": ImplicitCoTConfig(
        baseline=get_baseline_config("tiny", task="2x2", model="mini", num_train=7000, num_valid=0, num_test=500,
                                     num_epochs=20.0),
        stage_epochs=20.0),
    # Deng et al. 2023: GPT-2 small on 4x4, AdamW lr 5e-5, batch 32, no schedule, 40 epochs a stage (README).
    "paper": ImplicitCoTConfig(baseline=get_baseline_config("paper"), stage_epochs=40, batch_size=32, lr=5e-5,
                               warmup_steps=0, schedule="constant"),
}


def get_config(preset: str, task: str | None = None, model: str | None = None, train_file: str | None = None,
               valid_file: str | None = None, test_file: str | None = None, **overrides) -> ImplicitCoTConfig:
    """A preset; ``task``/``model`` switch the baseline's task (e.g. '5x5', 'gsm8k') and model (e.g. 'gpt2-medium');
    the ``*_file`` paths give the data (GSM8K from files instead of the hub, or a published multiplication test set).

    GSM8K uses the supervised mixture over reasoning paths (spec §3.5): one component per GPT-2 token."""
    if task == "gsm8k":
        overrides.setdefault("mixture_size", GPT2_VOCABULARY)
    config = from_preset(PRESETS, preset, **overrides)
    changes = {k: v for k, v in (("task", task), ("model", model), ("train_file", train_file),
                                 ("valid_file", valid_file), ("test_file", test_file)) if v}
    if preset == "paper" and changes:  # the paper baselines' own task rules (GSM8K: 15 teacher epochs, full test set)
        config = from_preset({"base": config}, "base", baseline=get_baseline_config("paper", **changes))
    elif changes:
        config = from_preset({"base": config}, "base", baseline=from_preset({"b": config.baseline}, "b", **changes))
    return config
