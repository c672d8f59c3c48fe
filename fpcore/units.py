"""Numbers as people write them on a command line: counts with SI suffixes, byte sizes
with their units. Both give finite floats or a SpecError naming the field.

* counts (``--params``, ``--tokens``): ``13e9``, ``13B`` (billion), ``380 B``,
  ``1.5T``, ``20k``, ``4,096``;
* byte sizes (``--bytes``): ``8``, ``8B``, ``4KB``/``4kB`` (SI: 4,000), ``4MB``,
  ``1GB``, ``4KiB`` (binary: 4,096), ``4MiB``, ``1GiB``, ``1e9``. A bare ``4M`` is
  refused: it is not clear whether 4 MB or 4 MiB is meant.
"""

from __future__ import annotations

import math
import re

from .errors import SpecError

_COUNT = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_BYTES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SPLIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*$")


def _split(text, field: str, example: str) -> tuple[float, str]:
    s = str(text).replace("_", "").replace(",", "")
    m = _SPLIT.match(s)
    if m is None:
        raise SpecError(field, f"must be a number such as {example}; got {str(text)[:80]!r}")
    value = float(m.group(1))
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite; got {str(text)[:80]!r}")
    return value, m.group(2).lower()


def parse_count(text, field: str) -> float:
    """``13e9``, ``13B``, ``380 B``, ``1.5T``, ``20k`` -> float."""
    value, suffix = _split(text, field, "13e9 or 13B")
    if suffix not in _COUNT:
        raise SpecError(field, f"unknown suffix {suffix!r} in {str(text)[:80]!r}; allowed: "
                               f"k (thousand), M (million), B or G (billion), T (trillion)")
    value *= _COUNT[suffix]
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite; got {str(text)[:80]!r}")
    return value


def parse_bytes(text, field: str) -> float:
    """``8``, ``8B``, ``4KB`` (4,000), ``4MiB`` (4,194,304), ``1e9`` -> bytes."""
    value, suffix = _split(text, field, "8, 4KiB, 4MB or 1GiB")
    if suffix not in _BYTES:
        raise SpecError(field, f"unknown byte unit {suffix!r} in {str(text)[:80]!r}; allowed: "
                               f"B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB "
                               f"(powers of 1024)")
    value *= _BYTES[suffix]
    if not math.isfinite(value):
        raise SpecError(field, f"must be finite; got {str(text)[:80]!r}")
    return value
