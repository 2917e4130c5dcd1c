"""Run settings for Diffusion of Thoughts: ``smoke`` (CI), ``tiny`` (2 CPU cores) and ``paper`` (reference
``dot-sedd`` branch, ``configs/config_small.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choice, check_positive, check_range, from_preset
from ..data.multiplication import parse_task
from ..run_record import test_set_name
from ..sedd.training import SEDDRunConfig

MP_PAIRS = ("all", "random")


@dataclass(frozen=True)
class DoTConfig:
    """Task, tokenizer, model (from scratch or a SEDD checkpoint), training and evaluation of one chapter run."""

    task: str = "3x3"  # 'NxN' multiplication (generated) or 'gsm8k' (files or the hub)
    tokenizer: str = "digits"  # 'digits', or a BPE such as 'gpt2'
    # BPE only: one token per digit (Plaid's --digit). False is the reference's SEDD branch, plain GPT-2 BPE: with
    # True, every space between digits is a token too and 5x5 DoT needs 182 tokens, past the 128-token canvas.
    split_digits: bool = False
    init: str | None = None  # None: train from scratch; else a SEDD folder or hub id to fine-tune
    pretrained: bool = True  # False: random weights at ``init``'s config (the paper dry run)
    train_file: str | None = None  # GSM8K only, formula format (GSM8K-Aug for the paper); else the hub
    test_file: str | None = None  # e.g. the published test_bigbench.txt / test.txt
    num_train: int = 40_000
    num_test: int = 200
    length: int = 48  # canvas: 3x3 needs 41 tokens (question 7 + E || + rationale 24 + answer 7 + E), 2x2 needs 21
    truncate: bool = False  # GSM8K at 128 tokens: shorten the few long examples (counted) instead of refusing
    # with truncate: refuse a canvas that cuts more than this fraction of a split's answers (GSM8K test at 128: 0.8%)
    max_truncated_fraction: float = 0.01
    mp_pairs: str = "all"  # DoT-MP training: every step of every example ('all', SEDD branch) or one random step per visit
    hidden_size: int = 128
    n_blocks: int = 4
    n_heads: int = 4
    cond_dim: int = 64
    dropout: float = 0.0
    max_steps: int = 3000
    batch_size: int = 64  # global: sequences per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass; None: the whole per-process share
    lr: float = 1e-3
    warmup_steps: int = 100
    ema: float = 0.999
    schedule: str = "constant"  # 'wsd': constant, then a linear decay over the last 20% (short CPU runs)
    sample_steps: int = 32  # T for the headline accuracy
    step_sweep: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    predictor: str = "analytic"
    max_passes: int = 10  # DoT-MP
    sc_runs: int = 5  # self-consistency: votes over k = 1 … sc_runs seeds
    eval_batch_size: int = 128
    throughput_examples: int = 21  # batch-1 timing: the first is a warm-up

    def __post_init__(self):
        if self.task != "gsm8k":
            parse_task(self.task)
            if self.train_file:
                raise ValueError("train_file is for task='gsm8k'; multiplication data is generated")
        elif self.tokenizer == "digits":
            raise ValueError("task='gsm8k' is text: use a BPE tokenizer such as tokenizer='gpt2'")
        check_choice("mp_pairs", self.mp_pairs, MP_PAIRS)
        check_range("max_truncated_fraction", self.max_truncated_fraction, 0.0, 1.0)
        check_choice("predictor", self.predictor, ("euler", "analytic"))
        for name in ("num_train", "num_test", "length", "max_steps", "batch_size", "sample_steps", "sc_runs", "max_passes"):
            check_positive(name, getattr(self, name))
        if self.throughput_examples < 2:
            raise ValueError("throughput_examples must be at least 2 (the first is a warm-up)")

    def sedd_config(self) -> SEDDRunConfig:
        """The SEDD core's settings (absorbing graph, log-linear noise, as DoT fine-tunes it)."""
        return SEDDRunConfig(corpus=self.task, tokenizer=self.tokenizer, num_sequences=self.num_train, length=self.length,
                             hidden_size=self.hidden_size, n_blocks=self.n_blocks, n_heads=self.n_heads,
                             cond_dim=self.cond_dim, dropout=self.dropout, max_steps=self.max_steps,
                             batch_size=self.batch_size, micro_batch_size=self.micro_batch_size, lr=self.lr, warmup_steps=self.warmup_steps, ema=self.ema, schedule=self.schedule,
                             sample_steps=self.sample_steps)


PRESETS = {
    "smoke": DoTConfig(task="2x2", num_train=256, num_test=8, length=24, hidden_size=32, n_blocks=1, n_heads=2,
                       cond_dim=16, max_steps=20, batch_size=16, warmup_steps=2, sample_steps=4, step_sweep=(1, 4),
                       sc_runs=2, max_passes=4, throughput_examples=3),
    # 2 CPU cores, about 13 minutes per variant: the tiny SEDD of chapter 3 from scratch on 2x2 multiplication
    # (3x3 is too hard for this budget), with a wsd schedule: its final decay settles the model where a constant
    # rate keeps it moving.
    "tiny": DoTConfig(task="2x2", num_train=7000, num_test=500, length=22, max_steps=6000, ema=0.99, schedule="wsd"),
    # dot-sedd fine-tuning: sedd-small, GPT-2 tokens, 128-token canvas, global batch 256, lr 3e-4, 2,500 warm-up
    # steps, EMA 0.9999, 120k steps; T in {4, ..., 64}; DoT-MP with 10 passes. -p task 4x4 / 5x5 / gsm8k.
    # Plain BPE on the published test files: DoT needs 68 (4x4) and 100 (5x5) tokens; GSM8K up to 241, 112 of its
    # 1,319 test canvases truncated, 10 answers cut (the reference truncates them silently).
    "paper": DoTConfig(task="4x4", tokenizer="gpt2", split_digits=False, init="louaaron/sedd-small", num_train=808_000,
                       num_test=1000, length=128, truncate=True, hidden_size=768, n_blocks=12, n_heads=12, cond_dim=128, dropout=0.1,
                       max_steps=120_000, batch_size=256, micro_batch_size=64, lr=3e-4, warmup_steps=2500, ema=0.9999, sample_steps=64,
                       step_sweep=(1, 2, 4, 8, 16, 32, 64), sc_runs=20, max_passes=10, throughput_examples=101),
}


# The paper dry run: sedd-small's shapes, GPT-2's tokenizer, the 128-token canvas and the whole pipeline, but random
# weights, 64 problems, 2 steps and short sampling. It also cuts the global batch (256 -> 16): one step of 256
# canvases of 128 tokens through sedd-small takes minutes on a CPU.
DRY_RUN = {"pretrained": False, "num_train": 64, "num_test": 2, "max_steps": 2, "batch_size": 16,
           "micro_batch_size": 8, "warmup_steps": 0, "sample_steps": 4, "step_sweep": (1, 4), "sc_runs": 2,
           "max_passes": 2, "throughput_examples": 2, "eval_batch_size": 2}


def get_config(preset: str, dry_run: bool = False, **overrides) -> DoTConfig:
    """The named preset with ``overrides`` applied; ``paper`` with ``task='gsm8k'`` tests on all 1,319 problems.
    ``dry_run`` applies ``DRY_RUN`` (given overrides still win)."""
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    if preset == "paper" and overrides.get("task") == "gsm8k":
        overrides.setdefault("num_test", 1319)
        overrides.setdefault("num_train", 400_000)
    if "step_sweep" in overrides and overrides["step_sweep"] is not None:
        overrides["step_sweep"] = tuple(overrides["step_sweep"])
    return from_preset(PRESETS, preset, **overrides)
