"""Synthetic profiles of N people: names, a birth date, three attributes and 4 or 17 relations.

Follows the reference ``generate_dataset/generate_profiles.py`` with these deliberate differences:
* every draw comes from a caller's ``numpy.random.Generator`` (the reference passes no seed);
* pools are explicit and offline (:mod:`.pools`), sampled uniformly;
* ``date_mode='uniform'`` (default) draws year, month and day ≤ 28 uniformly, so every reachable date is equally
  likely; ``date_mode='reference'`` keeps the reference's uniform day offset clamped to day ≤ 28 (day 28 heavier);
* the bipartite mode works (the reference's is "currently broken"): see :func:`bipartite_relations`;
* the ``bio`` column is kept in the schema but, as in the reference, never filled.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from ..config import check_choice, check_positive
from .pools import ValuePools, name_parts

ATTRIBUTES = ("birth_date", "birth_city", "university", "employer")
RELATIONS = (
    "parent", "child", "best_friend", "worst_enemy", "sibling", "spouse", "cousin", "grandparent", "grandchild",
    "business_partner", "protege", "mentor", "betrayer", "debtor", "blackmailer", "hero", "evil_twin",
)
RELATION_COUNTS = (4, 17)
RELATION_MODES = ("uniform", "bipartite")
DATE_MODES = ("uniform", "reference")
# Bipartite mode: each key's relation is a permutation and its value is the inverse permutation ...
INVERSE_RELATIONS = {"parent": "child", "mentor": "protege"}
# ... these are derived by composing parent (a grandparent is a parent's parent) ...
COMPOSED_RELATIONS = {"grandparent": "parent", "grandchild": "child"}
# ... and these are perfect matchings (X's best friend's best friend is X); the rest stay uniform.
SYMMETRIC_RELATIONS = ("best_friend", "worst_enemy", "sibling", "spouse", "cousin", "business_partner", "evil_twin")
# Hosted reference sets (``EleutherAI/profiles_dataset_*``); the 1000_r17 set seems to hold ≈500 profiles:
# check before use.
HUB_PROFILE_SIZES = {17: (1000, 10000, 15000, 25000, 250000), 4: (10000, 15000, 20000, 25000, 30000, 50000)}
_META_KEY = "reasoning_lib.capacity"


@dataclass
class ProfileConfig:
    """What to generate: N people, R relations, how relations and birth dates are drawn."""

    num_people: int
    num_relations: int = 4
    relation_mode: str = "uniform"
    date_mode: str = "uniform"
    first_year: int = 1900
    num_years: int = 200

    def __post_init__(self):
        check_positive("num_people", self.num_people)
        check_choice("num_relations", self.num_relations, RELATION_COUNTS)
        check_choice("relation_mode", self.relation_mode, RELATION_MODES)
        check_choice("date_mode", self.date_mode, DATE_MODES)
        check_positive("num_years", self.num_years)
        if not 1 <= self.first_year <= 9999 - self.num_years:
            raise ValueError(f"first_year={self.first_year} with num_years={self.num_years} leaves the calendar")
        if self.relation_mode == "bipartite" and self.num_people % 2:
            raise ValueError(f"relation_mode='bipartite' pairs people up: num_people={self.num_people} must be even")

    @property
    def relations(self) -> tuple[str, ...]:
        return RELATIONS[: self.num_relations]

    @property
    def num_date_values(self) -> int:
        """D, the number of possible dates: the days in the range ('reference': 73,048 for 1900-2099) or the grid
        size ('uniform')."""
        if self.date_mode == "uniform":
            return self.num_years * 12 * 28
        start, end = _year_start(self.first_year), _year_start(self.first_year + self.num_years)
        return int((end - start).astype(int)) - 1  # the reference's randrange never reaches the last day


def _year_start(year: int) -> np.datetime64:
    return np.datetime64(f"{year:04d}-01-01", "D")


@dataclass
class Profiles:
    """A profile table as numpy columns; row i is person i. ``config``/``pools`` are None for hub data."""

    names: np.ndarray  # (N,) str
    birth_dates: np.ndarray  # (N,) datetime64[D]
    values: dict[str, np.ndarray]  # birth_city / university / employer -> (N,) str
    relations: np.ndarray  # (N, R) int64 row index of each relation's target
    relation_names: tuple[str, ...]
    config: ProfileConfig | None = None
    pools: ValuePools | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.names)
        if self.relations.shape != (n, len(self.relation_names)):
            raise ValueError(f"relations have shape {self.relations.shape}, expected ({n}, {len(self.relation_names)})")
        if n and (self.relations.min() < 0 or self.relations.max() >= n):
            raise ValueError(f"relation targets must lie in [0, {n}); got [{self.relations.min()}, {self.relations.max()}]")

    @property
    def num_people(self) -> int:
        return len(self.names)

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def subjects(self) -> tuple[str, ...]:
        """S = A ∪ R: the attributes in the reference's order, then the relations."""
        return ATTRIBUTES + self.relation_names

    def attribute_strings(self, attribute: str) -> np.ndarray:
        """(N,) answer strings of an attribute; dates as ``YYYY-MM-DD``."""
        check_choice("attribute", attribute, ATTRIBUTES)
        if attribute == "birth_date":
            return np.datetime_as_string(self.birth_dates, unit="D").astype(object)
        return self.values[attribute]

    def answer(self, person: int, subject: str) -> str:
        """The 1-hop answer of ``person`` for ``subject``: a value, a date or the related person's name."""
        if subject in self.relation_names:
            return str(self.names[self.relations[person, self.relation_names.index(subject)]])
        return str(self.attribute_strings(subject)[person])

    def to_dataset(self) -> datasets.Dataset:
        """The reference's profile table as a HF ``Dataset`` (config and pools kept in ``info.description``)."""
        n = self.num_people
        names = pa.array(list(self.names), pa.string())
        columns = {
            "name": names,
            "index": pa.array(np.arange(n, dtype=np.int32)),
            "birth_date": pa.array(self.birth_dates.astype("datetime64[s]"), pa.timestamp("s")),
            **{k: pa.array(list(self.values[k]), pa.string()) for k in ATTRIBUTES[1:]},
        }
        for r, relation in enumerate(self.relation_names):
            targets = self.relations[:, r]
            columns[relation] = pa.StructArray.from_arrays(
                [names.take(pa.array(targets)), pa.array(targets.astype(np.int32))], names=["name", "index"])
        columns["bio"] = pa.nulls(n, pa.string())
        meta = {"config": asdict(self.config) if self.config else None,
                "pools": self.pools.to_dict() if self.pools else None, **self.meta}
        info = datasets.DatasetInfo(description=json.dumps({_META_KEY: meta}))
        return datasets.Dataset(pa.table(columns), info=info)

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset) -> "Profiles":
        """Read a table with the reference's profile columns (ours or a hub reference set)."""
        missing = [c for c in ("name", *ATTRIBUTES, *RELATIONS[:4]) if c not in dataset.column_names]
        if missing:
            raise ValueError(f"profile dataset lacks columns {missing}; it has {dataset.column_names}")
        table = dataset.with_format("arrow")[:]
        if "index" in table.column_names and not np.array_equal(table.column("index").to_numpy(), np.arange(len(table))):
            raise ValueError("profile dataset rows are not in 'index' order (was it shuffled or filtered?)")
        relation_names = tuple(r for r in RELATIONS if r in table.column_names)
        relations = np.stack(
            [table.column(r).combine_chunks().field("index").to_numpy().astype(np.int64) for r in relation_names], 1)
        meta = _read_meta(dataset.info.description)
        config = ProfileConfig(**meta.pop("config")) if meta.get("config") else None
        pools = ValuePools.from_dict(meta.pop("pools")) if meta.get("pools") else None
        meta = {k: v for k, v in meta.items() if k not in ("config", "pools")}
        return cls(
            names=np.array(table.column("name").to_pylist(), dtype=object),
            birth_dates=table.column("birth_date").to_numpy().astype("datetime64[D]"),
            values={k: np.array(table.column(k).to_pylist(), dtype=object) for k in ATTRIBUTES[1:]},
            relations=relations, relation_names=relation_names, config=config, pools=pools, meta=meta,
        )

    def save(self, path: str | os.PathLike) -> None:
        """``Dataset.save_to_disk`` of :meth:`to_dataset`."""
        self.to_dataset().save_to_disk(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profiles":
        """Inverse of :meth:`save` (``Dataset.load_from_disk``)."""
        if not Path(path).is_dir():
            raise FileNotFoundError(f"no saved profile dataset at {path}")
        return cls.from_dataset(datasets.load_from_disk(str(path)))


def _read_meta(description: str | None) -> dict:
    try:
        return dict(json.loads(description or "{}").get(_META_KEY) or {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def unique_name_codes(num: int, sizes: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(num,) distinct codes of (first, middle, last) triples, drawn uniformly with rejection of repeats."""
    space = sizes[0] * sizes[1] * sizes[2]
    if num > space:
        raise ValueError(f"num_people={num} exceeds the {space} distinct names the pools allow")
    if 4 * num >= space:  # dense: draw a uniform subset directly instead of rejecting often
        return rng.choice(space, size=num, replace=False)
    codes = np.empty(0, dtype=np.int64)
    while len(codes) < num:
        stream = np.concatenate([codes, rng.integers(0, space, size=2 * (num - len(codes)) + 16)])
        _, first_seen = np.unique(stream, return_index=True)
        codes = stream[np.sort(first_seen)][:num]  # keep draw order: the same as rejecting repeats one at a time
    return codes


def uniform_relations(num_people: int, num_relations: int, rng: np.random.Generator) -> np.ndarray:
    """(N, R) targets uniform on [0, N) with replacement: self-loops allowed, nothing consistent (the reference's
    uniform mode)."""
    return rng.integers(0, num_people, size=(num_people, num_relations))


def _matching(n: int, rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order[0::2]], partner[order[1::2]] = order[1::2], order[0::2]
    return partner


def bipartite_relations(relation_names: tuple[str, ...], num_people: int, rng: np.random.Generator) -> np.ndarray:
    """(N, R) consistent relations; N must be even.

    Rows [0, N/2) and [N/2, N) are the two sides: a parent is always on the other side, parent is a permutation
    and child its inverse (child(parent(x)) = x), grandparent = parent∘parent, mentor/protege another inverse pair,
    the symmetric relations are perfect matchings without self-loops; betrayer, debtor, blackmailer and hero stay
    uniform. (The reference's mode leaves index -1 holes, fails on odd N and knows only 4 relations.)"""
    half = num_people // 2
    parent = np.concatenate([half + rng.permutation(half), rng.permutation(half)])  # each side's parents: the other
    cycle = rng.permutation(num_people)
    mentor = np.empty(num_people, dtype=np.int64)
    mentor[cycle] = np.roll(cycle, -1)  # one N-cycle: a permutation with no one their own mentor
    base = {"parent": parent, "mentor": mentor}
    targets = {}
    for relation in relation_names:
        if relation in base:
            targets[relation] = base[relation]
        elif relation in INVERSE_RELATIONS.values():
            forward = base[next(k for k, v in INVERSE_RELATIONS.items() if v == relation)]
            targets[relation] = np.argsort(forward)
        elif relation in COMPOSED_RELATIONS:
            step = parent if COMPOSED_RELATIONS[relation] == "parent" else np.argsort(parent)
            targets[relation] = step[step]
        elif relation in SYMMETRIC_RELATIONS:
            targets[relation] = _matching(num_people, rng)
        else:
            targets[relation] = rng.integers(0, num_people, size=num_people)
    return np.stack([targets[r] for r in relation_names], 1)


def sample_birth_dates(config: ProfileConfig, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size,) datetime64[D] birth dates with day of month ≤ 28 (see ``date_mode``)."""
    start = _year_start(config.first_year)
    if config.date_mode == "reference":
        dates = start + rng.integers(0, config.num_date_values, size=size)
        day = (dates - dates.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        return dates - np.maximum(day - 28, 0)  # clamp the day of month to 28
    months = rng.integers(0, config.num_years * 12, size=size)
    month_start = (start.astype("datetime64[M]") + months).astype("datetime64[D]")
    return month_start + rng.integers(0, 28, size=size)


def generate_profiles(config: ProfileConfig, pools: ValuePools, rng: np.random.Generator) -> Profiles:
    """Draw a profile table in the reference's order: unique names, shuffled rows, relations, then attributes."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    n_first, n_last = len(pools.first_names), len(pools.last_names)
    codes = unique_name_codes(config.num_people, (n_first, n_first, n_last), rng)
    codes = codes[rng.permutation(len(codes))]  # step 2 of the reference: row order = shuffled name list
    first, middle, last = codes // (n_first * n_last), (codes // n_last) % n_first, codes % n_last
    f, l = np.array(pools.first_names, dtype=object), np.array(pools.last_names, dtype=object)
    names = f[first] + " " + f[middle] + " " + l[last]
    if config.relation_mode == "uniform":
        relations = uniform_relations(config.num_people, config.num_relations, rng)
    else:
        relations = bipartite_relations(config.relations, config.num_people, rng)
    birth_dates = sample_birth_dates(config, config.num_people, rng)
    values = {}
    for attribute in ATTRIBUTES[1:]:
        pool = np.array(pools.for_attribute(attribute), dtype=object)
        values[attribute] = pool[rng.integers(0, len(pool), size=config.num_people)]
    return Profiles(names, birth_dates, values, relations, config.relations, config=config, pools=pools)


def hub_profile_id(num_people: int, num_relations: int = 17) -> str:
    """Hub id of a hosted reference profile set, ``EleutherAI/profiles_dataset_{N}_uniform{_rR}``."""
    check_choice("num_relations", num_relations, RELATION_COUNTS)
    check_choice(f"num_people (hosted r{num_relations} sets)", num_people, HUB_PROFILE_SIZES[num_relations])
    return f"EleutherAI/profiles_dataset_{num_people}_uniform" + ("_r17" if num_relations == 17 else "")


def load_hub_profiles(num_people: int, num_relations: int = 17) -> Profiles:
    """Download a hosted reference profile set (needs internet; never used in tests). Pools are unknown: use
    ``support='observed'`` for its entropy."""
    dataset = datasets.load_dataset(hub_profile_id(num_people, num_relations), split="train")
    profiles = Profiles.from_dataset(dataset)
    profiles.meta["hub_id"] = hub_profile_id(num_people, num_relations)
    return profiles


def split_names(profiles: Profiles) -> tuple[list[str], list[str], list[str]]:
    """The first, middle and last name parts of every person."""
    return name_parts(list(profiles.names))


__all__ = [
    "ATTRIBUTES", "DATE_MODES", "HUB_PROFILE_SIZES", "RELATIONS", "RELATION_MODES", "ProfileConfig", "Profiles",
    "bipartite_relations", "generate_profiles", "hub_profile_id", "load_hub_profiles", "sample_birth_dates",
    "split_names", "uniform_relations", "unique_name_codes",
]
