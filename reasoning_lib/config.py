"""Small helpers for validated dataclass configs and named presets.

Every config in the library is a ``@dataclass`` whose ``__post_init__`` calls these checks, so a wrong
value fails at construction with a message that names the parameter and what it accepts (ARENA style).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")


# Abstract types, so NumPy's integers and floats pass too (an int is a real number).
_ABSTRACT = {int: numbers.Integral, float: numbers.Real}
_WORDS = {int: "int", float: "a real number", str: "str", bool: "bool", type(None): "None"}


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` unless ``value`` is one of ``types``; ``float`` admits any real number, ``int`` any
    integer, and a bool counts only where ``bool`` is listed (``True`` is no step count)."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        ok = bool in types
    else:
        ok = any(isinstance(value, _ABSTRACT.get(t, t)) for t in types)
    if not ok:
        expected = " or ".join(_WORDS.get(t, t.__name__) for t in types)
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected {expected}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` > 0 (or >= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ValueError(f"{name}={value!r} must lie in [{low}, {high}]")


def from_preset(presets: Mapping[str, T], preset: str, **overrides: Any) -> T:
    """Return ``presets[preset]`` with ``overrides`` applied (unknown field names raise)."""
    check_choice("preset", preset, presets)
    base = presets[preset]
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {type(base).__name__}; known: {sorted(fields)}")
    return dataclasses.replace(base, **overrides)
