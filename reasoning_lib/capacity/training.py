"""Train and evaluate the capacity models with the shared loop (spec §2.4-2.5, §3.1, §3.5-3.6, §4).

``train_size`` trains grid entry ``size`` of a :class:`~.presets.CapacityConfig` on QAs whose labels are the
answer tokens only, resumes from checkpoints, saves model + tokenizer with ``save_pretrained`` and writes that
size's ``metrics.json``: parameters, per-subject losses in bits, capacity, bits per parameter, dataset entropy,
loss per eval split (§2.5), steps and a convergence flag. A finished run is reloaded, never retrained; a
change of evaluation settings only re-evaluates it. Output layout::

    <output_dir>/world-<hash>/   profiles (HF Dataset), tokenizer, split.json: shared by every size
    <output_dir>/size-<label>/   model/, checkpoints/, train_log.jsonl, run_config.json, metrics.json

Differences from the reference: the convergence rule of §3.5 (gradient of the loss, window 15, rolling mean
3) is applied to the last quarter of the training log before any learning-rate decay, with a threshold scaled
to the run length (:func:`is_converged`); capacity uses the per-subject path on 1-hop losses and the average
path on the ``train_twohop`` loss for 2-hop (big-hash), since that split lacks the held-out final attribute.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets.utils import logging as datasets_logging
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from ..chapter import write_metrics
from ..runtime import launch_info, resolve_device
from ..train import finished_run, mark_finished, read_log, train
from .entropy import capacity_from_losses, capacity_from_mean_loss, entropy_budget
from .losses import answer_scores, mean_loss_by_subject
from .presets import EVAL_FIELDS, WORLD_FIELDS, CapacityConfig
from .profiles import Profiles, generate_profiles
from .questions import QADataset, QAEncoder, QuestionSampler
from .sizing import build_llama, config_parameter_count
from .splits import EVAL_MODES, QuestionBatch, TwoHopSplit, eval_questions, one_hop_questions
from .tokenizer import build_qa_tokenizer

# (label, scheme, selection, support, hops) of the dataset-entropy table (spec §3.2-3.4)
ENTROPY_SCHEMES = (
    ("optimal", "optimal", "optimal", "generating", 1),
    ("enumerate names", "optimal", "enumerate", "generating", 1),
    ("independent", "independent", "independent", "generating", 1),
    ("optimal, observed support", "optimal", "optimal", "observed", 1),
    ("2-hop-double", "2-hop-double", "optimal", "generating", 2),
    ("2-hop-big-hash", "2-hop-big-hash", "optimal", "generating", 2),
)


@dataclass
class World:
    """The profiles, QA tokenizer and held-out 2-hop split that every model of a run shares."""

    profiles: Profiles
    tokenizer: PreTrainedTokenizerFast
    split: TwoHopSplit
    folder: Path
    _encoder: QAEncoder | None = field(default=None, repr=False)

    @property
    def encoder(self) -> QAEncoder:
        if self._encoder is None:
            self._encoder = QAEncoder(self.profiles, self.tokenizer)
        return self._encoder


@contextmanager
def _quiet_datasets():
    """No "Saving the dataset" bar in a chapter page (it would render as an empty widget)."""
    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def prepare_world(config: CapacityConfig, output_dir: str | os.PathLike, seed: int = 0) -> World:
    """Generate the world once (written atomically, so parallel processes share one copy), then load it."""
    settings = {**config.subset(WORLD_FIELDS), "seed": seed}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    folder = Path(output_dir) / f"world-{digest}"
    if not (folder / "settings.json").is_file():
        rng = np.random.default_rng(seed)
        profiles = generate_profiles(config.profile_config(), config.value_pools(), rng)
        tokenizer = build_qa_tokenizer(profiles, config.vocab_size, config.tokenizer_texts, seed=seed)
        split = TwoHopSplit.build(profiles.relations, rng, config.heldout_fraction, config.specific_fraction)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with _quiet_datasets():
            profiles.save(tmp / "profiles")
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "split.json").write_text(json.dumps(split.to_dict()))
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process wrote it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    profiles = Profiles.load(folder / "profiles")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer"))
    split = TwoHopSplit.from_dict(json.loads((folder / "split.json").read_text()), profiles.relations)
    return World(profiles, tokenizer, split, folder)


def evaluate_splits(model: torch.nn.Module, world: World, num_per_mode: int, seed: int = 0,
                    batch_size: int = 256) -> dict[str, dict]:
    """Mean answer loss (bits) and exact-match accuracy per eval mode of spec §2.5 (NaN for an empty mode)."""
    out = {}
    for index, mode in enumerate(EVAL_MODES):
        hops = 1 if mode == "train_onehop" else 2
        try:  # the same seeded stream per mode as iter_eval_questions
            questions = eval_questions(world.split, mode, num_per_mode, np.random.default_rng([seed, index]))
        except ValueError:  # a held-out category can be empty in a very small world
            out[mode] = {"loss_bits": math.nan, "accuracy": math.nan, "hops": hops}
            continue
        bits, correct = answer_scores(model, world.encoder, questions, batch_size)
        out[mode] = {"loss_bits": float(bits.mean()), "accuracy": float(correct.mean()), "hops": hops}
    return out


def entropy_by_scheme(profiles: Profiles) -> dict[str, float]:
    """Dataset entropy in bits under each scheme of ``ENTROPY_SCHEMES`` (E₁ for 1-hop, E₂ for the 2-hop ones)."""
    return {label: entropy_budget(profiles, scheme, selection, support).dataset_bits(hops)
            for label, scheme, selection, support, hops in ENTROPY_SCHEMES}


def loss_slope(history: list[dict], tail: float = 0.25, window: int = 15) -> float:
    """d(loss)/d(step) at the end of a run: the gradient over the last ``tail`` of the log, smoothed by rolling
    means of ``window`` and then 3 rows (the spec §3.5 filter); NaN with fewer than 3 rows."""
    rows = history[-max(3, int(len(history) * tail)):]
    if len(rows) < 3:
        return math.nan
    steps = np.array([r["step"] for r in rows], dtype=float)
    grad = np.gradient(np.array([r["loss"] for r in rows], dtype=float), steps)
    for width in (min(window, len(grad)), min(3, len(grad))):
        grad = np.convolve(grad, np.ones(width) / width, mode="valid")
    return float(grad[-1])


def is_converged(history: list[dict], max_steps: int, tolerance: float, stable_steps: int | None = None) -> bool:
    """True when, at the final slope, a whole run's length of steps would move the loss by < ``tolerance`` of it.

    Only rows up to ``stable_steps`` count: a decaying learning rate flattens the loss whether or not the model
    has converged (the reference's rule assumes a constant rate)."""
    rows = [r for r in history if stable_steps is None or r["step"] <= stable_steps]
    slope = loss_slope(rows)
    if not math.isfinite(slope):  # too short a log to tell
        return False
    tail = [r["loss"] for r in rows[-max(3, len(rows) // 4):]]
    return abs(slope) * max_steps < tolerance * float(np.mean(tail))


@dataclass
class SizeResult:
    """One trained size: its metrics, its loss history and its folder (the model loads on demand)."""

    metrics: dict
    history: list[dict]
    folder: Path
    model: PreTrainedModel | None = field(default=None, repr=False)

    def load_model(self, device: str = "auto") -> PreTrainedModel:
        if self.model is None:
            self.model = AutoModelForCausalLM.from_pretrained(str(self.folder / "model")).eval()
        return self.model.to(resolve_device(device))


def initial_model(config: CapacityConfig, size: int, world: World, seed: int) -> PreTrainedModel:
    """The untrained model of grid entry ``size``: the same weights every call (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_llama(config.model_config(size, world.tokenizer))


def _one_hop_questions(config: CapacityConfig, profiles: Profiles, seed: int) -> QuestionBatch:
    people = None
    if config.eval_people is not None:
        rng = np.random.default_rng([seed, 3])
        people = np.sort(rng.choice(profiles.num_people, config.eval_people, replace=False))
    return one_hop_questions(profiles.num_people, len(profiles.subjects), people=people)


def _metrics(model, config: CapacityConfig, size: int, world: World, history: list[dict], seed: int) -> dict:
    """Everything ``metrics.json`` of one size holds (spec §5: scheme, support, N, R, real parameters, step)."""
    questions = _one_hop_questions(config, world.profiles, seed)
    bits, correct = answer_scores(model, world.encoder, questions)
    initial_bits, _ = answer_scores(initial_model(config, size, world, seed).to(model.device), world.encoder, questions)
    losses = mean_loss_by_subject(world.profiles, questions, bits)
    budget = entropy_budget(world.profiles, config.scheme, config.selection, config.support)
    params = config_parameter_count(model.config)
    capacity = capacity_from_losses(budget, losses, hops=1, num_parameters=params)
    splits = evaluate_splits(model, world, config.eval_per_mode, seed)
    metrics = {
        "size": config.size_label(size), "size_index": size, "sizing": config.sizing,
        "target": config.model_sizes[size],
        "hidden_size": model.config.hidden_size, "intermediate_size": model.config.intermediate_size,
        "num_hidden_layers": model.config.num_hidden_layers, "num_parameters": params,
        "num_parameters_non_embedding": config_parameter_count(model.config, include_embeddings=False),
        "num_people": world.profiles.num_people, "num_relations": world.profiles.num_relations,
        "steps": history[-1]["step"] if history else 0, "exposures_per_fact": config.exposures_per_fact,
        "train_loss_final": history[-1]["loss"] if history else math.nan,
        "tokens_per_second": float(np.mean([r["tokens_per_s"] for r in history])) if history else math.nan,
        "initial_loss_bits": float(initial_bits.mean()), "one_hop_loss_bits": float(bits.mean()),
        "one_hop_accuracy": float(correct.mean()), "subject_loss_bits": losses,
        "subject_entropy_bits": budget.subject_bits,
        "subject_capacity_bits": capacity.per_subject_bits, "capacity_bits": capacity.total_bits,
        "bits_per_param": capacity.bits_per_parameter, "dataset_entropy_bits": budget.dataset_bits(1),
        "baseline_bits": budget.baseline_bits, "scheme": config.scheme, "selection": config.selection,
        "support": config.support, "splits": splits, "loss_slope": loss_slope(history),
        "converged": is_converged(history, config.max_steps, config.converge_tolerance, config.stable_steps),
        "seed": seed,
        "eval_settings": json.loads(json.dumps(config.subset(EVAL_FIELDS))),
    }
    if 2 in config.orders and math.isfinite(splits["train_twohop"]["loss_bits"]):
        big_hash = entropy_budget(world.profiles, "2-hop-big-hash", config.selection, config.support)
        two_hop = capacity_from_mean_loss(big_hash, splits["train_twohop"]["loss_bits"], hops=2, num_parameters=params)
        metrics["two_hop_capacity_bits"] = two_hop.total_bits
    return metrics


def _run_settings(config: CapacityConfig, size: int, seed: int) -> dict:
    """What identifies a trained model: every setting except evaluation and the other grid entries."""
    kept = {k: v for k, v in asdict(config).items() if k not in EVAL_FIELDS and k != "model_sizes"}
    return {"seed": seed, "size": config.size_label(size), **kept}


def _fit(config: CapacityConfig, size: int, world: World, folder: Path, seed: int, device: str):
    """(model, history): reloaded when ``folder`` holds this finished run, else trained (resuming checkpoints)."""
    run = _run_settings(config, size, seed)
    if finished_run(folder, run):
        return SizeResult({}, read_log(folder), folder).load_model(device), read_log(folder)
    model = initial_model(config, size, world, seed)
    sampler = QuestionSampler(world.profiles, config.orders, config.hop_ratio, world.split)
    data = QADataset(world.encoder, sampler, num_sequences=config.max_steps * config.batch_size,
                     qas_per_sequence=config.qas_per_sequence, max_seq_len=config.max_seq_len, seed=seed)
    settings = config.train_config(seed, device, launch_info().world_size, model.config.hidden_size)
    result = train(model, data, settings, data.collate, output_dir=folder, settings=run, extendable=True)
    if launch_info().is_main:
        result.model.save_pretrained(str(folder / "model"))
        world.tokenizer.save_pretrained(str(folder / "model"))
        mark_finished(folder, run)
    return result.model, result.history


def train_size(config: CapacityConfig, size: int, output_dir: str | os.PathLike, seed: int = 0,
               device: str = "auto") -> SizeResult:
    """Train (or resume, or reload) grid entry ``size`` and write its ``metrics.json``; works under torchrun."""
    config.check_size(size)
    world = prepare_world(config, output_dir, seed)
    folder = Path(output_dir) / f"size-{config.size_label(size)}"
    path = folder / "metrics.json"
    if path.is_file() and finished_run(folder, _run_settings(config, size, seed)):
        cached = json.loads(path.read_text())
        if cached.get("eval_settings") == json.loads(json.dumps(config.subset(EVAL_FIELDS))):
            return SizeResult(cached, read_log(folder), folder)  # nothing to do: collect what is there
    model, history = _fit(config, size, world, folder, seed, device)
    if not launch_info().is_main:
        return SizeResult({}, history, folder, model)
    write_metrics(folder, _metrics(model, config, size, world, history, seed))
    return SizeResult(json.loads(path.read_text()), history, folder, model)


def run_sweep(config: CapacityConfig, output_dir: str | os.PathLike, seed: int = 0, device: str = "auto",
              sizes: list[int] | None = None) -> list[SizeResult]:
    """:func:`train_size` for every grid entry (or ``sizes``), one after another."""
    return [train_size(config, size, output_dir, seed, device) for size in (sizes or range(len(config.model_sizes)))]


def collect_sweep(output_dir: str | os.PathLike, config: CapacityConfig | None = None) -> list[dict]:
    """The ``metrics.json`` of every trained size under ``output_dir`` (only ``config``'s sizes if given), by size."""
    folders = sorted(Path(output_dir).glob("size-*/metrics.json"))
    if config is not None:
        wanted = {f"size-{config.size_label(i)}" for i in range(len(config.model_sizes))}
        folders = [p for p in folders if p.parent.name in wanted]
    if not folders:
        raise FileNotFoundError(f"no size-*/metrics.json under {output_dir}: run train_size (or "
                                "python -m reasoning_lib.capacity --size <i>) first")
    return sorted((json.loads(p.read_text()) for p in folders), key=lambda m: m["num_parameters"])


def train_multihop(config: CapacityConfig, output_dir: str | os.PathLike, seed: int = 0,
                   device: str = "auto") -> tuple[PreTrainedModel, World, SizeResult]:
    """Chapter 06's model: grid entry 0 trained on 1-hop + 2-hop questions (``orders`` must include 2)."""
    if 2 not in config.orders:
        raise ValueError(f"train_multihop needs 2-hop training questions: orders={config.orders} lacks 2")
    result = train_size(config, 0, output_dir, seed, device)
    return result.load_model(device), prepare_world(config, output_dir, seed), result


__all__ = ["ENTROPY_SCHEMES", "SizeResult", "World", "answer_scores", "collect_sweep", "entropy_by_scheme",
           "evaluate_splits", "initial_model", "is_converged", "loss_slope", "prepare_world", "run_sweep",
           "train_multihop", "train_size"]
