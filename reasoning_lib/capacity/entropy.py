"""Dataset entropy and knowledge capacity in bits (Allen-Zhu & Li 2024; reference ``evaluation/measure_entropy.py``
and ``evaluation/measure_capacity.py`` of ``EleutherAI/transformer-reasoning``).

Per-answer entropy H_s (the reference's ``calculate_entropy``) under a ``support``:
* ``'generating'`` (default): the distribution the generator drew from: log2|pool| for city/university/employer,
  log2 N for a uniform relation, and the Shannon entropy of the birth-date distribution;
* ``'observed'`` (reference parity): log2|V_s|, the distinct values present (≈ log2 N − 0.66 for relations).
Per-answer ``scheme``: ``optimal``, ``2-hop-big-hash`` and ``2-hop-double`` use H_s as above; ``independent``
codes a relation's answer as independent name parts, log2(|F|·|M|·|L|), and a birth date as log2 D.

Set-selection costs (``calculate_selection_entropy``), charged once: names with M name-part combinations,
``optimal`` N·log2 M − N·log2 N (the reference's approximation of log2 C(M, N), without its N·log2 e term),
``exact`` log2 C(M, N) (added here), ``enumerate`` N·log2 M, ``independent`` 0; birth dates
S_bd = log2 C(D, n_bd) (0 for ``independent``).

Dataset entropy (the capacity of a model with every loss 0): E = N·Σ_s m_s·H_s + S_name + S_bd, where m_s is
the capacity multiplier (1 for 1-hop; R for every subject under 2-hop-big-hash; 2 for relations and 1 for
attributes under 2-hop-double).

Capacity (``calculate_capacities``), from per-answer losses L_s in bits: per subject C_s = m_s·N·(H_s − L_s)
plus the subject's share of the selection cost (S_name/R per relation, S_bd for birth_date) when H_s > L_s,
else that share minus N·(L_s − H_s) (divided by R for a relation, as in the reference:
(S_name − N·(L_r − H_r))/R);
``incremental`` drops the selection terms and clips each C_s at 0. Average path, with the mean loss L̄ over
K = |S| subjects: C = m·N·(ΣH − K·L̄) + S_name + S_bd if ΣH > K·L̄, else S_name + S_bd − N·(K·L̄ − ΣH).

A budget may cover a subset of the subjects (:meth:`EntropyBudget.restricted`): the 2-hop questions a model trains on
never end in the held-out second attribute, so, as the reference does for such evaluations, only the subjects
with a loss count, and the name-selection cost is shared among the relations that remain.

Deliberate deviations from the reference: the 2-hop-double multiplier is per subject (the reference's becomes
"sticky" after a relation); the average path honours ``incremental``; under ``'generating'`` support S_bd is 0,
because each birth date is then charged its full generating entropy, so knowing the set of dates adds nothing
(S_name stays: a relation's answer is one of the N names, log2 N bits, only given the name set); a generating
entropy for bipartite relations is refused (they are not uniform draws).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..config import check_choice
from .pools import name_parts
from .profiles import ATTRIBUTES, ProfileConfig, Profiles

SCHEMES = ("optimal", "2-hop-big-hash", "2-hop-double", "independent")
SELECTIONS = ("optimal", "exact", "enumerate", "independent")
SUPPORTS = ("generating", "observed")
LN2 = math.log(2)
REFERENCE_DATE_VALUES = 73_048  # days from 1900-01-01 to 2099-12-31 (reference ``generate_profiles.py``)
LAW_BITS_PER_PARAM = 2.0  # Allen-Zhu & Li (2024): at most ≈2 bits of knowledge per parameter
PATHS = ("subjectwise", "average")  # the reference's --subjectwise path and its default average path


def log2_binomial(n: int, k: int) -> float:
    """log2 C(n, k) through lgamma (exact to float precision for huge n)."""
    if not 0 <= k <= n:
        raise ValueError(f"log2_binomial needs 0 <= k <= n; got n={n}, k={k}")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / LN2


def nats_to_bits(value):
    """Loss in nats -> bits."""
    return value / LN2


def birth_date_entropy(config: ProfileConfig) -> float:
    """Shannon entropy (bits) of the generator's birth-date distribution, computed over the whole calendar."""
    if config.date_mode == "uniform":
        return math.log2(config.num_date_values)
    start = np.datetime64(f"{config.first_year:04d}-01-01", "D")
    dates = start + np.arange(config.num_date_values)
    day = (dates - dates.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    _, counts = np.unique(dates - np.maximum(day - 28, 0), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _need(profiles: Profiles, what: str) -> None:
    if profiles.pools is None or profiles.config is None:
        raise ValueError(f"support='generating' needs the generator's pools and config for {what}; these profiles "
                         "have none (loaded from the hub?): use support='observed'")
    if profiles.config.relation_mode != "uniform":
        raise ValueError("support='generating' assumes uniform relations; use support='observed' for "
                         f"relation_mode={profiles.config.relation_mode!r}")


def name_space_size(profiles: Profiles, support: str = "generating") -> int:
    """M = |first|·|middle|·|last| name parts, from the pools or distinct over all N names."""
    check_choice("support", support, SUPPORTS)
    if support == "generating":
        _need(profiles, "the name space")
        return len(profiles.pools.first_names) ** 2 * len(profiles.pools.last_names)
    return math.prod(len(set(part)) for part in name_parts(list(profiles.names)))


def date_space_size(profiles: Profiles) -> int:
    """D, the number of possible dates: from the profile config, else the reference's 73,048 days (hub sets were
    made by the reference)."""
    return profiles.config.num_date_values if profiles.config else REFERENCE_DATE_VALUES


def subject_entropies(profiles: Profiles, scheme: str = "optimal", support: str = "generating") -> dict[str, float]:
    """H_s in bits for every subject (the reference's ``calculate_entropy``, or generating sizes)."""
    check_choice("scheme", scheme, SCHEMES)
    check_choice("support", support, SUPPORTS)
    n, bits = profiles.num_people, {}
    if support == "generating":
        _need(profiles, "the per-answer entropy")
    for attribute in ATTRIBUTES:
        if support == "observed":
            bits[attribute] = math.log2(len(np.unique(profiles.attribute_strings(attribute))))
        elif attribute == "birth_date":
            bits[attribute] = birth_date_entropy(profiles.config)
        else:
            bits[attribute] = math.log2(len(profiles.pools.for_attribute(attribute)))
    for r, relation in enumerate(profiles.relation_names):
        targets = profiles.relations[:, r]
        bits[relation] = math.log2(n) if support == "generating" else math.log2(len(np.unique(targets)))
        if scheme == "independent":
            if support == "generating":
                bits[relation] = math.log2(name_space_size(profiles, "generating"))
            else:
                bits[relation] = sum(math.log2(len(set(p))) for p in name_parts(list(profiles.names[targets])))
    if scheme == "independent":
        bits["birth_date"] = math.log2(date_space_size(profiles))
    return bits


def name_selection_bits(num_people: int, name_space: int, selection: str = "optimal") -> float:
    """S_name (the reference's ``calculate_selection_entropy``) for N distinct names out of M = ``name_space``."""
    check_choice("selection", selection, SELECTIONS)
    if num_people > name_space:
        raise ValueError(f"num_people={num_people} distinct names cannot come from name_space={name_space}")
    n, log2_m = num_people, math.log2(name_space)
    if selection == "independent":
        return 0.0
    if selection == "enumerate":
        return n * log2_m
    if selection == "optimal":
        return n * log2_m - n * math.log2(n)
    return log2_binomial(name_space, n)


def birth_date_selection_bits(num_date_values: int, num_distinct_dates: int, selection: str = "optimal") -> float:
    """S_bd = log2 C(D, n_bd), as the reference's ``calculate_selection_entropy``; 0 for ``independent``."""
    check_choice("selection", selection, SELECTIONS)
    return 0.0 if selection == "independent" else log2_binomial(num_date_values, num_distinct_dates)


@dataclass(frozen=True)
class EntropyBudget:
    """Everything capacity needs from a dataset: H_s per subject and the selection costs, in bits."""

    subject_bits: dict[str, float]
    relation_names: tuple[str, ...]
    num_people: int
    name_selection_bits: float
    birth_date_selection_bits: float
    scheme: str = "optimal"
    selection: str = "optimal"
    support: str = "generating"

    @property
    def baseline_bits(self) -> float:
        """S_name + S_bd: the credit for a model that learned only the sets; a :meth:`restricted` budget
        counts S_name only with a relation among its subjects and S_bd only with the birth date."""
        names = self.name_selection_bits if self.present_relations else 0.0
        return names + (self.birth_date_selection_bits if "birth_date" in self.subject_bits else 0.0)

    @property
    def present_relations(self) -> tuple[str, ...]:
        """The relations that are subjects of this budget (all of them unless :meth:`restricted`)."""
        return tuple(r for r in self.relation_names if r in self.subject_bits)

    def restricted(self, subjects) -> "EntropyBudget":
        """The same budget over only ``subjects`` (e.g. those a 2-hop evaluation has losses for).

        ``relation_names`` is kept: under 2-hop-big-hash every relation is still a possible first hop."""
        keep = [s for s in self.subject_bits if s in set(subjects)]
        if not keep:
            raise ValueError(f"restricted() got none of this budget's subjects {list(self.subject_bits)}: {subjects}")
        return dataclasses.replace(self, subject_bits={s: self.subject_bits[s] for s in keep})

    def multipliers(self, hops: int = 1) -> dict[str, int]:
        """m_s: how many times each subject's facts count (the reference's ``calculate_capacities``)."""
        check_choice("hops", hops, (1, 2))
        relations = set(self.relation_names)
        if hops == 2 and self.scheme == "2-hop-big-hash":
            return {s: len(self.relation_names) for s in self.subject_bits}
        if hops == 2 and self.scheme == "2-hop-double":
            return {s: 2 if s in relations else 1 for s in self.subject_bits}
        return {s: 1 for s in self.subject_bits}

    def dataset_bits(self, hops: int = 1) -> float:
        """E = N·Σ_s m_s·H_s + S_name + S_bd: E₁ for hops=1, E₂ under 2-hop-big-hash for hops=2."""
        m = self.multipliers(hops)
        return self.num_people * sum(m[s] * h for s, h in self.subject_bits.items()) + self.baseline_bits


def entropy_budget(profiles: Profiles, scheme: str = "optimal", selection: str = "optimal",
                   support: str = "generating") -> EntropyBudget:
    """H_s and selection costs of a profile table under the named schemes."""
    check_choice("selection", selection, SELECTIONS)
    bits = subject_entropies(profiles, scheme, support)
    s_name = name_selection_bits(profiles.num_people, name_space_size(profiles, support), selection)
    if support == "generating":
        s_bd = 0.0  # dates are coded against the whole calendar (module docstring)
    else:
        s_bd = birth_date_selection_bits(date_space_size(profiles), len(np.unique(profiles.birth_dates)), selection)
    return EntropyBudget(bits, profiles.relation_names, profiles.num_people, s_name, s_bd, scheme, selection, support)


def dataset_entropy(profiles: Profiles, hops: int = 1, scheme: str = "optimal", selection: str = "optimal",
                    support: str = "generating") -> float:
    """Dataset entropy in bits; pass ``scheme='2-hop-big-hash'`` with ``hops=2`` for E₂."""
    return entropy_budget(profiles, scheme, selection, support).dataset_bits(hops)


@dataclass
class Capacity:
    """Capacity in bits, per subject (empty for the average path) and in total."""

    total_bits: float
    per_subject_bits: dict[str, float] = field(default_factory=dict)
    num_parameters: int | None = None

    @property
    def bits_per_parameter(self) -> float:
        if not self.num_parameters:
            raise ValueError("bits_per_parameter needs num_parameters")
        return self.total_bits / self.num_parameters


def per_hop_loss(loss_bits: float, entropy_bits: float) -> float:
    """2-hop-double: the per-hop loss L′ = −log2 p_x, where p_x² + (1 − p_x)/n = 2^−L and n = 2^H; ≤ H."""
    p_y, inv_n = 2.0 ** -loss_bits, 2.0 ** -entropy_bits
    discriminant = inv_n * inv_n - 4.0 * (inv_n - p_y)
    if discriminant < 0:  # worse than a uniform guess
        return entropy_bits
    p_x = (inv_n + math.sqrt(discriminant)) / 2.0
    return min(-math.log2(p_x), entropy_bits) if p_x > 0 else entropy_bits


def _check_losses(budget: EntropyBudget, losses_bits: Mapping[str, float]) -> None:
    missing = [s for s in budget.subject_bits if s not in losses_bits]
    if missing:
        raise ValueError(f"losses_bits lacks subjects {missing}; it needs every subject of {list(budget.subject_bits)}")
    bad = {s: v for s, v in losses_bits.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"losses must be finite and >= 0 bits per answer; got {bad}")


def capacity_from_losses(budget: EntropyBudget, losses_bits: Mapping[str, float], hops: int = 1,
                         incremental: bool = False, num_parameters: int | None = None) -> Capacity:
    """Per-subject capacity (the reference's ``--subjectwise`` path) from mean per-answer losses in **bits**."""
    _check_losses(budget, losses_bits)
    n, m = budget.num_people, budget.multipliers(hops)
    relations = budget.present_relations  # the name set is shared among the relations that are subjects here
    share = {r: budget.name_selection_bits / len(relations) for r in relations}
    share["birth_date"] = budget.birth_date_selection_bits
    per_subject = {}
    for subject, h in budget.subject_bits.items():
        loss = losses_bits[subject]
        if budget.scheme == "2-hop-double" and hops == 2:
            loss = per_hop_loss(loss, h)
        gain = m[subject] * n * (h - loss)
        if incremental:
            per_subject[subject] = max(0.0, gain)
        elif subject not in share:
            per_subject[subject] = gain
        elif h > loss:
            per_subject[subject] = gain + share[subject]
        else:  # the reference divides a relation's overshoot by R too: (S_name − N(L − H))/R
            overshoot = n * (loss - h) / (len(relations) if subject in relations else 1)
            per_subject[subject] = share[subject] - overshoot
    return Capacity(sum(per_subject.values()), per_subject, num_parameters)


def capacity_from_mean_loss(budget: EntropyBudget, mean_loss_bits: float, hops: int = 1, incremental: bool = False,
                            num_parameters: int | None = None) -> Capacity:
    """Average path (the reference default) from the mean per-answer loss over all K subjects, in bits."""
    if budget.scheme == "2-hop-double":
        raise ValueError("scheme='2-hop-double' converts losses per subject: use capacity_from_losses")
    if not (math.isfinite(mean_loss_bits) and mean_loss_bits >= 0):
        raise ValueError(f"mean_loss_bits={mean_loss_bits} must be finite and >= 0")
    n, k = budget.num_people, len(budget.subject_bits)
    total_h = sum(budget.subject_bits.values())
    m = len(budget.relation_names) if (hops == 2 and budget.scheme == "2-hop-big-hash") else 1
    gain = m * n * (total_h - k * mean_loss_bits)
    if incremental:
        return Capacity(max(0.0, gain), num_parameters=num_parameters)
    if total_h > k * mean_loss_bits:
        return Capacity(gain + budget.baseline_bits, num_parameters=num_parameters)
    return Capacity(budget.baseline_bits - n * (k * mean_loss_bits - total_h), num_parameters=num_parameters)


def mean_subject_loss(budget: EntropyBudget, losses_bits: Mapping[str, float]) -> float:
    """L̄ of the average path: the mean of the per-subject losses over the budget's subjects (each subject weighs
    the same, as in a balanced evaluation set)."""
    _check_losses(budget, losses_bits)
    return float(np.mean([losses_bits[s] for s in budget.subject_bits]))


def capacity_2_1_hop(budget: EntropyBudget, two_hop_losses_bits: Mapping[str, float],
                     one_hop_losses_bits: Mapping[str, float], num_parameters: int | None = None,
                     path: str = "subjectwise") -> Capacity:
    """"2.1-hop" (as the reference's ``measure_capacity.py`` defines it): 2-hop capacity plus the incremental
    capacity of the same checkpoint's 1-hop losses.

    ``path='average'`` uses the average path for both parts (mean losses over the budget's subjects)."""
    check_choice("path", path, PATHS)
    if path == "average":
        two = capacity_from_mean_loss(budget, mean_subject_loss(budget, two_hop_losses_bits), hops=2)
        one = capacity_from_mean_loss(budget, mean_subject_loss(budget, one_hop_losses_bits), hops=1,
                                      incremental=True)
        return Capacity(two.total_bits + one.total_bits, num_parameters=num_parameters)
    two = capacity_from_losses(budget, two_hop_losses_bits, hops=2)
    one = capacity_from_losses(budget, one_hop_losses_bits, hops=1, incremental=True)
    per_subject = {s: two.per_subject_bits[s] + one.per_subject_bits[s] for s in two.per_subject_bits}
    return Capacity(two.total_bits + one.total_bits, per_subject, num_parameters)


__all__ = [
    "LAW_BITS_PER_PARAM", "PATHS", "SCHEMES", "SELECTIONS", "SUPPORTS", "Capacity", "EntropyBudget", "birth_date_entropy",
    "birth_date_selection_bits", "capacity_2_1_hop", "capacity_from_losses", "capacity_from_mean_loss",
    "dataset_entropy", "date_space_size", "entropy_budget", "log2_binomial", "mean_subject_loss", "name_selection_bits",
    "name_space_size",
    "nats_to_bits",
    "per_hop_loss", "subject_entropies",
]
