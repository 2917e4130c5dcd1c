"""Settings of the knowledge-capacity chapters (05 capacity sweep, 06 multi-hop probes).

One frozen dataclass, :class:`CapacityConfig`, holds the world, the QA text, the model grid, training,
evaluation, the capacity scheme and the probes. ``PRESETS`` are the capacity sweeps of chapter 05,
``MULTIHOP_PRESETS`` the single 1-hop + 2-hop model of chapter 06: ``smoke`` (seconds, CI), ``tiny`` (sizes
chosen for 2 CPU cores, minutes), ``paper`` (the reference's training defaults and worlds, GPU).

:class:`CapacitySweep` crosses one config's model grid with several worlds (N people, R relations), as
``experiment_specs/1_hop_scaling.yaml`` of ``EleutherAI/transformer-reasoning`` measures 1-hop capacity over N
from 10k to 30k with 4 and 17 relations. ``SWEEPS["paper"]`` is that sweep; ``smoke`` and ``tiny`` have one world.

Deliberate differences from the reference: AdamW from the shared loop (the reference uses Schedule-Free AdamW
under µP), a plain Llama (no µP), and at tiny scale a 600-token BPE and QAs packed 8 to a sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from transformers import LlamaConfig

from ..config import check_choice, check_positive, check_range, from_preset
from ..probes import POOLS
from ..run_settings import train_settings
from ..train import SCHEDULES, TrainConfig
from .entropy import SCHEMES, SELECTIONS, SUPPORTS
from .pools import SOURCES, default_pools, ValuePools
from .profiles import ATTRIBUTES, RELATION_COUNTS, ProfileConfig
from .sizing import HEAD_DIM, SIZING_MODES, llama_config, llama_config_for_budget

# 'width': model_sizes are hidden sizes (intermediate 4d); 'reference'/'exact': parameter budgets (sizing.py).
SIZINGS = ("width", *SIZING_MODES)
# Fields that shape the world (profiles, tokenizer, held-out split): they name its folder.
WORLD_FIELDS = ("num_people", "num_relations", "pools", "num_years", "vocab_size", "tokenizer_texts",
                "heldout_fraction", "specific_fraction")
# Fields read only after training: changing them re-evaluates a saved model instead of retraining it.
EVAL_FIELDS = ("eval_people", "eval_per_mode", "scheme", "selection", "support", "converge_tolerance",
               "converge_window", "probe_rows", "probe_penalties", "probe_max_iter", "probe_pool")


@dataclass(frozen=True)
class CapacityConfig:
    """World, text, model grid, training, evaluation, capacity scheme and probes of one run."""

    # world (reference ``generate_profiles.py``): N people, 4 or 17 relations, offline pools, birth years
    # (dates: years x 12 x 28)
    num_people: int = 300
    num_relations: int = 4
    pools: str = "synthetic"  # 'synthetic' (small pools sized for CPU runs) or 'faker'
    num_years: int = 1
    # text (reference ``train/dataset.py``): tokenizer, hop mix (weights hop_ratio**-i over orders), packing
    vocab_size: int = 600
    tokenizer_texts: int = 20_000
    orders: tuple[int, ...] = (1,)
    hop_ratio: float = 0.1
    # a sequence holds at most qas_per_sequence whole QAs and at most max_seq_len tokens: a QA that does not fit
    # is left out, never cut (the reference cuts at 512 tokens, and 34 QAs average ≈578)
    qas_per_sequence: int = 8
    max_seq_len: int = 512
    # training sequences are drawn afresh in chunk-epochs of this many sequences (rounded up to whole steps):
    # the shared loop then permutes only a chunk, so the data order costs 8 bytes x chunk, not x every sequence
    stream_chunk: int = 1 << 20
    # models (reference ``train/train_utils.py``): one model per entry of model_sizes
    sizing: str = "width"
    model_sizes: tuple[int, ...] = (32, 48, 64, 96)
    num_hidden_layers: int = 2
    # training; batch_size counts sequences per optimizer step over all processes
    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-2
    lr_base_width: int | None = 32  # lr is for this hidden size; width d gets lr * lr_base_width / d (None: same lr)
    weight_decay: float = 0.1
    warmup_steps: int = 50
    schedule: str = "wsd"  # warm-up, constant, linear decay over the last 20%: a constant run with a settled end
    # evaluation (the reference's eval modes and per-answer loss): 1-hop losses over every subject of
    # eval_people people (None: all N people)
    eval_people: int | None = None
    eval_per_mode: int = 400  # questions per 2-hop eval mode, and per subject for the 2-hop capacity
    # capacity is evaluated during training at 10 log-spaced steps up to eval_every, then every eval_every steps
    # (the reference: log-spaced in 100..1e5, then every 1e5), and at the end; None: at the end only
    eval_every: int | None = None
    heldout_fraction: float = 0.1
    specific_fraction: float = 0.02
    # capacity (:mod:`.entropy`) and the convergence rule (report.window_convergence): converged when, over the last
    # converge_window steps before any learning-rate decay (a fixed number of steps, not a share of the run), the
    # fitted loss slope moves the loss by less than converge_tolerance of its mean; a shorter run is not converged
    scheme: str = "optimal"
    selection: str = "optimal"
    support: str = "generating"
    converge_tolerance: float = 0.05
    converge_window: int = 2000
    # probes (reference ``train/train_probe.py``): rows (2-hop questions), L2 candidates (one value skips
    # cross-validation), pooling per group
    probe_rows: int = 2000
    probe_penalties: tuple[float, ...] = (1e-3,)
    probe_max_iter: int = 200
    probe_pool: str = "last"

    def __post_init__(self):
        for name in ("num_people", "num_years", "vocab_size", "tokenizer_texts", "qas_per_sequence", "max_seq_len",
                     "num_hidden_layers", "max_steps", "batch_size", "lr", "eval_per_mode", "probe_rows",
                     "probe_max_iter", "hop_ratio", "converge_tolerance", "converge_window", "stream_chunk"):
            check_positive(name, getattr(self, name))
        check_positive("warmup_steps", self.warmup_steps, allow_zero=True)
        if self.lr_base_width is not None:
            check_positive("lr_base_width", self.lr_base_width)
        if self.eval_every is not None:
            check_positive("eval_every", self.eval_every)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("num_relations", self.num_relations, RELATION_COUNTS)
        check_choice("pools", self.pools, SOURCES)
        check_choice("sizing", self.sizing, SIZINGS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("scheme", self.scheme, SCHEMES)
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("support", self.support, SUPPORTS)
        check_choice("probe_pool", self.probe_pool, POOLS)
        check_range("heldout_fraction", self.heldout_fraction, 0.0, 1.0)
        check_range("specific_fraction", self.specific_fraction, 0.0, 1.0)
        object.__setattr__(self, "orders", tuple(self.orders))
        object.__setattr__(self, "model_sizes", tuple(self.model_sizes))
        object.__setattr__(self, "probe_penalties", tuple(float(p) for p in self.probe_penalties))
        if not self.orders or any(o not in (1, 2) for o in self.orders) or len(set(self.orders)) != len(self.orders):
            raise ValueError(f"orders={self.orders!r} must be distinct hop counts from (1, 2), e.g. (1,) or (1, 2)")
        if not self.model_sizes or min(self.model_sizes) <= 0:
            raise ValueError(f"model_sizes={self.model_sizes!r} must be a non-empty tuple of positive sizes")
        if self.sizing == "width" and any(d % HEAD_DIM for d in self.model_sizes):
            raise ValueError(f"sizing='width' needs model_sizes that are multiples of {HEAD_DIM}; "
                             f"got {self.model_sizes}")
        if self.eval_people is not None and not 0 < self.eval_people <= self.num_people:
            raise ValueError(f"eval_people={self.eval_people} must lie in [1, num_people={self.num_people}] or be None")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be below max_steps={self.max_steps}")
        if not self.probe_penalties or min(self.probe_penalties) < 0:
            raise ValueError(f"probe_penalties={self.probe_penalties} must be a non-empty tuple of values >= 0")

    # ---------------------------------------------------------------- derived quantities
    @property
    def num_subjects(self) -> int:
        """|S| = 4 attributes + R relations."""
        return len(ATTRIBUTES) + self.num_relations

    @property
    def one_hop_fraction(self) -> float:
        """P(1-hop) of a training question under the hop weights hop_ratio**-i (reference ``train/dataset.py``)."""
        if 1 not in self.orders:
            return 0.0
        weights = [self.hop_ratio ** -i for i in range(len(self.orders))]
        return weights[self.orders.index(1)] / sum(weights)

    @property
    def exposures_per_fact(self) -> float:
        """At most how often training shows each 1-hop fact: steps x QAs per step x P(1-hop) / (N·S), with
        ``qas_per_sequence`` QAs a sequence. When ``max_seq_len`` binds, fewer fit: ``metrics.json`` holds the
        count of the QAs actually trained (``exposures_per_fact``)."""
        qas = self.max_steps * self.batch_size * self.qas_per_sequence
        return qas * self.one_hop_fraction / (self.num_people * self.num_subjects)

    def profile_config(self) -> ProfileConfig:
        return ProfileConfig(self.num_people, self.num_relations, num_years=self.num_years)

    def value_pools(self) -> ValuePools:
        return default_pools(self.pools)

    def check_size(self, size: int) -> None:
        """Raise ``ValueError`` unless ``size`` indexes ``model_sizes``."""
        if not isinstance(size, int) or not 0 <= size < len(self.model_sizes):
            raise ValueError(f"size={size!r} is out of range: this preset has {len(self.model_sizes)} model sizes "
                             f"{self.model_sizes}, so size must be an index in 0..{len(self.model_sizes) - 1}")

    def size_label(self, size: int) -> str:
        """Folder-safe name of model ``size``: ``d64-L2`` (widths) or ``P1000000-L4`` (budgets), with ``-h12`` when
        the hop orders are not 1-hop only, so runs of other orders never share (or are collected as) a folder."""
        self.check_size(size)
        prefix = "d" if self.sizing == "width" else "P"
        hops = "" if self.orders == (1,) else "-h" + "".join(str(o) for o in self.orders)
        return f"{prefix}{self.model_sizes[size]}-L{self.num_hidden_layers}{hops}"

    def model_config(self, size: int, tokenizer) -> LlamaConfig:
        """The Llama of grid entry ``size`` for ``tokenizer``'s vocabulary and special ids (:mod:`.sizing`)."""
        self.check_size(size)
        value = self.model_sizes[size]
        if self.sizing == "width":
            special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                       "pad_token_id": tokenizer.pad_token_id}
            return llama_config(len(tokenizer), value, self.num_hidden_layers, special_ids=special)
        return llama_config_for_budget(value, self.num_hidden_layers, mode=self.sizing, tokenizer=tokenizer)

    def lr_for(self, hidden_size: int) -> float:
        """Peak learning rate of a model of width ``hidden_size``: Adam's 1/width rule (as µP applies it to matrix
        parameters, here to all), so every width trains near its own best rate."""
        return self.lr if self.lr_base_width is None else self.lr * self.lr_base_width / hidden_size

    @property
    def stable_steps(self) -> int:
        """Steps before the learning rate starts to decay (where the convergence rule reads the loss)."""
        if self.schedule == "wsd":
            return int(self.max_steps * (1 - TrainConfig.decay_fraction))
        return self.max_steps

    def train_config(self, seed: int, device: str, world_size: int | None = None, hidden_size: int | None = None) -> TrainConfig:
        """Settings of the shared loop for a model of ``hidden_size``; the global batch is split over processes."""
        return train_settings(
            global_batch=self.batch_size, steps=self.max_steps, world_size=world_size,
            lr=self.lr if hidden_size is None else self.lr_for(hidden_size), weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps, schedule=self.schedule, max_grad_norm=1.0, seed=seed, device=device,
        )

    def subset(self, names) -> dict:
        """The values of the named fields (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}


PRESETS = {
    "smoke": CapacityConfig(num_people=40, vocab_size=320, tokenizer_texts=2000, model_sizes=(16, 32),
                            num_hidden_layers=1, qas_per_sequence=4, max_steps=30, batch_size=8, lr=1e-2,
                            lr_base_width=None, warmup_steps=3, eval_per_mode=32, probe_rows=120, probe_max_iter=30,
                            eval_every=10, converge_window=10),
    # A world at the large end of what 2 CPU cores train in minutes: N = 1,000, r4, synthetic pools, one year of
    # dates (E₁ = 6.5e4 bits), Llama L = 2 with d in {16, 32, 48, 64} (27k-200k parameters with the 600-token
    # BPE), 8,000 steps x 256 QAs = 256 exposures per 1-hop fact, lr 1e-2 at d = 32 scaled by 32/d. Chosen so
    # that the larger sizes can hold less than the world's entropy (a smaller world leaves every size data-bound)
    # and each fact is seen often enough to be learnt; about an hour on 2 cores, a size per thread.
    # Capacity every 1,000 steps (18 evaluations of the 8,000 facts); convergence over the last 2,000 of the
    # 6,400 steps before the decay.
    "tiny": CapacityConfig(num_people=1000, model_sizes=(16, 32, 48, 64), max_steps=8000, eval_every=1000,
                           converge_window=2000),
    # The base world of the paper sweep (SWEEPS["paper"] varies N and R): N = 10k, r17, faker pools, dates over
    # 200 years, the 3,000-token BPE, reference sizing at 4 layers, batch 32 sequences of up to 34 whole QAs in
    # 512 tokens, lr 1e-3, wd 0.1, 1,000 warm-up steps, constant rate, 1e7 steps (the reference's "models seem to
    # converge in 1E7 steps"), names coded with the `enumerate` selection of its 1_hop_scaling measurement.
    # Budgets 0.5M-2M (real 0.44M-3.04M parameters): at 2 bits/parameter each holds less than the 1-hop entropy
    # of at least two of the sweep's worlds (capacity_bound_points); the old 5M and 10M budgets (7.7M and 15.5M
    # real) would hold every world of N <= 30k whole. Capacity at the reference's checkpoints (log-spaced to 1e5,
    # then every 1e5); converged when the loss moves < 2% over the last 1.5M steps (15 checkpoints apart, the
    # reference's derivative window).
    "paper": CapacityConfig(num_people=10_000, num_relations=17, pools="faker", num_years=200, vocab_size=3000,
                            tokenizer_texts=100_000, qas_per_sequence=34, sizing="reference",
                            model_sizes=(500_000, 700_000, 1_000_000, 1_500_000, 2_000_000), num_hidden_layers=4,
                            max_steps=10_000_000, batch_size=32, lr=1e-3, lr_base_width=None, weight_decay=0.1,
                            warmup_steps=1000, schedule="constant", eval_people=1000, eval_per_mode=1000,
                            selection="enumerate", eval_every=100_000, converge_window=1_500_000,
                            converge_tolerance=0.02),
}

MULTIHOP_PRESETS = {
    "smoke": CapacityConfig(num_people=40, vocab_size=320, tokenizer_texts=2000, orders=(1, 2), hop_ratio=0.5,
                            model_sizes=(32,), num_hidden_layers=2, qas_per_sequence=4, max_steps=30, batch_size=8,
                            lr=1e-2, lr_base_width=None, warmup_steps=3, eval_per_mode=32, probe_rows=160,
                            probe_max_iter=30, eval_every=10, converge_window=10),
    # The 2-hop/probe demo sized for 2 CPU cores: N = 200, r4, a 4-layer d = 64 Llama (340k parameters) on
    # 1-hop + 2-hop. hop_ratio 1.0 (P(1-hop) = 1/2) instead of the reference's 0.1, so that in 1,400 steps x 256
    # QAs the 1-hop facts the bridge depends on get 112 exposures and each 2-hop training tuple ≈ 47. Expected
    # time: ≈ 10 minutes on one thread (≈ 7 expected on 2 idle cores): 0.35-0.41 s/step measured over 24 steps
    # of this preset (4,760 tokens per step), so 8-9.5 minutes of training, plus ≈ 1 minute of probes (measured
    # on the untrained model: 2,000 rows, 5 hidden states x 4 token groups, both targets, then the bridge
    # control). Capacity (1-hop, 2-hop, 2.1-hop) every 200 steps.
    "tiny": CapacityConfig(num_people=200, orders=(1, 2), hop_ratio=1.0, model_sizes=(64,), num_hidden_layers=4,
                           max_steps=1400, batch_size=32, eval_per_mode=400, probe_rows=2000, probe_max_iter=100,
                           eval_every=200, converge_window=400),
    # The reference's 2-hop runs: N = 10k, r17, P = 1e7 at 4 layers, hop_ratio 0.1 (P(1-hop) = 1/11).
    "paper": CapacityConfig(num_people=10_000, num_relations=17, pools="faker", num_years=200, vocab_size=3000,
                            tokenizer_texts=100_000, orders=(1, 2), hop_ratio=0.1, qas_per_sequence=34,
                            sizing="reference", model_sizes=(10_000_000,), num_hidden_layers=4, max_steps=10_000_000,
                            batch_size=32, lr=1e-3, lr_base_width=None, weight_decay=0.1, warmup_steps=1000,
                            schedule="constant", eval_people=1000, eval_per_mode=1000, probe_rows=100_000,
                            probe_penalties=(0.0, 1e-8, 1e-6, 1e-4), probe_max_iter=1000, selection="enumerate",
                            eval_every=100_000, converge_window=1_500_000, converge_tolerance=0.02),
}


@dataclass(frozen=True)
class CapacitySweep:
    """One config's model grid trained on every world (N, R) of ``num_people`` x ``num_relations``.

    World ``w`` is :meth:`world_config` (the base config with that N and R); run ``(w, size)`` is grid entry
    ``size`` of it. Worlds are listed relation count first, then N."""

    base: CapacityConfig
    num_people: tuple[int, ...]
    num_relations: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "num_people", _axis("num_people", self.num_people))
        object.__setattr__(self, "num_relations", _axis("num_relations", self.num_relations))
        for r in self.num_relations:
            check_choice("num_relations", r, RELATION_COUNTS)
        for n in self.num_people:  # builds each world's config, so a bad N fails here, by name
            replace(self.base, num_people=n)

    @property
    def worlds(self) -> tuple[tuple[int, int], ...]:
        """(N, R) of every world."""
        return tuple((n, r) for r in self.num_relations for n in self.num_people)

    @property
    def runs(self) -> tuple[tuple[int, int], ...]:
        """(world index, size index) of every trained model, world by world."""
        return tuple((w, s) for w in range(len(self.worlds)) for s in range(len(self.base.model_sizes)))

    def world_index(self, world: int | str) -> int:
        """The index of ``world``: an index, or a label such as ``N10000-r17`` (:meth:`world_label`)."""
        labels = [f"N{n}-r{r}" for n, r in self.worlds]
        if isinstance(world, str) and world in labels:
            return labels.index(world)
        try:
            index = int(world)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(self.worlds):
            raise ValueError(f"world={world!r} is not one of this sweep's {len(self.worlds)} worlds: give an index "
                             f"in 0..{len(self.worlds) - 1} or a label {labels}")
        return index

    def world_label(self, world: int | str) -> str:
        """Folder-safe name of world ``world``: ``N10000-r17``."""
        n, r = self.worlds[self.world_index(world)]
        return f"N{n}-r{r}"

    def world_config(self, world: int | str) -> CapacityConfig:
        """The base config with world ``world``'s N and R."""
        n, r = self.worlds[self.world_index(world)]
        return replace(self.base, num_people=n, num_relations=r)


def _axis(name: str, values) -> tuple[int, ...]:
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or len(set(values)) != len(values) or any(not isinstance(v, int) or v <= 0 for v in values):
        raise ValueError(f"{name}={values!r} must be a non-empty tuple of distinct positive integers")
    return values


# The reference measures 1-hop capacity (scheme optimal, selection enumerate) over N in
# {10000, 15000, 15500, 20000, 24000, 25000, 30000} with 17 and 4 relations; here N in steps of 5,000 over the
# same range (15.5k and 24k were single runs next to 15k and 25k). 10 worlds x 5 sizes = 50 runs.
SWEEPS = {
    "smoke": CapacitySweep(PRESETS["smoke"], (40,), (4,)),
    "tiny": CapacitySweep(PRESETS["tiny"], (1000,), (4,)),
    "paper": CapacitySweep(PRESETS["paper"], (10_000, 15_000, 20_000, 25_000, 30_000), (4, 17)),
}


def plan_name(config: CapacityConfig, size: int, multihop: bool = False) -> str:
    """The resource plan of a paper run (``python -m reasoning_lib.resources``): ``ch5_capacity_N10000_r17_0.5M``
    for a run of chapter 5's sweep, ``ch6_multihop_10M`` for chapter 6's model."""
    config.check_size(size)
    budget = f"{config.model_sizes[size] / 1e6:g}M"
    if multihop:
        return f"ch6_multihop_{budget}"
    return f"ch5_capacity_N{config.num_people}_r{config.num_relations}_{budget}"


# The paper dry run: the published world, tokenizer, Llama shapes, sequence length and global batch, a few
# optimizer steps with capacity evaluated at each, on a few people's facts and few probe rows (proves the path on
# a CPU). The sweep's dry run trains one world, N = 10k with 17 relations (the longest QAs).
DRY_RUN = {"max_steps": 2, "warmup_steps": 1, "eval_every": 1, "eval_people": 20, "eval_per_mode": 8,
           "probe_rows": 200, "probe_max_iter": 20}
DRY_RUN_WORLDS = {"num_people": (10_000,), "num_relations": (17,)}


def _dry_run(preset: str, dry_run: bool, overrides: dict, extra: dict | None = None) -> dict:
    if not dry_run:
        return overrides
    if preset != "paper":
        raise ValueError(f"dry_run=True runs the paper preset's shapes for a few steps; preset={preset!r} has no "
                         "dry run: use preset='paper' or dry_run=False")
    return {**DRY_RUN, **(extra or {}), **overrides}


def get_config(preset: str, dry_run: bool = False, **overrides) -> CapacityConfig:
    """The chapter-05 sweep preset with ``overrides`` applied (a wrong name or value raises, naming it);
    ``dry_run`` (paper only) applies ``DRY_RUN`` first."""
    return from_preset(PRESETS, preset, **_dry_run(preset, dry_run, overrides))


def get_multihop_config(preset: str, dry_run: bool = False, **overrides) -> CapacityConfig:
    """The chapter-06 1-hop + 2-hop preset with ``overrides`` applied; ``dry_run`` as in :func:`get_config`."""
    return from_preset(MULTIHOP_PRESETS, preset, **_dry_run(preset, dry_run, overrides))


def get_sweep(preset: str, dry_run: bool = False, **overrides) -> CapacitySweep:
    """The chapter-05 sweep ``preset``; ``overrides`` apply to its base config, except ``num_people`` and
    ``num_relations``, which replace the sweep's axes (an int or a tuple). ``dry_run`` (paper only) applies
    ``DRY_RUN`` and trains the one world of ``DRY_RUN_WORLDS``."""
    check_choice("preset", preset, SWEEPS)
    sweep = SWEEPS[preset]
    overrides = _dry_run(preset, dry_run, overrides, DRY_RUN_WORLDS)
    people = overrides.pop("num_people", sweep.num_people)
    relations = overrides.pop("num_relations", sweep.num_relations)
    return CapacitySweep(from_preset({preset: sweep.base}, preset, **overrides), people, relations)


__all__ = ["CapacityConfig", "CapacitySweep", "DRY_RUN", "DRY_RUN_WORLDS", "EVAL_FIELDS", "MULTIHOP_PRESETS",
           "PRESETS", "SIZINGS", "SWEEPS", "WORLD_FIELDS", "get_config", "get_multihop_config", "get_sweep",
           "plan_name"]
