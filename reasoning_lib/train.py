"""The one training loop of the book (nanoGPT-style, for any HF model and any loss).

AdamW with linear warmup then a constant, cosine or linear schedule; gradient accumulation and clipping;
bf16 autocast on CUDA; DDP when launched by ``torchrun``; a tqdm bar; a JSONL log; atomic periodic
checkpoints and exact resume; optional validation that keeps the best weights. Step s trains on examples
[s·G, (s+1)·G) of a seeded permutation (G the global batch), cut into micro-batches over processes and
accumulation steps, so the data of a step does not depend on the world size, a resumed run sees the same data,
and with the restored RNG states it reproduces the uninterrupted run's weights. A finished run is recorded
(``run_record``) and reopening it with the same settings trains no step. A non-finite loss, gradient norm or
weight stops the run before it reaches a checkpoint; resume skips (and keeps, renamed) a corrupt checkpoint.
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
from . import run_lock, run_record
from .tracking import Tracker, make_tracker
from .config import check_choice, check_positive, check_type
from .runtime import DistributedContext, autocast, init_distributed, resolve_device

SCHEDULES = ("constant", "wsd", "cosine", "linear")
PRECISIONS = ("auto", "fp32", "bf16")
SELECT = ("max", "min")
MAX_LR = 1e3  # no optimiser setting of the book comes near; above it a typo (3e38) overflows deep inside AdamW
# The type of each field, checked first: a value from the command line or papermill ("-r seed 0") is a string.
_INT = ("max_steps", "batch_size", "grad_accum_steps", "warmup_steps", "seed", "log_every", "checkpoint_every",
        "keep_checkpoints", "validate_every")
_REAL = ("lr", "weight_decay", "decay_fraction")
_STR = ("schedule", "precision", "device", "tracking", "select")


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
    tracking: str = "tensorboard"  # with an output_dir: also "wandb" ("tensorboard,wandb"), or "none" (``tracking``)
    validate_every: int = 0  # with a ``validate`` function: steps between validations (e.g. one epoch); 0: never
    select: str = "max"  # keep the weights of the validation score's max (accuracy) or min (loss)

    def __post_init__(self):
        self._check_types()
        if not (math.isfinite(self.lr) and self.lr <= MAX_LR):
            raise ValueError(f"lr={self.lr!r} must be a finite number <= {MAX_LR:g} (typically 1e-5 .. 1e-2)")
        check_positive("max_steps", self.max_steps)
        check_positive("batch_size", self.batch_size)
        check_positive("grad_accum_steps", self.grad_accum_steps)
        check_positive("lr", self.lr)
        check_positive("warmup_steps", self.warmup_steps, allow_zero=True)
        check_positive("checkpoint_every", self.checkpoint_every, allow_zero=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("select", self.select, SELECT)
        check_positive("validate_every", self.validate_every, allow_zero=True)
        check_positive("log_every", self.log_every)
        check_positive("keep_checkpoints", self.keep_checkpoints)
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction={self.decay_fraction} must lie in (0, 1]")
        if not math.isfinite(self.weight_decay):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number (typically 0 .. 0.1)")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm={self.max_grad_norm!r} must be a finite number > 0 or None (no clipping)")

    def _check_types(self) -> None:
        for name in _INT:
            check_type(name, getattr(self, name), int)
        for name in _REAL:
            check_type(name, getattr(self, name), float)
        for name in _STR:
            check_type(name, getattr(self, name), str)
        check_type("max_grad_norm", self.max_grad_norm, (float, type(None)))
        check_type("progress", self.progress, bool)


@dataclass
class TrainResult:
    """What a run returns: the trained (unwrapped) model and the logged history."""

    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    step: int = 0
    steps_trained: int = 0  # in this call: 0 when a finished run was reloaded
    best: dict | None = None  # {"step", "epoch", "score"} of the weights returned, when validated
    validation: list[dict] = field(default_factory=list)  # {"step", "valid"} rows of this call

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
    """Indices of each process's micro-batch, from a fresh seeded permutation per epoch.

    Optimizer step s takes positions [s·G, (s+1)·G) of the permuted stream (G = micro x accumulation x world);
    rank r's micro-step m takes the slice (r·accumulation + m) of it, whatever the world size."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, ctx: DistributedContext, grad_accum_steps: int = 1):
        self.n, self.batch_size, self.seed, self.ctx = num_examples, batch_size, seed, ctx
        self.accum = grad_accum_steps
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return int(self._perm[offset])

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accum * self.ctx.world_size

    def indices(self, step: int, micro: int = 0) -> list[int]:
        start = step * self.global_batch + (self.ctx.rank * self.accum + micro) * self.batch_size
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
    settings: dict | None = None,
    validate: Callable[[torch.nn.Module], float] | None = None,
    extendable: bool = False,
) -> TrainResult:
    """Train ``model`` on ``dataset`` for ``config.max_steps`` optimizer steps and return a :class:`TrainResult`.

    With ``output_dir``, checkpoints go to ``output_dir/checkpoints``, a run resumes from the newest one, and
    ``run.json`` records ``settings`` (what defines the run besides the loop's own settings): a finished run with
    the same settings is reloaded without training, other settings are refused. ``validate(model)`` → score runs
    every ``config.validate_every`` steps on the main process; the best weights (``config.select``) are returned.
    ``extendable``: a run may be continued to a larger ``max_steps`` (convergence checks; under a decaying schedule
    the continued run is not the same as a fresh longer one).
    ``on_step(step, loss)`` runs after every optimizer step."""
    if len(dataset) == 0:
        raise ValueError("train() got an empty dataset")
    device = resolve_device(config.device)
    ctx = init_distributed(device)
    model.to(device)
    identity = {"run": settings or {}, "loop": run_record.loop_identity(config, ctx.world_size, len(dataset))}
    output_dir = Path(output_dir) if output_dir is not None else None
    if output_dir is not None:
        record = run_record.check_same_run(output_dir, identity, extendable)
        if record is not None and record.get("finished"):
            return _reload_finished(model, output_dir, record, config)  # writes nothing: a read-only folder works
    with run_lock.hold(output_dir, enabled=ctx.is_main):
        if output_dir is not None:
            run_record.check_same_run(output_dir, identity, extendable)  # again: a writer may have ended meanwhile
        return _train_steps(model, dataset, config, collate_fn, loss_fn, output_dir, on_step, identity, validate,
                            ctx, device)


def _train_steps(model, dataset, config: TrainConfig, collate_fn, loss_fn, output_dir: Path | None, on_step,
                 identity: dict, validate, ctx: DistributedContext, device: torch.device) -> TrainResult:
    """The body of :func:`train` once the run is known to be new or unfinished and this process holds its lock."""
    if output_dir is not None:
        _refuse_checkpoints_past(output_dir / "checkpoints", config.max_steps)
    if output_dir is not None and ctx.is_main:
        run_record.write_record(output_dir, identity, finished=False)
        (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    optimizer = torch.optim.AdamW(
        list(model.parameters()), lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, config))
    torch.manual_seed(config.seed + ctx.rank)  # dropout differs per rank; data order does not depend on it

    step, log_path, ckpt_dir = 0, None, None
    if output_dir is not None:
        log_path, ckpt_dir = output_dir / "train_log.jsonl", output_dir / "checkpoints"
        found, state = _load_intact_checkpoint(ckpt_dir, model, ctx)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            step = state["step"]
            if ctx.is_main:
                print(f"resuming from {found} (step {step})")
    history = _read_log(log_path, step) if log_path else []
    if log_path and ctx.is_main:  # drop log lines past the checkpoint we resumed from
        log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    first_step = step
    tracker = make_tracker(output_dir, config.tracking, is_main=ctx.is_main, resume_step=step or None,
                           settings=identity) if output_dir is not None else Tracker()

    wrapped = ddp_wrap(model, device) if ctx.enabled else model
    sampler = BatchSampler(len(dataset), config.batch_size, config.seed, ctx, config.grad_accum_steps)
    best = _Best(output_dir, config, len(dataset), sampler.global_batch) if validate is not None else None
    validation: list[dict] = []
    model.train()
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and ctx.is_main), mininterval=2.0)
    running, tokens, started = 0.0, 0, time.perf_counter()
    while step < config.max_steps:
        for micro in range(config.grad_accum_steps):
            batch = _to(collate_fn([dataset[i] for i in sampler.indices(step, micro)]), device)
            last = micro == config.grad_accum_steps - 1
            # DDP all-reduces gradients on the last micro-batch only
            with (nullcontext() if (last or not ctx.enabled) else wrapped.no_sync()):
                with autocast(device, config.precision):
                    loss = loss_fn(wrapped, batch) / config.grad_accum_steps
                loss.backward()
            value = loss.item() * config.grad_accum_steps
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step + 1} (micro-batch {micro}); stopping the run")
            running += value / config.grad_accum_steps
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        grad_norm = _grad_norm(model, config.max_grad_norm)
        if not math.isfinite(grad_norm):  # one inf gradient turns every weight to NaN in the update
            raise FloatingPointError(f"gradient norm became {grad_norm} at step {step + 1} (before the optimizer "
                                     f"step; the loss was finite): stopping the run, no weights were updated")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if on_step is not None:
            on_step(step, running)
        if step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0):
            _check_finite_parameters(model, step)  # on every rank: none saves, none returns, NaN weights
        if step % config.log_every == 0 or step == config.max_steps:
            history.append(_log_row(step, running, step % config.log_every or config.log_every, scheduler, grad_norm,
                                    tokens, started, ctx, log_path, device))
            tracker.log(history[-1], step)
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            running, tokens, started = 0.0, 0, time.perf_counter()
        if best is not None and (step == config.max_steps or (config.validate_every and step % config.validate_every == 0)):
            validation.append(best.validate(step, model, validate, ctx))
            tracker.log({"valid/score": validation[-1]["valid"]}, step)
            model.train()
        if ckpt_dir is not None and ctx.is_main and (
            step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            ckpt.save_checkpoint(ckpt_dir, step, model, state, keep_last=config.keep_checkpoints)
    bar.close()
    tracker.close()
    chosen = best.restore(model) if best is not None else None
    if output_dir is not None and ctx.is_main:
        run_record.write_record(output_dir, identity, finished=True, best=chosen,
                                examples_seen=config.max_steps * sampler.global_batch)
    model.eval()
    return TrainResult(model=model, history=history, step=step, steps_trained=step - first_step, best=chosen,
                       validation=validation)


def _refuse_checkpoints_past(ckpt_dir: Path, max_steps: int) -> None:
    """A checkpoint beyond ``max_steps`` belongs to a longer run: resuming would return its weights as this run's."""
    found = ckpt.list_checkpoints(ckpt_dir)
    steps = [int(ckpt.STEP_DIR.match(f.name).group(1)) for f in found]
    if steps and max(steps) > max_steps:
        raise ValueError(f"{ckpt_dir} holds a checkpoint of step {max(steps)}, past max_steps={max_steps}: those are "
                         "the weights of a longer run; use another output_dir, or delete the folder to train again")


def _grad_norm(model: torch.nn.Module, max_norm: float | None) -> float:
    """The gradients' total L2 norm (all-reduced under DDP), clipping them to ``max_norm`` when it is set."""
    if max_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _check_finite_parameters(model: torch.nn.Module, step: int) -> None:
    """Raise ``FloatingPointError`` naming the first parameter holding a NaN or inf (one sync for the whole model)."""
    named = list(model.named_parameters())
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])
    if bool(finite.all()):
        return
    name = named[int((~finite).nonzero()[0])][0]
    raise FloatingPointError(f"parameter {name} is not finite after step {step} (the update blew up): stopping the "
                             "run without saving these weights; the previous checkpoints are kept")


def _load_intact_checkpoint(ckpt_dir: Path, model: torch.nn.Module, ctx: DistributedContext):
    """(folder, trainer state) of the newest checkpoint that loads, or (None, None) when there is none.

    A corrupt one is skipped with a message and renamed ``corrupt-step-NNNNNN`` (by the main process), so it is kept
    for inspection and a later save of the same step does not delete it. If none is intact, training from scratch
    would silently discard them: that is refused."""
    found = ckpt.list_checkpoints(ckpt_dir)
    skipped = []
    for folder in reversed(found):
        try:
            return folder, ckpt.load_checkpoint(folder, model)
        except ckpt.CorruptCheckpointError as err:
            skipped.append(f"{folder.name}: {err}")
            if ctx.is_main:
                kept = _set_aside(folder)
                print(f"skipping corrupt checkpoint {folder} ({err}); kept as {kept}")
    if skipped:
        raise ckpt.CorruptCheckpointError(
            f"no intact checkpoint in {ckpt_dir} ({'; '.join(skipped)}); the corrupt ones were renamed corrupt-step-*: "
            "rerun to train from scratch, or restore a copy of them")
    return None, None


def _set_aside(folder: Path) -> Path:
    """Rename a corrupt checkpoint folder to ``corrupt-<name>`` (``corrupt-<name>-2``, … if taken)."""
    target, n = folder.with_name(f"corrupt-{folder.name}"), 1
    while target.exists():
        n += 1
        target = folder.with_name(f"corrupt-{folder.name}-{n}")
    folder.rename(target)
    return target


def ddp_wrap(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` under DDP. A model whose loss never reaches some parameters (the implicit-CoT emulator's last block)
    says so (``has_unused_parameters``); one whose buffers every rank updates alike (an EMA of the all-reduced
    weights) says ``forward_sync_buffers = False``, so they are not sent from rank 0 at every step."""
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=getattr(model, "has_unused_parameters", False),
                                   forward_sync_buffers=getattr(model, "forward_sync_buffers", True))


def _reload_finished(model: torch.nn.Module, output_dir: Path, record: dict, config: TrainConfig) -> TrainResult:
    """A finished run's weights (the selected best ones when it validated), its log, and zero steps trained."""
    best = record.get("best")
    source = output_dir / _Best.FOLDER if best else None
    if source is None:
        found = ckpt.list_checkpoints(output_dir / "checkpoints")
        if not found or ckpt.STEP_DIR.match(found[-1].name).group(1) != f"{config.max_steps:06d}":
            raise FileNotFoundError(f"{output_dir / run_record.RECORD} says the run finished, but its final checkpoint "
                                    f"step-{config.max_steps:06d} is missing from {output_dir / 'checkpoints'}")
        source = found[-1]
    try:
        ckpt.load_weights(source, model)
    except ckpt.CorruptCheckpointError as err:
        raise ckpt.CorruptCheckpointError(
            f"{err}: it holds the weights of the finished run recorded in {output_dir / run_record.RECORD}; "
            f"restore the file, or delete {output_dir} to train the run again") from None
    model.eval()
    return TrainResult(model=model, history=read_log(output_dir), step=config.max_steps, steps_trained=0, best=best)


class _Best:
    """Validation scores and the weights of the best one so far, kept in ``output_dir/best/`` (so a resumed run
    keeps competing against the best of its earlier part)."""

    FOLDER = "best"

    def __init__(self, output_dir: Path | None, config: TrainConfig, num_examples: int, global_batch: int):
        self.folder = output_dir / self.FOLDER if output_dir is not None else None
        self.config, self.examples_per_step = config, global_batch / num_examples
        self.chosen, self.weights = None, None
        if self.folder is not None and (self.folder / "best.json").is_file():
            self.chosen = json.loads((self.folder / "best.json").read_text())

    def _better(self, score: float) -> bool:
        if self.chosen is None:
            return True
        return score > self.chosen["score"] if self.config.select == "max" else score < self.chosen["score"]

    def validate(self, step: int, model, validate, ctx) -> dict:
        score = None
        if ctx.is_main:
            model.eval()
            with torch.no_grad():
                score = float(validate(model))
            if self._better(score):
                self.chosen = {"step": step, "epoch": round(step * self.examples_per_step, 3), "score": score}
                self._save(model)
        if ctx.enabled:
            torch.distributed.barrier()
        row = {"step": step, "valid": score}
        if self.folder is not None and ctx.is_main:
            with open(self.folder.parent / "valid_log.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return row

    def _save(self, model) -> None:
        if self.folder is None:  # no output folder: keep the best weights in memory
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        ckpt.save_weights(self.folder, model)
        (self.folder / "best.json").write_text(json.dumps(self.chosen))

    def restore(self, model) -> dict | None:
        """Load the best weights into ``model`` (on every rank) and return which step they are from."""
        if self.weights is not None:
            model.load_state_dict(self.weights)
        elif self.folder is not None and (self.folder / "best.json").is_file():
            self.chosen = json.loads((self.folder / "best.json").read_text())
            ckpt.load_weights(self.folder, model)
        return self.chosen


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
