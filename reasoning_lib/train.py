"""The one training loop of the book (nanoGPT-style, for any HF model and any loss).

AdamW with linear warmup then a constant, cosine or linear schedule; gradient accumulation and clipping;
bf16 autocast on CUDA; DDP when launched by ``torchrun``; a tqdm bar; a JSONL log; atomic periodic
checkpoints and exact resume. Batches are a pure function of (seed, step), so a resumed run sees the same
data, and with the restored RNG states it reproduces the uninterrupted run's weights.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import check_choice, check_positive
from .runtime import DistributedContext, init_distributed, resolve_device

SCHEDULES = ("constant", "wsd", "cosine", "linear")
PRECISIONS = ("auto", "fp32", "bf16")
# Settings a resumed run must share with the run that wrote the checkpoint (max_steps may grow).
RESUME_MUST_MATCH = (
    "batch_size", "grad_accum_steps", "lr", "weight_decay", "warmup_steps", "schedule", "decay_fraction", "max_grad_norm", "seed",
)


@dataclass
class TrainConfig:
    """Optimisation settings; ``batch_size`` is per process and per micro-step."""

    max_steps: int
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "constant"
    decay_fraction: float = 0.2  # 'wsd' only: the last fraction of steps decays linearly to 0
    max_grad_norm: float | None = 1.0
    seed: int = 1234
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        check_positive("max_steps", self.max_steps)
        check_positive("batch_size", self.batch_size)
        check_positive("grad_accum_steps", self.grad_accum_steps)
        check_positive("lr", self.lr)
        check_positive("warmup_steps", self.warmup_steps, allow_zero=True)
        check_positive("checkpoint_every", self.checkpoint_every, allow_zero=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction={self.decay_fraction} must lie in (0, 1]")


@dataclass
class TrainResult:
    """What a run returns: the trained (unwrapped) model and the logged history."""

    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    step: int = 0

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """Learning-rate factor at ``step``: linear warmup, then the chosen schedule.

    ``wsd`` (warmup-stable-decay) holds the peak and decays linearly to 0 over the last ``decay_fraction``
    of the steps: it keeps the fast progress of a constant rate and ends on a settled model."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "wsd":
        decay_start = config.max_steps * (1 - config.decay_fraction)
        return 1.0 if step < decay_start else max(0.0, (config.max_steps - step) / (config.max_steps - decay_start))
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class BatchSampler:
    """Indices of each process's micro-batch, from a fresh seeded permutation per epoch."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, ctx: DistributedContext):
        self.n, self.batch_size, self.seed, self.ctx = num_examples, batch_size, seed, ctx
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return int(self._perm[offset])

    def indices(self, micro_step: int) -> list[int]:
        start = (micro_step * self.ctx.world_size + self.ctx.rank) * self.batch_size
        return [self._index(p) for p in range(start, start + self.batch_size)]


def causal_lm_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100.

    No attention mask, as in the reference: padding is on the right, so a causal model never attends to it
    from a labelled position, and SDPA keeps its fast causal path."""
    return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if r["step"] <= up_to_step]


def read_log(output_dir: str | Path) -> list[dict]:
    """Every row a run logged to ``output_dir/train_log.jsonl`` (its loss history), [] if none."""
    return _read_log(Path(output_dir) / "train_log.jsonl", up_to_step=math.inf)


RUN_RECORD = "run_config.json"


def finished_run(output_dir: str | Path, settings: dict) -> bool:
    """Whether ``output_dir`` holds a finished run (``model/`` saved) recorded with exactly ``settings``."""
    path = Path(output_dir) / RUN_RECORD
    same = path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(settings))  # tuples -> lists
    return same and (Path(output_dir) / "model").is_dir()


def mark_finished(output_dir: str | Path, settings: dict) -> None:
    """Record ``settings`` next to a saved ``model/``, so :func:`finished_run` reloads instead of retraining."""
    (Path(output_dir) / RUN_RECORD).write_text(json.dumps(settings, indent=2))


def train(
    model: torch.nn.Module,
    dataset: Sequence[Any],
    config: TrainConfig,
    collate_fn: Callable[[list], dict],
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] = causal_lm_loss,
    output_dir: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` for ``config.max_steps`` optimizer steps and return a :class:`TrainResult`.

    With ``output_dir``, checkpoints go to ``output_dir/checkpoints`` and a run resumes from the newest one;
    the log is ``output_dir/train_log.jsonl``. ``on_step(step, loss)`` runs after every optimizer step."""
    if len(dataset) == 0:
        raise ValueError("train() got an empty dataset")
    device = resolve_device(config.device)
    ctx = init_distributed(device)
    model.to(device)
    optimizer = torch.optim.AdamW(
        list(model.parameters()), lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, config))
    torch.manual_seed(config.seed + ctx.rank)  # dropout differs per rank; data order does not depend on it

    step, log_path, ckpt_dir = 0, None, None
    if output_dir is not None:
        output_dir = Path(output_dir)
        log_path, ckpt_dir = output_dir / "train_log.jsonl", output_dir / "checkpoints"
        found = ckpt.list_checkpoints(ckpt_dir)
        if found:
            _check_same_run(output_dir / "train_config.json", config)
            state = ckpt.load_checkpoint(found[-1], model)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            step = state["step"]
            if ctx.is_main:
                print(f"resuming from {found[-1]} (step {step})")
        if ctx.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    history = _read_log(log_path, step) if log_path else []
    if log_path and ctx.is_main:  # drop log lines past the checkpoint we resumed from
        log_path.write_text("".join(json.dumps(r) + "\n" for r in history))

    # A model whose loss never reaches some parameters (the implicit-CoT emulator's last block) says so.
    unused = getattr(model, "has_unused_parameters", False)
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=unused) if ctx.enabled else model
    sampler = BatchSampler(len(dataset), config.batch_size, config.seed, ctx)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    model.train()
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and ctx.is_main), mininterval=2.0)
    running, tokens, started = 0.0, 0, time.perf_counter()
    while step < config.max_steps:
        for micro in range(config.grad_accum_steps):
            batch = _to(collate_fn([dataset[i] for i in sampler.indices(step * config.grad_accum_steps + micro)]), device)
            last = micro == config.grad_accum_steps - 1
            # DDP all-reduces gradients on the last micro-batch only
            with (nullcontext() if (last or not ctx.enabled) else wrapped.no_sync()):
                with (torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()):
                    loss = loss_fn(wrapped, batch) / config.grad_accum_steps
                loss.backward()
            value = loss.item() * config.grad_accum_steps
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step + 1} (micro-batch {micro}); stopping the run")
            running += value / config.grad_accum_steps
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        grad_norm = None
        if config.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if on_step is not None:
            on_step(step, running)
        if step % config.log_every == 0 or step == config.max_steps:
            history.append(_log_row(step, running, step % config.log_every or config.log_every, scheduler, grad_norm,
                                    tokens, started, ctx, log_path, device))
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            running, tokens, started = 0.0, 0, time.perf_counter()
        if ckpt_dir is not None and ctx.is_main and (
            step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            ckpt.save_checkpoint(ckpt_dir, step, model, state, keep_last=config.keep_checkpoints)
    bar.close()
    model.eval()
    return TrainResult(model=model, history=history, step=step)


def _check_same_run(saved_path: Path, config: TrainConfig) -> None:
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    changed = {k: (saved.get(k), getattr(config, k)) for k in RESUME_MUST_MATCH if saved.get(k) != getattr(config, k)}
    if changed:
        raise ValueError(
            f"{saved_path.parent} holds checkpoints of a run with other settings {changed} (saved, now); "
            "use another output_dir or delete that folder"
        )


def _log_row(step, running, num_steps, scheduler, grad_norm, tokens, started, ctx, log_path, device) -> dict:
    loss = torch.tensor(running / num_steps, device=device)  # on the device: NCCL reduces GPU tensors only
    tokens_t = torch.tensor(float(tokens), device=device)
    if ctx.enabled:  # average the loss and count the tokens of every rank
        torch.distributed.all_reduce(loss)
        torch.distributed.all_reduce(tokens_t)
        loss /= ctx.world_size
    elapsed = time.perf_counter() - started
    row = {"step": step, "loss": float(loss), "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
           "tokens_per_s": float(tokens_t) / max(elapsed, 1e-9)}
    if log_path is not None and ctx.is_main:
        with open(log_path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    return row
