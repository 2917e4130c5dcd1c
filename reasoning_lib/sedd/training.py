"""Training SEDD with the shared loop: presets, the model + EMA container, and a finished-run cache.

The EMA lives in a module next to the network (its shadows are buffers), so the shared loop's checkpoints
carry model, EMA, optimizer, step and RNG together, and a resumed run continues all of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import check_choice, check_positive, from_preset
from ..run_settings import train_settings
from ..runtime import launch_info
from ..train import TrainConfig, TrainResult, finished_run, mark_finished, read_log, train
from .evaluation import EmaElboCurve
from .graph import build_graph
from .loading import load_model, save_model
from .losses import SEDDObjective
from .model import DDiTConfig, EMA, SEDD
from .noise import build_noise



@dataclass(frozen=True)
class SEDDRunConfig:
    """Corpus, model size, graph/noise and optimisation of one SEDD run (reference ``configs/config.yaml``; the
    default sizes are chosen for 2 CPU cores)."""

    corpus: str = "reviews"  # generated reviews, or a hub text dataset id (e.g. 'openwebtext')
    tokenizer: str = "reviews"  # 'reviews' (word level) or a hub id such as 'gpt2'
    num_sequences: int = 20_000
    length: int = 24
    graph: str = "absorb"
    noise: str = "loglinear"
    hidden_size: int = 128
    n_blocks: int = 4
    n_heads: int = 4
    cond_dim: int = 64
    dropout: float = 0.0
    max_steps: int = 2000
    batch_size: int = 64  # global: sequences per optimizer step over all processes
    micro_batch_size: int | None = None  # per process and forward pass (memory); None: the whole per-process share
    lr: float = 1e-3
    warmup_steps: int = 100
    ema: float = 0.999
    schedule: str = "constant"  # the reference's: warm-up then constant; 'wsd' decays over the last 20%
    sample_steps: int = 64
    num_samples: int = 64
    num_test: int = 200  # held-out sequences for the likelihood bound
    elbo_times: int = 16  # stratified time points per held-out sequence in the bound (a Monte-Carlo estimate)
    held_out_documents: int = 100_000  # hub corpora without a validation split: the last documents of 'train'

    def __post_init__(self):
        check_choice("graph", self.graph, ("absorb", "uniform"))
        check_choice("noise", self.noise, ("loglinear", "geometric"))
        for name in ("num_sequences", "length", "max_steps", "batch_size", "lr", "sample_steps", "num_samples",
                     "num_test", "elbo_times", "held_out_documents"):
            check_positive(name, getattr(self, name))

    def noise_config(self) -> dict:
        return {"type": self.noise, "sigma_min": 1e-4, "sigma_max": 20.0}

    def model_config(self, num_states: int) -> DDiTConfig:
        return DDiTConfig(vocab_size=num_states, hidden_size=self.hidden_size, n_blocks=self.n_blocks,
                          n_heads=self.n_heads, cond_dim=self.cond_dim, length=self.length, dropout=self.dropout,
                          scale_by_sigma=self.graph == "absorb")

    def train_config(self, seed: int, device: str, world_size: int | None = None) -> TrainConfig:
        """The shared loop's settings: the global batch cut into micro-batches over processes and accumulation."""
        return train_settings(
            global_batch=self.batch_size, micro_batch_size=self.micro_batch_size, steps=self.max_steps,
            world_size=world_size, lr=self.lr, weight_decay=0.0, warmup_steps=self.warmup_steps,
            schedule=self.schedule, max_grad_norm=1.0, seed=seed, device=device,
        )


PRESETS = {
    "smoke": SEDDRunConfig(num_sequences=256, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, max_steps=20,
                           batch_size=16, warmup_steps=2, sample_steps=8, num_samples=8),
    # 2 CPU cores: ~0.8M parameters on 24-token reviews (sizes chosen so the loss falls within minutes).
    "tiny": SEDDRunConfig(),
    # SEDD small (Lou et al. 2024, §5.1; reference ``configs/config.yaml``): GPT-2 tokens, OpenWebText blocks of
    # 1024, batch 512 (global), lr 3e-4 with 2,500 warm-up steps and no decay, EMA 0.9999, 400k steps as the paper
    # trained (maintainer, issue #6).
    "paper": SEDDRunConfig(corpus="openwebtext", tokenizer="gpt2", num_sequences=8_000_000, length=1024,
                           hidden_size=768, n_blocks=12, n_heads=12, cond_dim=128, dropout=0.1, max_steps=400_000,
                           batch_size=512, micro_batch_size=16, lr=3e-4, warmup_steps=2500, ema=0.9999, sample_steps=128, num_samples=8),
}


GRAPH_NOISE = {"absorb": "loglinear", "uniform": "geometric"}  # the paper's pairing of forward process and schedule


def num_states(tokenizer, graph: str) -> int:
    """States of the diffusion: the vocabulary, plus the mask for the absorbing graph (the uniform one has none)."""
    return len(tokenizer) + (graph == "absorb")


def run_folder(graph: str) -> str:
    """Where chapter 3 and the command line keep the run of ``graph`` inside the chapter's output folder."""
    return f"model_{graph}"


# ``paper`` with ``dry_run``: SEDD small at 1,024 tokens with GPT-2's tokenizer, the token-file pipeline and every
# evaluation, but a global batch of 4 for 2 steps, a few held-out blocks and samples (a CPU check of the full path).
DRY_RUN = {"num_sequences": 8, "max_steps": 2, "batch_size": 4, "micro_batch_size": 1, "warmup_steps": 0,
           "sample_steps": 2, "num_samples": 1, "num_test": 2, "elbo_times": 2, "held_out_documents": 4}


def get_config(preset: str, dry_run: bool = False, **overrides) -> SEDDRunConfig:
    """The named preset with ``overrides`` applied (a wrong name or value raises, naming it); ``dry_run`` applies
    ``DRY_RUN`` first (given overrides still win)."""
    if dry_run:
        overrides = {**DRY_RUN, **overrides}
    return from_preset(PRESETS, preset, **overrides)


# how a trained model is sampled and evaluated, not which model is trained
SAMPLING_FIELDS = ("sample_steps", "num_samples", "num_test", "elbo_times")


class SEDDWithEMA(torch.nn.Module):
    """The trained network and its EMA in one module, so one state dict (and one checkpoint) holds both."""

    # Every rank updates the EMA from the same all-reduced weights: DDP need not broadcast its buffers (the size of
    # the model again, ~680 MB at SEDD small) from rank 0 at every step.
    forward_sync_buffers = False

    def __init__(self, model: SEDD, decay: float):
        super().__init__()
        self.model = model
        self.ema = EMA(model, decay)

    def forward(self, input_ids: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, sigma)


def _collate(rows: list[dict]) -> dict:
    batch = {"input_ids": torch.stack([r["input_ids"] for r in rows])}
    if "fixed" in rows[0]:
        batch["fixed"] = torch.stack([r["fixed"] for r in rows])
    return batch


def as_dataset(sequences: torch.Tensor, fixed: torch.Tensor | None = None) -> list[dict]:
    """Rows for the shared loop: ``{"input_ids"}`` (+ ``{"fixed"}``, a never-noised mask)."""
    if fixed is not None and fixed.shape != sequences.shape:
        raise ValueError(f"fixed mask {tuple(fixed.shape)} does not match sequences {tuple(sequences.shape)}")
    return [{"input_ids": s} if fixed is None else {"input_ids": s, "fixed": f}
            for s, f in zip(sequences, fixed if fixed is not None else [None] * len(sequences))]


def train_sedd(config: SEDDRunConfig, sequences, num_states: int, output_dir: str | Path, seed: int = 0,
               device: str = "auto", fixed: torch.Tensor | None = None, init: SEDD | None = None,
               describe: dict | None = None, validate_sequences: torch.Tensor | None = None,
               validate_every: int | None = None, validate_count_mask: torch.Tensor | None = None) -> tuple[SEDD, list[dict]]:
    """Train (or resume, or reload when finished) a SEDD model; returns it with EMA weights, and the loss history.

    ``num_states`` counts every state, the mask included for the absorbing graph. ``sequences`` is an
    [N, n] tensor, or a dataset of ``{"input_ids", "fixed"}`` rows with an ``input_ids`` tensor of every row
    it can return (then ``fixed`` is None). ``init`` is a model to fine-tune (e.g. ``load_model("louaaron/sedd-small")[0]``) instead of a fresh one; ``describe`` adds
    entries (data settings, the init's name) to what identifies a finished run. With ``validate_sequences``
    (held-out [M, n] ids; ``validate_count_mask`` e.g. ``likelihood.real_tokens``) the EMA's bound is evaluated
    every ``validate_every`` steps (default max_steps // 10) and at the end, into ``elbo_log.jsonl``
    (``evaluation.read_elbo_curve``); it is not part of the run's identity and does not change its weights."""
    folder = Path(output_dir)
    settings = {"seed": seed, "num_states": num_states, **asdict(config), **(describe or {})}
    if finished_run(folder, settings):
        model, _, _ = load_model(str(folder / "model"))
        return model, read_log(folder)
    tensor = torch.is_tensor(sequences)
    rows = as_dataset(sequences, fixed) if tensor else sequences
    # a memory-mapped corpus (sedd.corpus.TokenBlocks) records its largest id: no pass over billions of tokens
    top = int(sequences.max() if tensor else sequences.max_id if hasattr(sequences, "max_id")
              else sequences.input_ids.max())
    if top >= num_states:
        raise ValueError(f"sequence ids reach {top} but the graph has {num_states} states")
    if init is not None and init.config.vocab_size != num_states:
        raise ValueError(f"the model to fine-tune has {init.config.vocab_size} states but the data needs {num_states}")
    graph, noise = build_graph(config.graph, num_states), build_noise(config.noise_config())
    torch.manual_seed(seed)
    container = SEDDWithEMA(init if init is not None else SEDD(config.model_config(num_states)), config.ema)
    curve = None if validate_sequences is None else EmaElboCurve(
        folder, graph, noise, validate_sequences, validate_every or max(1, config.max_steps // 10), validate_count_mask,
        num_times=min(8, config.elbo_times), batch_size=config.micro_batch_size or 64)  # a training micro-batch fits, so an evaluation one does

    def on_step(step: int, loss: float) -> None:
        container.ema.update(container.model)
        if curve is not None and launch_info().is_main:
            curve(step, container, last=step == config.max_steps)

    result: TrainResult = train(
        container, rows, config.train_config(seed, device), _collate,
        SEDDObjective(graph, noise), output_dir=folder, on_step=on_step,
        settings={k: v for k, v in settings.items() if k not in SAMPLING_FIELDS},
        # under a constant rate a longer run continues a shorter one exactly (the paper's runs were extended so)
        extendable=config.schedule == "constant",
    )
    model = container.model
    container.ema.copy_to(model)
    model.eval()
    if launch_info().is_main:
        save_model(model, folder / "model", config.graph, config.noise_config())
        mark_finished(folder, settings)
    return model, result.history


def parameters_in_blocks(model: SEDD) -> tuple[int, int]:
    """(all parameters, parameters inside the transformer blocks)."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.blocks.parameters())

