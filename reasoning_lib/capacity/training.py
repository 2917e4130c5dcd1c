"""Train and evaluate the capacity models with the shared loop (reference ``train/train_llama.py``,
``train/dataset.py`` and ``train/train_utils.py`` of ``EleutherAI/transformer-reasoning``).

``train_size`` trains grid entry ``size`` of a :class:`~.presets.CapacityConfig` on QAs whose labels are the
answer tokens only, resumes from checkpoints, saves model + tokenizer with ``save_pretrained`` and writes that
size's ``metrics.json``: parameters, per-subject losses in bits, capacity under both entropy conventions and every
scheme of :mod:`.report` (at the end and at the checkpoints of ``eval_every``), bits per parameter, dataset
entropy, loss per eval split, steps, the 1-hop exposures per fact actually trained, and a convergence flag.
A finished run is reloaded, never retrained; a change of evaluation settings only re-evaluates it. Layout::

    <output_dir>/world-<hash>/   profiles (HF Dataset), tokenizer, split.json: shared by every size
    <output_dir>/size-<label>/   model/, checkpoints/, train_log.jsonl, run_config.json, metrics.json,
                                 capacity_log.jsonl (capacity at checkpoints), stream_log.jsonl (QAs trained)

Training data is a :class:`~.stream.QAStream`: fresh questions in chunk-epochs (bounded memory), whole QAs only.
Differences from the reference: convergence is the slope over a fixed window of steps before any learning-rate
decay (:func:`~.report.window_convergence`); the 2-hop capacities use the 2-hop training distribution's
subjects (it lacks the held-out final attribute).
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

from .. import run_record
from ..chapter import write_metrics
from ..runtime import launch_info, resolve_device
from ..train import finished_run, mark_finished, read_log, train
from .entropy import SUPPORTS, capacity_from_losses, entropy_budget
from .losses import answer_scores, mean_loss_by_subject
from .presets import EVAL_FIELDS, WORLD_FIELDS, CapacityConfig
from .profiles import Profiles, generate_profiles
from .questions import QAEncoder, QuestionSampler
from .report import (capacity_budgets, capacity_eval_steps, capacity_rows, find_row, is_converged, loss_slope,
                     two_hop_subject_questions, window_convergence)
from .sizing import build_llama, config_parameter_count
from .splits import EVAL_MODES, QuestionBatch, TwoHopSplit, eval_questions, one_hop_questions
from .stream import STREAM_LOG, TALLY_FIELDS, QAStream, read_stream_log, resume_step, truncate_stream_log
from .tokenizer import build_qa_tokenizer

CAPACITY_LOG = "capacity_log.jsonl"
# What the training data is, beyond the config: whole QAs per sequence, drawn per chunk-epoch (stream.py).
# A run trained otherwise (QAs cut at max_seq_len, one seeded draw per sequence index) is another run.
DATA_FORMAT = "whole-qas/chunk-epochs"

# (label, scheme, selection, support, hops) of the dataset-entropy table (schemes of :mod:`.entropy`)
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
    """Mean answer loss (bits) and exact-match accuracy per eval mode of :data:`.splits.EVAL_MODES` (NaN for an
    empty mode)."""
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


class CapacityEvaluator:
    """The fixed questions and entropy budgets of one run's capacity evaluations (checkpoints and the end).

    1-hop: every subject of the ``eval_people`` people (all N when None). 2-hop (when 2 is a trained order):
    ``eval_per_mode`` 2-hop training-distribution questions per final subject."""

    def __init__(self, config: CapacityConfig, world: World, seed: int):
        self.world = world
        self.one_hop = _one_hop_questions(config, world.profiles, seed)
        self.two_hop = None
        if 2 in config.orders:
            self.two_hop = two_hop_subject_questions(world.split, config.eval_per_mode, np.random.default_rng([seed, 7]))
        self.budgets = capacity_budgets(world.profiles, config.selection)

    def __call__(self, model: torch.nn.Module, step: int) -> dict:
        """Mean losses (bits per answer; per subject too), exact match and every capacity row of ``model``, at
        ``step``: a JSON-ready row of ``capacity_log.jsonl``."""
        profiles, params = self.world.profiles, config_parameter_count(model.config)
        bits, correct = answer_scores(model, self.world.encoder, self.one_hop)
        row = {"step": step, "one_hop_loss_bits": float(bits.mean()), "one_hop_accuracy": float(correct.mean()),
               "subject_loss_bits": mean_loss_by_subject(profiles, self.one_hop, bits)}
        two = None
        if self.two_hop is not None:
            two_bits, two_correct = answer_scores(model, self.world.encoder, self.two_hop)
            two = mean_loss_by_subject(profiles, self.two_hop, two_bits)
            row.update(two_hop_loss_bits=float(two_bits.mean()), two_hop_accuracy=float(two_correct.mean()),
                       two_hop_subject_loss_bits=two)
        row["capacities"] = capacity_rows(self.budgets, row["subject_loss_bits"], two, params)
        return row


def read_capacity_log(folder: str | os.PathLike, up_to_step: float = math.inf) -> list[dict]:
    """The capacity rows a run logged at its checkpoints (``capacity_log.jsonl``), up to ``up_to_step``."""
    path = Path(folder) / CAPACITY_LOG
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [r for r in rows if r["step"] <= up_to_step]


class _StepHook:
    """The loop's ``on_step``: tells the stream which step comes next, logs the QAs trained at checkpoint steps
    (summed over processes) and, on the main process, evaluates capacity at the steps of ``eval_steps``.

    Its first call also learns the step the run resumed from, drops log rows past it (a resumed run redoes those
    steps) and takes the QA totals logged there."""

    def __init__(self, stream: QAStream, folder: Path, settings, evaluator: CapacityEvaluator, model,
                 eval_steps: list[int], guessed_start: int, device: torch.device):
        self.stream, self.folder, self.settings, self.evaluator, self.model = stream, folder, settings, evaluator, model
        self.eval_steps, self.guessed_start, self.device = set(eval_steps), guessed_start, device
        self.is_main, self.totals = launch_info().is_main, None

    def _start(self, step: int) -> None:
        start = step - 1
        if start != self.guessed_start:
            print(f"note: the run resumed from step {start}, not {self.guessed_start} (a checkpoint was skipped): "
                  f"step {step} trained on the questions of chunk-epoch {self.stream.epoch}")
        totals = truncate_stream_log(self.folder, start) if self.is_main else {}
        if self.is_main:
            rows = read_capacity_log(self.folder, start)
            (self.folder / CAPACITY_LOG).write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.totals = np.array([totals.get(k, 0) for k in TALLY_FIELDS], dtype=np.int64)

    def _log_tally(self, step: int) -> None:
        counts = self.stream.tally.take()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            summed = torch.tensor(counts, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(summed)  # every rank calls on_step at the same step
            counts = summed.cpu().numpy().round().astype(np.int64)
        if self.is_main:
            self.totals = self.totals + counts
            row = {"step": step, **dict(zip(TALLY_FIELDS, self.totals.tolist()))}
            with open(self.folder / STREAM_LOG, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    def __call__(self, step: int, loss: float) -> None:
        if self.totals is None:
            self._start(step)
        self.stream.set_step(step)
        if step == self.settings.max_steps or (self.settings.checkpoint_every and step % self.settings.checkpoint_every == 0):
            self._log_tally(step)
        if step in self.eval_steps and self.is_main:
            row = self.evaluator(self.model, step)
            with open(self.folder / CAPACITY_LOG, "a") as handle:
                handle.write(json.dumps(row) + "\n")


def _headline(evaluation: dict, config: CapacityConfig, world: World, params: int) -> dict:
    """The 1-hop per-subject capacity under the config's scheme and selection, for each entropy convention."""
    out = {}
    for support in SUPPORTS:
        budget = entropy_budget(world.profiles, config.scheme, config.selection, support)
        capacity = capacity_from_losses(budget, evaluation["subject_loss_bits"], hops=1, num_parameters=params)
        out[support] = {"budget": budget, "capacity": capacity}
    return out


def convergence_report(config: CapacityConfig, history: list[dict], checkpoints: list[dict]) -> dict:
    """:func:`~.report.window_convergence` of the training loss and of the evaluated 1-hop (and 2-hop) losses.

    ``converged``: the training loss is converged over the window, and no evaluated series that spans the window
    is still moving."""
    args = (config.converge_window, config.converge_tolerance, config.stable_steps)
    series = {"train_loss": window_convergence(history, *args)}
    for key in ("one_hop_loss_bits", "two_hop_loss_bits"):
        if any(key in row for row in checkpoints):
            series[key] = window_convergence(checkpoints, *args, key=key)
    converged = series["train_loss"]["converged"] and all(
        v["converged"] for k, v in series.items() if k != "train_loss" and v["covered"])
    return {"series": series, "converged": bool(converged)}


def _exposures(world: World, folder: Path, steps: int) -> dict:
    """QAs actually trained (the stream's log at the last step): 1-hop exposures per fact, QAs per sequence."""
    rows = read_stream_log(folder, steps)
    if not rows:
        return {"exposures_per_fact": math.nan, "qas_per_sequence_mean": math.nan, "qas_trained": {}}
    last = rows[-1]
    facts = world.profiles.num_people * len(world.profiles.subjects)
    qas = last["one_hop_qas"] + last["two_hop_qas"]
    return {"exposures_per_fact": last["one_hop_qas"] / facts, "qas_per_sequence_mean": qas / max(1, last["sequences"]),
            "qas_trained": last}


def _metrics(model, config: CapacityConfig, size: int, world: World, history: list[dict], seed: int,
             folder: Path) -> dict:
    """Everything ``metrics.json`` of one size holds, with what a capacity needs to be read: scheme, support, N, R,
    real parameters and step."""
    evaluator = CapacityEvaluator(config, world, seed)
    steps = history[-1]["step"] if history else 0
    final = evaluator(model, steps)
    initial = evaluator(initial_model(config, size, world, seed).to(model.device), 0)
    params = config_parameter_count(model.config)
    headline = _headline(final, config, world, params)
    main = headline[config.support]
    splits = evaluate_splits(model, world, config.eval_per_mode, seed)
    checkpoints = read_capacity_log(folder, steps)
    convergence = convergence_report(config, history, checkpoints)
    metrics = {
        "size": config.size_label(size), "size_index": size, "sizing": config.sizing,
        "target": config.model_sizes[size],
        "hidden_size": model.config.hidden_size, "intermediate_size": model.config.intermediate_size,
        "num_hidden_layers": model.config.num_hidden_layers, "num_parameters": params,
        "num_parameters_non_embedding": config_parameter_count(model.config, include_embeddings=False),
        "num_people": world.profiles.num_people, "num_relations": world.profiles.num_relations,
        "orders": list(config.orders), "hop_ratio": config.hop_ratio,
        "steps": steps, "exposures_per_fact_planned": config.exposures_per_fact, **_exposures(world, folder, steps),
        "train_loss_final": history[-1]["loss"] if history else math.nan,
        "tokens_per_second": float(np.mean([r["tokens_per_s"] for r in history])) if history else math.nan,
        "initial_loss_bits": initial["one_hop_loss_bits"], "one_hop_loss_bits": final["one_hop_loss_bits"],
        "one_hop_accuracy": final["one_hop_accuracy"], "subject_loss_bits": final["subject_loss_bits"],
        "subject_entropy_bits": main["budget"].subject_bits,
        "subject_capacity_bits": main["capacity"].per_subject_bits, "capacity_bits": main["capacity"].total_bits,
        "bits_per_param": main["capacity"].bits_per_parameter, "dataset_entropy_bits": main["budget"].dataset_bits(1),
        "baseline_bits": main["budget"].baseline_bits, "scheme": config.scheme, "selection": config.selection,
        "support": config.support,
        "capacity_bits_by_support": {k: v["capacity"].total_bits for k, v in headline.items()},
        "bits_per_param_by_support": {k: v["capacity"].bits_per_parameter for k, v in headline.items()},
        "dataset_entropy_bits_by_support": {k: v["budget"].dataset_bits(1) for k, v in headline.items()},
        "capacities": final["capacities"], "checkpoints": checkpoints, "splits": splits,
        "loss_slope": loss_slope(history, config.converge_window, config.stable_steps),
        "convergence": convergence, "converged": convergence["converged"], "seed": seed,
        "run_settings": json.loads(json.dumps(_run_settings(config, size, seed))),
        "eval_settings": json.loads(json.dumps(config.subset(EVAL_FIELDS))),
    }
    if 2 in config.orders:
        metrics.update(two_hop_loss_bits=final["two_hop_loss_bits"],
                       two_hop_subject_loss_bits=final["two_hop_subject_loss_bits"])
        big_hash = find_row(final["capacities"], 2, "2-hop-big-hash", "average", config.support)
        metrics["two_hop_capacity_bits"] = big_hash["capacity_bits"]
    return metrics


def _run_settings(config: CapacityConfig, size: int, seed: int) -> dict:
    """What identifies a trained model: every setting except evaluation and the other grid entries."""
    kept = {k: v for k, v in asdict(config).items() if k not in EVAL_FIELDS and k != "model_sizes"}
    return {"seed": seed, "size": config.size_label(size), "data_format": DATA_FORMAT, **kept}


def training_stream(config: CapacityConfig, world: World, seed: int) -> QAStream:
    """The training stream of ``config``: whole QAs, fresh per chunk-epoch of ``stream_chunk`` sequences."""
    sampler = QuestionSampler(world.profiles, config.orders, config.hop_ratio, world.split)
    return QAStream(world.encoder, sampler, global_batch=config.batch_size, chunk=config.stream_chunk,
                    max_qas=config.qas_per_sequence, max_seq_len=config.max_seq_len, seed=seed)


def _fit(config: CapacityConfig, size: int, world: World, folder: Path, seed: int, device: str):
    """(model, history): reloaded when ``folder`` holds this finished run, else trained (resuming checkpoints)."""
    run = _run_settings(config, size, seed)
    if finished_run(folder, run):
        return SizeResult({}, read_log(folder), folder).load_model(device), read_log(folder)
    model = initial_model(config, size, world, seed)
    settings = config.train_config(seed, device, launch_info().world_size, model.config.hidden_size)
    stream = training_stream(config, world, seed)
    start = resume_step(folder)
    stream.set_step(start)
    hook = _StepHook(stream, folder, settings, CapacityEvaluator(config, world, seed), model,
                     capacity_eval_steps(config.max_steps, config.eval_every), start, resolve_device(device))
    result = train(model, stream, settings, stream.collate, output_dir=folder, settings=run, extendable=True,
                   on_step=hook)
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
    write_metrics(folder, _metrics(model, config, size, world, history, seed, folder))
    return SizeResult(json.loads(path.read_text()), history, folder, model)


def run_sweep(config: CapacityConfig, output_dir: str | os.PathLike, seed: int = 0, device: str = "auto",
              sizes: list[int] | None = None) -> list[SizeResult]:
    """:func:`train_size` for every grid entry (or ``sizes``), one after another."""
    return [train_size(config, size, output_dir, seed, device) for size in (sizes or range(len(config.model_sizes)))]


def collect_sweep(output_dir: str | os.PathLike, config: CapacityConfig | None = None,
                  seed: int | None = None) -> list[dict]:
    """The ``metrics.json`` of every trained size under ``output_dir``, by parameter count.

    With ``config``: only its sizes (whose folder names carry the hop orders), and each must have been trained
    with ``config``'s settings (hop orders, world, steps, ...; ``seed`` too when given): one trained otherwise
    raises ``ValueError`` naming the settings that differ, rather than being reported as this config's run."""
    folders = sorted(Path(output_dir).glob("size-*/metrics.json"))
    if config is not None:
        wanted = {f"size-{config.size_label(i)}": i for i in range(len(config.model_sizes))}
        folders = [p for p in folders if p.parent.name in wanted]
    if not folders:
        hops = "" if config is None else f" for hop orders {config.orders}"
        raise FileNotFoundError(f"no size-*/metrics.json{hops} under {output_dir}: run train_size (or "
                                "python -m reasoning_lib.capacity --size <i>) first")
    found = [json.loads(p.read_text()) for p in folders]
    if config is not None:
        for path, metrics in zip(folders, found):
            _check_collected(path, metrics, config, wanted[path.parent.name], seed)
    return sorted(found, key=lambda m: m["num_parameters"])


def _check_collected(path: Path, metrics: dict, config: CapacityConfig, size: int, seed: int | None) -> None:
    expected = _run_settings(config, size, metrics.get("seed", 0) if seed is None else seed)
    recorded = metrics.get("run_settings")
    if recorded is None:
        raise ValueError(f"{path} records no run_settings (written by an older version): retrain that size or "
                         "delete its folder")
    changed = run_record.differences(recorded, expected)
    if changed:
        raise ValueError(f"{path} was trained with other settings than this config ({'; '.join(changed)}): "
                         "use another output_dir, or train the config there")


def train_multihop(config: CapacityConfig, output_dir: str | os.PathLike, seed: int = 0,
                   device: str = "auto") -> tuple[PreTrainedModel, World, SizeResult]:
    """Chapter 06's model: grid entry 0 trained on 1-hop + 2-hop questions (``orders`` must include 2)."""
    if 2 not in config.orders:
        raise ValueError(f"train_multihop needs 2-hop training questions: orders={config.orders} lacks 2")
    result = train_size(config, 0, output_dir, seed, device)
    return result.load_model(device), prepare_world(config, output_dir, seed), result


__all__ = ["CAPACITY_LOG", "CapacityEvaluator", "DATA_FORMAT", "ENTROPY_SCHEMES", "SizeResult", "World",
           "answer_scores", "collect_sweep", "convergence_report", "entropy_by_scheme", "evaluate_splits",
           "initial_model", "is_converged", "loss_slope", "prepare_world", "read_capacity_log", "run_sweep",
           "train_multihop", "train_size", "training_stream"]
