"""Every number the reports print, formatted in one place.

Two styles: the report pages' (3 significant digits with thousands separators, a unit
that reads best; every helper takes None, a field the report left out, and answers
NA), and the terminal tables' compact cells (``compact``: 21k, 1.14M), whose columns
stay narrow; a time set beside another to compare (measured against predicted) keeps a
fourth digit (``plain``).
"""

from __future__ import annotations

import math

DAY = 86400.0
HOUR = 3600.0
NA = "n/a"


def num(x: float | None) -> str:
    """3 significant digits with thousands separators and no exponent above 0.001:
    1234567 -> '1,230,000', 41.23 -> '41.2', 0.04567 -> '0.0457'."""
    if x is None:
        return NA
    x = float(x)
    if math.isnan(x):
        return NA
    if math.isinf(x):
        return "infinite" if x > 0 else "-infinite"
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.2e}"
    exp = math.floor(math.log10(abs(x)))
    digits = 2 - exp                                       # decimals for 3 significant digits
    r = round(x, digits)
    if r and math.floor(math.log10(abs(r))) > exp:         # 9.996 rounds up to 10.0: one fewer
        digits -= 1
        r = round(x, digits)
    return f"{r:,.{max(digits, 0)}f}"


def count(n: int | None) -> str:
    """An exact whole number with thousands separators: 13824 -> '13,824'."""
    if n is None:
        return NA
    if isinstance(n, float) and not n.is_integer():
        return num(n)
    return f"{int(n):,}"


def pct(fraction: float | None) -> str:
    """A fraction as a percentage, 3 significant digits: 0.4123 -> '41.2%'."""
    return NA if fraction is None else num(100 * fraction) + "%"


def near_one_pct(fraction: float | None) -> str:
    """A fraction close to 1 as a percentage whose distance from 100% keeps 2 significant
    digits, so 99.957% is not rounded to '100%': 0.99957 -> '99.957%', 0.9 -> '90.0%'."""
    if fraction is None:
        return NA
    short = 1 - fraction
    if short <= 0 or short >= 0.01:
        return pct(fraction)
    decimals = 1 - math.floor(math.log10(100 * short))
    return f"{100 * fraction:.{decimals}f}%"


def signed_pct(fraction: float | None) -> str:
    """A change as a signed percentage: 0.052 -> '+5.20%', -0.1 -> '-10.0%'."""
    if fraction is None:
        return NA
    return ("+" if fraction > 0 else "") + pct(fraction)


def days(seconds: float | None) -> str:
    """Seconds as a number of days (the unit goes in the label): 3.11e6 -> '36.0'."""
    return NA if seconds is None else num(seconds / DAY)


def gb(nbytes: float | None) -> str:
    """Bytes as SI gigabytes (the unit goes in the label): 2.63e10 -> '26.3'."""
    return NA if nbytes is None else num(nbytes / 1e9)


def duration(seconds: float | None) -> str:
    """A time span with the unit that reads best: '131 us', '45.0 s', '12.5 min', '6.34 h',
    '36.0 days'."""
    if seconds is None:
        return NA
    if seconds < 1e-3:
        return f"{num(seconds * 1e6)} us"
    if seconds < 1:
        return f"{num(seconds * 1e3)} ms"
    if seconds < 120:
        return f"{num(seconds)} s"
    if seconds < 2 * HOUR:
        return f"{num(seconds / 60)} min"
    if seconds < 2 * DAY:
        return f"{num(seconds / HOUR)} h"
    return f"{num(seconds / DAY)} days"


def rate(bytes_per_s: float | None) -> str:
    """Bytes per second in the SI unit that reads best: 2.27e9 -> '2.27 GB/s', 1.62e6 ->
    '1.62 MB/s'."""
    if bytes_per_s is None:
        return NA
    for div, unit in ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if abs(bytes_per_s) >= div:
            return f"{num(bytes_per_s / div)} {unit}"
    return f"{num(bytes_per_s)} B/s"


def big(x: float | None) -> str:
    """A large count with a word-sized suffix: 1.3168e10 -> '13.2 B', 3.8e11 -> '380 B'."""
    if x is None:
        return NA
    for div, suffix in ((1e12, " T"), (1e9, " B"), (1e6, " M")):
        if abs(x) >= div:
            return num(x / div) + suffix
    return num(x)


def value(v: object) -> str:
    """Any JSON value for a table cell, as given rather than rounded (provenance values are
    inputs: numbers, strings, lists or tables): 1024.0 -> '1,024', 0.934 -> '0.934'."""
    if v is None:
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return count(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(value(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {value(x)}" for k, x in v.items())
    return str(v)


# ---------------------------------------------------------------------------------------------
# Terminal table cells: narrow columns.

def compact(x: float) -> str:
    """3 significant digits with an SI suffix: 21012 -> '21k', 1.14e6 -> '1.14M'."""
    if abs(x) >= 1e18:                     # past the suffixes: the exponent alone
        return f"{x:.3g}"
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def compact_seconds(x: float) -> str:
    """Seconds in a cell: whole seconds from 100 s, else 3 significant digits."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def plain(v: float) -> str:
    """A measured or predicted figure in one style, never in exponent form above 1e-4:
    2,533 and 11,730, 3.564, 0.01234 (four significant digits below 1,000)."""
    if v == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) >= 1e-4 else f"{v:.2e}"


def compact_days(seconds: float) -> str:
    """Seconds as days in a cell: one decimal below 1,000 days."""
    d = seconds / DAY
    return f"{d:,.1f}" if d < 1000 else f"{d:,.0f}"
