"""The likelihood bound against training steps, on the EMA weights (Lou, Meng & Ermon 2024: every model the
paper evaluates is the EMA of its training run, as the reference's ``load_model.py`` loads it).

A training log's loss is a one-sample bound of the online weights on each training batch; the model that is
sampled and evaluated is the EMA. Two ways to get the EMA's held-out bound at several steps:

* :class:`EmaElboCurve`, run from ``train_sedd(..., validate_sequences=...)`` after the EMA update of every
  ``validate_every``-th step, on the main process; rows go to ``<run>/elbo_log.jsonl`` (:func:`read_elbo_curve`).
  It draws from its own generator, so training itself is unchanged by it.
* :func:`elbo_vs_steps` on the checkpoints a run folder keeps. The shared loop keeps the newest
  ``keep_checkpoints`` (2) of those written every ``checkpoint_every`` steps, so a finished tiny run holds only
  steps 1800 and 2000: enough to compare two points, not for a curve.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from .. import run_record
from ..config import check_positive
from .likelihood import ElboResult, elbo
from .model import SEDD
from .sampling import sample

CURVE_FILE = "elbo_log.jsonl"


def curve_row(step: int, result: ElboResult, num_times: int) -> dict:
    """One point of the curve: the bound per real token, its SE, the perplexity and what it was estimated from."""
    return {"step": step, "nats_per_token": result.nats_per_token, "stderr": result.stderr_nats_per_token,
            "perplexity": result.perplexity, "num_sequences": result.num_sequences, "num_times": num_times}


class EmaElboCurve:
    """``on_step`` companion of train_sedd: the EMA's bound on held-out ``sequences`` every ``every`` steps."""

    def __init__(self, folder: str | Path, graph, noise, sequences: torch.Tensor, every: int,
                 count_mask: torch.Tensor | None = None, num_times: int = 8, batch_size: int = 64, seed: int = 0):
        check_positive("validate_every", every)
        self.path = Path(folder) / CURVE_FILE
        self.graph, self.noise, self.sequences, self.every = graph, noise, sequences, every
        self.count_mask, self.num_times, self.batch_size, self.seed = count_mask, num_times, batch_size, seed

    def __call__(self, step: int, container, last: bool = False) -> dict | None:
        """Evaluate ``container.ema`` (a SEDDWithEMA) at ``step`` when it is due; the online weights are restored."""
        if step % self.every and not last:
            return None
        model = container.model
        was_training = model.training
        with container.ema.swapped_in(model):
            result = elbo(model, self.graph, self.noise, self.sequences, num_times=self.num_times,
                          batch_size=self.batch_size, seed=self.seed, count_mask=self.count_mask)
        model.train(was_training)
        row = curve_row(step, result, self.num_times)
        self._write(row)
        return row

    def _write(self, row: dict) -> None:
        # a resumed run replays the steps after its checkpoint: drop the rows it will write again
        kept = [r for r in read_elbo_curve(self.path.parent, missing_ok=True) if r["step"] < row["step"]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in [*kept, row]))


def read_elbo_curve(run_dir: str | Path, missing_ok: bool = False) -> list[dict]:
    """The rows :class:`EmaElboCurve` wrote to ``run_dir/elbo_log.jsonl``, oldest first."""
    path = Path(run_dir) / CURVE_FILE
    if not path.is_file():
        if missing_ok:
            return []
        raise FileNotFoundError(f"{path} does not exist: the run was trained without validate_sequences (pass them "
                                f"to train_sedd in a new output_dir), or use elbo_vs_steps on its kept checkpoints")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _recorded_architecture(run_dir: Path) -> SEDD:
    """A SEDD of the architecture recorded in ``run_dir/run.json`` by train_sedd."""
    from .training import SEDDRunConfig  # training imports this module

    record = run_record.read_record(run_dir)
    settings = (record or {}).get("identity", {}).get("run", {})
    if "num_states" not in settings:
        raise FileNotFoundError(f"{run_dir / run_record.RECORD} is missing or was not written by train_sedd: "
                                "pass model= (a SEDD of the run's architecture)")
    fields = {k: settings[k] for k in SEDDRunConfig.__dataclass_fields__ if k in settings}
    return SEDD(SEDDRunConfig(**fields).model_config(settings["num_states"]))


def load_ema_weights(checkpoint_dir: str | Path, model: SEDD) -> SEDD:
    """Fill ``model`` with the EMA shadow weights of a train_sedd checkpoint folder (``step-NNNNNN``).

    The checkpoint holds a SEDDWithEMA state dict: ``model.*`` (online) and ``ema.shadow__*`` (EMA)."""
    from .training import SEDDWithEMA  # training imports this module

    container = SEDDWithEMA(model, decay=0.5)  # the decay is not stored and plays no part in loading
    ckpt.load_weights(checkpoint_dir, container)
    container.ema.copy_to(model)
    return model.eval()


def elbo_vs_steps(run_dir: str | Path, graph, noise, sequences: torch.Tensor, count_mask: torch.Tensor | None = None,
                  model: SEDD | None = None, num_times: int = 16, batch_size: int = 64, seed: int = 0,
                  device: str | torch.device = "cpu") -> list[dict]:
    """[{"step", "nats_per_token", "stderr", "perplexity", ...}] of the EMA weights in every checkpoint kept in
    ``run_dir/checkpoints`` (see the module docstring: usually only the newest two).

    ``model`` is any SEDD of the run's architecture (its weights are overwritten); by default it is built from
    the run's ``run.json`` (a fine-tuned hub model needs ``model=``)."""
    run_dir = Path(run_dir)
    found = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no step-NNNNNN checkpoint")
    model = (model if model is not None else _recorded_architecture(run_dir)).to(device)
    rows = []
    for folder in found:
        load_ema_weights(folder, model)
        result = elbo(model, graph, noise, sequences, num_times=num_times, batch_size=batch_size, seed=seed,
                      count_mask=count_mask)
        rows.append(curve_row(int(ckpt.STEP_DIR.match(folder.name).group(1)), result, num_times))
    return rows


def curve_for_plot(rows: list[dict]) -> list[dict]:
    """Rows as ``viz.loss_curves`` reads them: ``{"step", "loss"}`` with the perplexity as the value."""
    return [{"step": r["step"], "loss": r["perplexity"]} for r in rows if math.isfinite(r["perplexity"])]


@dataclass(frozen=True)
class SamplingSpeed:
    """One timed draw: ``steps`` predictor steps in ``seconds`` of wall clock, ``nfe`` network evaluations."""

    steps: int
    seconds: float
    nfe: int

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sampling_speed(model, graph, noise, length: int, steps: int, predictor: str = "analytic", batch_size: int = 1,
                   warmup_steps: int = 2, generator: torch.Generator | None = None) -> SamplingSpeed:
    """Time one draw of ``batch_size`` sequences with ``steps`` predictor steps, after an untimed warm-up draw of
    ``warmup_steps``; the clock is read as ``evaluate`` and ``dot.throughput`` read it (perf_counter, with the
    device synchronised before each read)."""
    check_positive("steps", steps)
    check_positive("warmup_steps", warmup_steps)
    device = next(model.parameters()).device
    sample(model, graph, noise, batch_size, length, warmup_steps, predictor, generator=generator)
    _synchronize(device)
    started = time.perf_counter()
    timed = sample(model, graph, noise, batch_size, length, steps, predictor, generator=generator)
    _synchronize(device)
    return SamplingSpeed(steps, time.perf_counter() - started, timed.nfe)
