"""Errors raised for bad specifications and the helpers that validate fields.

Every check names the field and what is allowed, so a user reading one line knows
what to change (scipy's ``least_squares`` style: "`x0` is infeasible").
"""

from __future__ import annotations

import math
from typing import Iterable


class SpecError(ValueError):
    """A specification (model, system, layout, preset file) is invalid.

    ``field`` names the offending field; the message says what is allowed.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def check_int(field: str, value, *, lo: int = 1, hi: int | None = None) -> int:
    """Return ``value`` as an int in [lo, hi] or raise SpecError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(field, f"must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise SpecError(field, f"must be an integer, got {value!r}")
        value = int(value)
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise SpecError(field, f"must be an integer {allowed}, got {value}")
    return value


def check_float(field: str, value, *, lo: float = 0.0, hi: float | None = None,
                lo_open: bool = True) -> float:
    """Return ``value`` as a finite float in (lo, hi] (or [lo, hi]) or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(field, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite, got {value}")
    too_low = value <= lo if lo_open else value < lo
    if too_low or (hi is not None and value > hi):
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        allowed = low if hi is None else f"{low} and <= {hi:g}"
        raise SpecError(field, f"must be {allowed}, got {value:g}")
    return value


def check_choice(field: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise SpecError(field, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, got {value!r}")
    return value


def check_keys(where: str, data: dict, allowed: Iterable[str]) -> None:
    """Unknown keys are errors (a typo must not be silently ignored)."""
    allowed = set(allowed)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}",
                        f"unknown key; allowed keys are {', '.join(sorted(allowed))}")
