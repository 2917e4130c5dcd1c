"""A capacity sweep over worlds and model sizes: which runs can test the 2 bits/parameter law, training, collecting.

Allen-Zhu & Li (2024, arXiv 2404.05405) find that a model stores at most ≈2 bits per parameter. A run tests that
ceiling only when its dataset holds more: a model of P parameters trained on a world whose 1-hop entropy E₁ is
below 2·P can learn everything and sits on the entropy ceiling instead (data-bound). The reference's
``experiment_specs/1_hop_scaling.yaml`` (``EleutherAI/transformer-reasoning``) therefore varies N from 10k to 30k
with 4 and 17 relations. :func:`sweep_points` computes E₁ of every world of a :class:`~.presets.CapacitySweep`
(from the seeded profiles the runs train on) against 2 bits x the real parameter count of every size, and
:func:`capacity_bound_points` lists, per size, the worlds that bind it.

Layout: a sweep of one world trains in ``output_dir`` itself (as :func:`~.training.train_size` does); with
several, world ``w`` trains in ``output_dir/<world label>`` (``N10000-r17``).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .entropy import LAW_BITS_PER_PARAM, SUPPORTS, entropy_budget
from .pools import default_pools
from .presets import CapacityConfig, CapacitySweep, plan_name
from .profiles import ProfileConfig, generate_profiles
from .report import capacity_bound
from .sizing import config_parameter_count, llama_config, llama_config_for_budget
from .training import SizeResult, collect_sweep, train_size


def planned_parameters(config: CapacityConfig, size: int, vocab_size: int | None = None) -> int:
    """Real parameter count of grid entry ``size`` with a ``vocab_size`` vocabulary (default: the config's)."""
    config.check_size(size)
    vocab = config.vocab_size if vocab_size is None else vocab_size
    value = config.model_sizes[size]
    if config.sizing == "width":
        return config_parameter_count(llama_config(vocab, value, config.num_hidden_layers))
    return config_parameter_count(llama_config_for_budget(value, config.num_hidden_layers, vocab_size=vocab,
                                                          mode=config.sizing))


def world_entropy(config: CapacityConfig, seed: int = 0, hops: int = 1) -> dict[str, float]:
    """Dataset entropy (bits) of ``config``'s world under its scheme and selection, for each entropy convention;
    the world is the one :func:`~.training.prepare_world` generates with ``seed``."""
    world = (config.num_people, config.num_relations, config.pools, config.num_years)
    return dict(_world_entropy(world, config.scheme, config.selection, seed, hops))


@lru_cache(maxsize=64)
def _pools(source: str):
    return default_pools(source)


@lru_cache(maxsize=256)
def _world_entropy(world: tuple, scheme: str, selection: str, seed: int, hops: int) -> tuple:
    """Cached by what defines the profiles (a sweep's sizes and conventions share each world's generation)."""
    num_people, num_relations, pools, num_years = world
    config = ProfileConfig(num_people, num_relations, num_years=num_years)
    profiles = generate_profiles(config, _pools(pools), np.random.default_rng(seed))
    return tuple((support, entropy_budget(profiles, scheme, selection, support).dataset_bits(hops))
                 for support in SUPPORTS)


def sweep_points(sweep: CapacitySweep, seed: int = 0) -> list[dict]:
    """One row per run (world, size): N, R, labels, real parameters, the 1-hop entropy the world requires
    (under the sweep's support, and ``required_bits_by_support``), 2 bits x parameters, and ``capacity_bound``."""
    rows = []
    for world in range(len(sweep.worlds)):
        config = sweep.world_config(world)
        required = world_entropy(config, seed)
        for size in range(len(config.model_sizes)):
            params = planned_parameters(config, size)
            rows.append({
                "world": sweep.world_label(world), "world_index": world, "num_people": config.num_people,
                "num_relations": config.num_relations, "size": config.size_label(size), "size_index": size,
                "num_parameters": params, "law_bits": LAW_BITS_PER_PARAM * params,
                "required_bits": required[config.support], "required_bits_by_support": required,
                "support": config.support, "scheme": config.scheme, "selection": config.selection,
                "capacity_bound": capacity_bound(required[config.support], params),
            })
    return rows


def capacity_bound_points(sweep: CapacitySweep, seed: int = 0) -> dict[str, list[tuple[int, int]]]:
    """For each model size (by label), the worlds (N, R) whose 1-hop entropy exceeds 2 bits x its parameters."""
    out = {sweep.base.size_label(s): [] for s in range(len(sweep.base.model_sizes))}
    for row in sweep_points(sweep, seed):
        if row["capacity_bound"]:
            out[row["size"]].append((row["num_people"], row["num_relations"]))
    return out


def world_dir(sweep: CapacitySweep, world: int | str, output_dir: str | os.PathLike) -> Path:
    """Where world ``world`` trains: ``output_dir`` for a one-world sweep, else ``output_dir/N<N>-r<R>``."""
    label = sweep.world_label(world)
    return Path(output_dir) if len(sweep.worlds) == 1 else Path(output_dir) / label


def train_run(sweep: CapacitySweep, world: int | str, size: int, output_dir: str | os.PathLike, seed: int = 0,
              device: str = "auto") -> SizeResult:
    """:func:`~.training.train_size` of grid entry ``size`` on world ``world`` (an index or a label)."""
    return train_size(sweep.world_config(world), size, world_dir(sweep, world, output_dir), seed, device)


def run_worlds(sweep: CapacitySweep, output_dir: str | os.PathLike, seed: int = 0, device: str = "auto",
               worlds=None, sizes=None) -> list[SizeResult]:
    """Train (or reload) every run of ``sweep``, or of the given ``worlds`` and ``sizes``, one after another."""
    chosen = range(len(sweep.worlds)) if worlds is None else [sweep.world_index(w) for w in worlds]
    grid = range(len(sweep.base.model_sizes)) if sizes is None else sizes
    return [train_run(sweep, w, s, output_dir, seed, device) for w in chosen for s in grid]


def collect_worlds(sweep: CapacitySweep, output_dir: str | os.PathLike, seed: int | None = None) -> list[dict]:
    """The metrics of every trained run of ``sweep`` (worlds without a trained size are skipped), each with its
    ``world`` label; ``FileNotFoundError`` when none is trained. Runs trained with other settings raise
    (:func:`~.training.collect_sweep`)."""
    rows = []
    for world in range(len(sweep.worlds)):
        try:
            found = collect_sweep(world_dir(sweep, world, output_dir), sweep.world_config(world), seed)
        except FileNotFoundError:
            continue
        rows += [{**m, "world": sweep.world_label(world)} for m in found]
    if not rows:
        raise FileNotFoundError(f"no trained run of the sweep's {len(sweep.worlds)} worlds under {output_dir}: run "
                                "run_worlds (or python -m reasoning_lib.capacity --preset <p> --world <w>) first")
    return rows


__all__ = ["capacity_bound_points", "collect_worlds", "plan_name", "planned_parameters", "run_worlds", "sweep_points", "train_run",
           "world_dir", "world_entropy"]
