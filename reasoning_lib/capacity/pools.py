"""Value pools of the synthetic world: explicit, sized, offline lists of names and attribute values.

The reference clones NameDatabases at run time (5,163 first and 88,799 last names) and reads hand-made town,
university and employer files. The project never downloads: the default pools are read from the ``faker``
package's provider lists (its data only, never its weighted random sampler), and a synthetic-syllable pool serves
tests and machines without faker. Pools are de-duplicated and the generator samples them uniformly with its own
numpy RNG, so log2|pool| is the exact per-answer entropy (see :mod:`.entropy`).

Every value must tokenise the same inside any question template: single spaces, nothing around it, and a
letter or digit at both ends, so a byte-level BPE never merges it with the ``'s``, ``?`` or ``:`` next to it.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..config import check_choice, check_positive

POOL_FIELDS = ("first_names", "last_names", "cities", "universities", "employers")
# The pool that each string attribute is drawn from (birth_date has no pool: it is a calendar grid).
ATTRIBUTE_POOLS = {"birth_city": "cities", "university": "universities", "employer": "employers"}
SOURCES = ("faker", "synthetic")
_FORBIDDEN = ("?", "<|", "\n")
# A fixed seed for choosing synthetic pool members: pools are configuration, not data drawn with the user's RNG.
_POOL_SEED = 20240530


@dataclass(frozen=True)
class ValuePools:
    """De-duplicated value lists; first and middle names share ``first_names``, as in the reference."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    cities: tuple[str, ...]
    universities: tuple[str, ...]
    employers: tuple[str, ...]
    source: str = "custom"

    def __post_init__(self):
        for name in POOL_FIELDS:
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise ValueError(f"pool {name!r} is empty")
            if len(set(values)) != len(values):
                dupes = sorted({v for v in values if values.count(v) > 1})[:5]
                raise ValueError(f"pool {name!r} has duplicate values {dupes}: sampling would not be uniform")
            for value in values:
                check_value(name, value, allow_spaces=name not in ("first_names", "last_names"))

    def sizes(self) -> dict[str, int]:
        """Number of values in each pool."""
        return {name: len(getattr(self, name)) for name in POOL_FIELDS}

    def for_attribute(self, attribute: str) -> tuple[str, ...]:
        """The pool of a string attribute (``birth_city``, ``university``, ``employer``)."""
        check_choice("attribute", attribute, ATTRIBUTE_POOLS)
        return getattr(self, ATTRIBUTE_POOLS[attribute])

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ValuePools":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_value(pool: str, value: str, allow_spaces: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` tokenises the same in every template (see the module docstring)."""
    problem = None
    if not isinstance(value, str) or not value:
        problem = "is empty or not a string"
    elif value != " ".join(value.split()):
        problem = "has leading, trailing or repeated whitespace"
    elif not (value[0].isalnum() and value[-1].isalnum()):
        problem = "must start and end with a letter or digit"
    elif any(bad in value for bad in _FORBIDDEN):
        problem = f"contains one of {list(_FORBIDDEN)}"
    elif not allow_spaces and " " in value:
        problem = "contains a space (name parts must be single words, so a full name splits back into its parts)"
    if problem:
        raise ValueError(f"pool {pool!r}: value {value!r} {problem}")


def _clean(values, allow_spaces: bool = True) -> list[str]:
    """Normalise whitespace, drop values that fail :func:`check_value`, de-duplicate keeping the first."""
    kept = []
    for raw in values:
        value = " ".join(str(raw).split())
        try:
            check_value("candidate", value, allow_spaces)
        except ValueError:
            continue
        kept.append(value)
    return list(dict.fromkeys(kept))


def _take(name: str, values: list[str], size: int | None) -> tuple[str, ...]:
    if size is None:
        return tuple(values)
    check_positive(f"num_{name}", size)
    if size > len(values):
        raise ValueError(f"num_{name}={size} is more than the {len(values)} available {name}")
    return tuple(values[:size])


def faker_available() -> bool:
    """Whether the ``faker`` package can be imported."""
    return importlib.util.find_spec("faker") is not None


def faker_pools(
    num_first_names: int | None = None,
    num_last_names: int | None = None,
    num_cities: int | None = None,
    num_universities: int = 100,
    num_employers: int = 100,
) -> ValuePools:
    """Pools from faker's provider lists (deterministic, offline); ``None`` keeps a whole list.

    Names: ``en_US`` first (690) and last (1,000) names. Cities: ``en_IN`` (≈315 after cleaning). Universities:
    "University of {city}" over ``de_DE`` cities. Employers: "{last name} {suffix}" over ``en_US`` last names."""
    from faker.providers.address.de_DE import Provider as GermanAddress
    from faker.providers.address.en_IN import Provider as IndianAddress
    from faker.providers.company.en_US import Provider as Company
    from faker.providers.person.en_US import Provider as Person

    first = _clean(Person.first_names, allow_spaces=False)
    last = _clean(Person.last_names, allow_spaces=False)
    cities = _clean(IndianAddress.cities)
    universities = _clean(f"University of {city}" for city in GermanAddress.cities)
    suffixes = _clean(Company.company_suffixes)
    employers = _clean(f"{name} {suffixes[i % len(suffixes)]}" for i, name in enumerate(reversed(last)))
    return ValuePools(
        _take("first_names", first, num_first_names), _take("last_names", last, num_last_names),
        _take("cities", cities, num_cities), _take("universities", universities, num_universities),
        _take("employers", employers, num_employers), source="faker",
    )


def _syllable_words(num: int, num_syllables: int, rng: np.random.Generator, suffix: str = "") -> list[str]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]  # 70 syllables
    total = len(syllables) ** num_syllables
    if num > total:
        raise ValueError(f"asked for {num} synthetic words of {num_syllables} syllables; only {total} exist")
    codes = rng.choice(total, size=num, replace=False)
    words = []
    for code in codes:
        parts = []
        for _ in range(num_syllables):
            code, i = divmod(int(code), len(syllables))
            parts.append(syllables[i])
        words.append("".join(parts).capitalize() + suffix)
    return words


def synthetic_pools(
    num_first_names: int = 40,
    num_last_names: int = 40,
    num_cities: int = 20,
    num_universities: int = 10,
    num_employers: int = 10,
) -> ValuePools:
    """Made-up syllable names and places (by default small pools sized for CPU runs); the same lists every call."""
    rng = np.random.default_rng(_POOL_SEED)
    first = _syllable_words(num_first_names, 2, rng)
    last = _syllable_words(num_last_names, 3, rng)
    cities = _syllable_words(num_cities, 2, rng, suffix="ton")
    universities = [f"University of {w}" for w in _syllable_words(num_universities, 2, rng, suffix="ford")]
    kinds = ("Corp", "Works", "Group", "Labs")
    employers = [f"{w} {kinds[i % len(kinds)]}" for i, w in enumerate(_syllable_words(num_employers, 2, rng))]
    return ValuePools(tuple(first), tuple(last), tuple(cities), tuple(universities), tuple(employers),
                      source="synthetic")


def default_pools(source: str = "faker", **sizes: int | None) -> ValuePools:
    """``'faker'`` pools (falling back, with a warning, to ``'synthetic'`` when faker is missing) or ``'synthetic'``."""
    check_choice("source", source, SOURCES)
    if source == "faker" and not faker_available():
        warnings.warn("faker is not installed: using the synthetic-syllable pools (pip install faker)", stacklevel=2)
        source = "synthetic"
    if source == "faker":
        return faker_pools(**sizes)
    return synthetic_pools(**{k: v for k, v in sizes.items() if v is not None})


def name_parts(names) -> tuple[list[str], list[str], list[str]]:
    """Split ``"First Middle Last"`` names into their three parts (the last part keeps any further words)."""
    split = [name.split(" ", 2) for name in names]
    if any(len(parts) != 3 for parts in split):
        bad = next(name for name, parts in zip(names, split) if len(parts) != 3)
        raise ValueError(f"name {bad!r} is not 'First Middle Last'")
    first, middle, last = (list(col) for col in zip(*split))
    return first, middle, last


__all__ = [
    "ATTRIBUTE_POOLS", "POOL_FIELDS", "SOURCES", "ValuePools", "check_value", "default_pools", "faker_available",
    "faker_pools", "name_parts", "synthetic_pools",
]
