"""Every number the reports print (reports.numbers): the pages' formats and the terminal
tables' compact cells."""

import pytest

from reports import numbers as n


@pytest.mark.parametrize("fn, x, want", [
    (n.num, 1_234_567, "1,230,000"), (n.num, 386_412.5, "386,000"), (n.num, 41.23, "41.2"),
    (n.num, 0.04567, "0.0457"), (n.num, 9.996, "10.0"), (n.num, 999.7, "1,000"),
    (n.num, -2.5, "-2.50"), (n.num, 0, "0"), (n.num, None, "n/a"),
    (n.num, float("nan"), "n/a"), (n.count, 13824, "13,824"), (n.count, None, "n/a"),
    (n.pct, 0.8731, "87.3%"), (n.pct, 1.0, "100%"), (n.signed_pct, 0.052, "+5.20%"),
    (n.signed_pct, -0.0848, "-8.48%"), (n.days, 983_407.0, "11.4"), (n.gb, 21.8e9, "21.8"),
    (n.duration, 1.31e-4, "131 us"), (n.duration, 0.0452, "45.2 ms"),
    (n.duration, 3.16, "3.16 s"), (n.duration, 1279.7, "21.3 min"),
    (n.duration, 22_831.0, "6.34 h"), (n.duration, 983_407.0, "11.4 days"),
    (n.big, 13_167_577_728, "13.2 B"), (n.big, 3.8e11, "380 B"), (n.big, 1.2e12, "1.20 T"),
    (n.rate, 2.27e9, "2.27 GB/s"), (n.rate, 1.62e6, "1.62 MB/s"), (n.rate, 991.2e3, "991 kB/s"),
    (n.rate, 12.0, "12.0 B/s"), (n.rate, None, "n/a"),
    (n.value, True, "yes"), (n.value, None, "n/a"),
    (n.value, 6.8e9, "6,800,000,000"), (n.value, 1024.0, "1,024"), (n.value, 0.934, "0.934"),
    (n.value, 158976, "158,976"), (n.value, "x", "x"), (n.value, {"fp32": 64}, "fp32 64"),
    (n.value, [2, "mesh"], "2, mesh"),
])
def test_number_formats(fn, x, want):
    assert fn(x) == want


@pytest.mark.parametrize("fn, x, want", [
    (n.compact, 21_012, "21k"), (n.compact, 1.14e6, "1.14M"), (n.compact, 12.3, "12.3"),
    (n.compact, 4.3e12, "4.3T"), (n.compact, 2.1e15, "2.1P"), (n.compact_seconds, 196.4, "196"),
    (n.compact_seconds, 98.2, "98.2"), (n.compact_days, 141.4 * 86400, "141.4"),
    (n.compact_days, 5061 * 86400, "5,061"),
])
def test_compact_table_cells(fn, x, want):
    assert fn(x) == want
