"""The one error type for bad input, and the checks every number that enters goes through.

Every check names the field and what is allowed, so a user reading one line knows
what to change (scipy's ``least_squares`` style: "`x0` is infeasible"). The same
checks serve CLI options, TOML presets, CSV run logs, JSON calibration files and
checkpoint metadata: a value is finite, in range, of the right type, with its unit
in the message.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable


class SpecError(ValueError):
    """An input (option, model, system, layout, file) is invalid.

    ``field`` names the offending input, ``message`` says what is allowed; both are
    kept as attributes so no caller re-parses ``str(e)``. It pickles (a worker
    process's error reaches the parent intact).
    """

    def __init__(self, field: str, message: str):
        self.field = str(field)
        self.message = str(message)
        super().__init__(self.field, self.message)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def __reduce__(self):
        return type(self), (self.field, self.message)

    def within(self, where: str) -> "SpecError":
        """The same error with its field prefixed by ``where`` (unless it already is)."""
        if self.field == where or self.field.startswith(where + "."):
            return self
        return type(self)(f"{where}.{self.field}", self.message)


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""


def shown(value, limit: int = 40) -> str:
    """A value as an error line quotes it: whole if short, else its start and its length
    (an input may hold a number of a thousand digits or a string of a megabyte)."""
    try:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) \
            else repr(value)
    except ValueError:             # an int past Python's digit limit for str()
        return f"an integer of {value.bit_length():,} bits"
    if len(text) <= limit:
        return text
    return f"{text[:limit - 12]}... ({len(text):,} characters)"


def check_int(field: str, value, *, lo: int | None = 1, hi: int | None = None,
              unit: str = "") -> int:
    """Return ``value`` as an int in [lo, hi] or raise SpecError naming ``field``.

    A float is accepted only when it is a whole number (TOML and JSON write 2.0)."""
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value                   # the common case, without the ABC checks below
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(field, f"must be an integer, got {shown(value)}")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value) or not float(value).is_integer():
            raise SpecError(field, f"must be an integer, got {shown(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            allowed = f">= {lo}"
        elif lo is None:
            allowed = f"<= {hi}"
        else:
            allowed = f"between {lo} and {hi}"
        raise SpecError(field, f"must be an integer {allowed}{_unit(unit)}, got {shown(value)}")
    return value


def check_float(field: str, value, *, lo: float | None = 0.0, hi: float | None = None,
                lo_open: bool = True, hi_open: bool = False, unit: str = "") -> float:
    """Return ``value`` as a finite float in (lo, hi] (``lo_open``/``hi_open`` choose the
    ends; ``None`` leaves a side unbounded) or raise SpecError naming ``field``."""
    if type(value) is float and value - value == 0.0 and (
            lo is None or (value > lo if lo_open else value >= lo)) and (
            hi is None or (value < hi if hi_open else value <= hi)):
        return value                   # finite and in range: the common case, fast
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(field, f"must be a number, got {shown(value)}")
    try:
        value = float(value)
    except OverflowError:                      # an int (TOML's have no bound) past a float
        raise SpecError(field, f"must be a finite number, got {shown(value)}") from None
    if not math.isfinite(value):
        raise SpecError(field, f"must be a finite number, got {value}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        raise SpecError(field, f"must be {' and '.join(parts)}{_unit(unit)}, got {value:g}")
    return value


def check_choice(field: str, value, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise SpecError(field, f"must be one of {', '.join(choices)}; got {shown(value)}")
    return value


def check_bool(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, got {shown(value)}")
    return value


def check_str(field: str, value, *, max_len: int = 10_000) -> str:
    if not isinstance(value, str):
        raise SpecError(field, f"must be a string, got {value!r}")
    if len(value) > max_len:
        raise SpecError(field, f"must be at most {max_len:,} characters, got {len(value):,}")
    return value


def check_table(field: str, value) -> dict:
    if not isinstance(value, dict):
        raise SpecError(field, f"must be a table of keys and values, got {type(value).__name__}")
    return value


def check_list(field: str, value, *, min_len: int = 0, max_len: int = 1_000_000) -> list:
    if not isinstance(value, (list, tuple)):
        raise SpecError(field, f"must be a list, got {value!r}")
    if not min_len <= len(value) <= max_len:
        raise SpecError(field, f"must hold between {min_len} and {max_len:,} items, "
                               f"got {len(value):,}")
    return list(value)


def check_keys(where: str, data: dict, allowed: Iterable[str]) -> None:
    """Unknown keys are errors (a typo must not be silently ignored)."""
    check_table(where, data)
    allowed = set(allowed)
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}",
                        f"unknown key; allowed keys are {', '.join(sorted(allowed))}")


def require(where: str, data: dict, keys: Iterable[str]) -> None:
    """Every key of ``keys`` is present in ``data``."""
    check_table(where, data)
    missing = [k for k in keys if k not in data]
    if missing:
        raise SpecError(f"{where}.{missing[0]}", "missing required key")
