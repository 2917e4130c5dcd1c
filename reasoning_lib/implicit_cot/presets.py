"""Settings of the implicit-CoT chapter: the baseline run it builds on plus the three stages' budgets."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..baselines import DRY_RUN as BASELINE_DRY_RUN, BaselineConfig, get_config as get_baseline_config
from ..config import check_positive, from_preset
from ..run_settings import train_settings
from ..train import TrainConfig


@dataclass(frozen=True)
class ImplicitCoTConfig:
    """``baseline`` fixes task, data, model size and the teacher; the rest sets the three stages."""

    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    stage_epochs: float = 0.8  # passes over the training set in each stage (student, emulator, coupling)
    batch_size: int = 128  # global: examples per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass; None: the whole per-process share
    select_best: bool = False  # validate each epoch, keep the best (student/coupled: accuracy; emulator: loss)
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

        if self.select_best and not self.baseline.num_valid:
            raise ValueError("select_best=True validates each epoch: it needs baseline.num_valid > 0")

    def stage_config(self, seed: int, device: str, num_examples: int, world_size: int | None = None) -> TrainConfig:
        """One stage's loop settings: ``stage_epochs`` over the ``num_examples`` training problems actually loaded
        (a GSM8K file may hold far fewer than ``baseline.num_train``), the same steps on any number of processes."""
        settings = train_settings(
            global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, num_examples=num_examples,
            epochs=self.stage_epochs, world_size=world_size, lr=self.lr, warmup_steps=self.warmup_steps,
            schedule=self.schedule, seed=seed, device=device,
        )
        if self.select_best:
            settings = replace(settings, validate_every=max(1, round(num_examples / self.batch_size)))
        return settings


GPT2_VOCABULARY = 50257

PRESETS = {
    "smoke": ImplicitCoTConfig(baseline=get_baseline_config("smoke"), stage_epochs=1.0, batch_size=32, warmup_steps=2),
    # 2 CPU cores, about half an hour for all five models. 2x2 with 4 layers (chapter 4's task and split): a
    # student learns from the teacher only when enough layers read the chain's partial products, which chapter
    # 1's 3x3 with 2 layers does not give it (its diagonal's first state is the separator's embedding).
    "tiny": ImplicitCoTConfig(
        baseline=get_baseline_config("tiny", task="2x2", model="mini", num_train=7000, num_valid=0, num_test=500,
                                     num_epochs=20.0),
        stage_epochs=20.0),
    # Deng et al. 2023: GPT-2 small on 4x4, AdamW lr 5e-5, batch 32, no schedule, 40 epochs a stage (README).
    # Each epoch is validated and the best kept (the reference's checkpoint choice).
    "paper": ImplicitCoTConfig(baseline=get_baseline_config("paper"), stage_epochs=40, batch_size=32, micro_batch_size=32,
                               lr=5e-5, warmup_steps=0, schedule="constant", select_best=True),
}
DRY_RUN = {"stage_epochs": 1.0, "micro_batch_size": 8}  # with the baselines' dry run (random init, few steps)


def get_config(preset: str, task: str | None = None, model: str | None = None, train_file: str | None = None,
               valid_file: str | None = None, test_file: str | None = None, dry_run: bool = False,
               **overrides) -> ImplicitCoTConfig:
    """A preset; ``task``/``model`` switch the baseline's task (e.g. '5x5', 'gsm8k') and model (e.g. 'gpt2-medium');
    the ``*_file`` paths give the data (GSM8K from files instead of the hub, or a published multiplication test set).
    ``dry_run`` runs the paper path at its real shapes for a few steps (``baselines.DRY_RUN``, ``DRY_RUN``).

    GSM8K uses the supervised mixture over reasoning paths (Deng et al. 2023, §3.2): one component per GPT-2 token."""
    if task == "gsm8k":
        overrides.setdefault("mixture_size", GPT2_VOCABULARY)
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    config = from_preset(PRESETS, preset, **overrides)
    changes = {k: v for k, v in (("task", task), ("model", model), ("train_file", train_file),
                                 ("valid_file", valid_file), ("test_file", test_file)) if v}
    if preset == "paper" and (changes or dry_run):  # the paper baselines' task rules (GSM8K: 15 teacher epochs)
        baseline = get_baseline_config("paper", dry_run=dry_run, **changes)
    elif changes or dry_run:
        baseline = from_preset({"b": config.baseline}, "b", **changes, **(BASELINE_DRY_RUN if dry_run else {}))
    else:
        return config
    return from_preset({"base": config}, "base", baseline=baseline)
