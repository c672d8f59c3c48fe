"""The one error type and the checks every input goes through."""

import math
import pickle

import numpy as np
import pytest

from fpcore.errors import SpecError, check_float, check_int, check_keys, check_list
from topologies.allocation import AllocationError


@pytest.mark.parametrize("cls", [SpecError, AllocationError])
def test_errors_pickle_with_their_field_and_message(cls):
    e = pickle.loads(pickle.dumps(cls("nodes", "must be positive")))
    assert type(e) is cls and isinstance(e, SpecError)
    assert (e.field, e.message, str(e)) == ("nodes", "must be positive", "nodes: must be positive")


def test_within_prefixes_the_field_once():
    e = SpecError("cores", "must be > 0").within("fugaku.node")
    assert str(e) == "fugaku.node.cores: must be > 0"
    assert e.within("fugaku.node") is e


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", None, True, [1]])
def test_check_float_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(SpecError, match=r"^x: must be a"):
        check_float("x", value, lo=None)


def test_check_float_bounds_name_the_unit():
    with pytest.raises(SpecError, match=r"^bw: must be > 0 GB/s, got -1"):
        check_float("bw", -1, unit="GB/s")
    with pytest.raises(SpecError, match=r"must be >= 0 and < 1, got 1"):
        check_float("f", 1.0, lo=0, lo_open=False, hi=1, hi_open=True)
    assert check_float("f", np.float32(0.5), lo=0, hi=1) == 0.5


@pytest.mark.parametrize("value", [1.5, math.nan, math.inf, "3", True])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(SpecError, match=r"^n: must be an integer"):
        check_int("n", value)


def test_check_int_accepts_whole_floats_and_numpy_ints():
    assert check_int("n", 2.0) == 2 and check_int("n", np.int64(7)) == 7
    with pytest.raises(SpecError, match="between 1 and 3, got 4"):
        check_int("n", 4, hi=3)


def test_keys_and_lists():
    with pytest.raises(SpecError, match=r"^t.colour: unknown key"):
        check_keys("t", {"color": 1, "colour": 2}, ["color"])
    with pytest.raises(SpecError, match=r"^t: must be a table"):
        check_keys("t", [1], ["a"])
    with pytest.raises(SpecError, match="between 1 and"):
        check_list("clocks", [], min_len=1)


@pytest.mark.parametrize("value, kw, ok", [
    (0.0, dict(lo=0.0), False), (0.0, dict(lo=0.0, lo_open=False), True),
    (1e-300, dict(lo=0.0), True), (2.0, dict(hi=2.0), True), (2.0, dict(hi=2.0, hi_open=True), False),
    (float("nan"), dict(lo=None), False), (float("inf"), dict(lo=None), False),
    (-float("inf"), dict(lo=None), False), (-1.5, dict(lo=None, hi=0.0), True),
    (True, dict(lo=None), False), (3, dict(lo=0.0), True),
])
def test_check_float_at_its_bounds(value, kw, ok):
    """Finite in-range floats take a fast path; every bound and non-finite value still holds."""
    if ok:
        assert check_float("x", value, **kw) == value
    else:
        with pytest.raises(SpecError):
            check_float("x", value, **kw)


@pytest.mark.parametrize("value, kw, ok", [
    (1, dict(), True), (0, dict(), False), (0, dict(lo=0), True), (5, dict(hi=4), False),
    (True, dict(), False), (2.0, dict(), True), (2.5, dict(), False), (-3, dict(lo=None), True),
])
def test_check_int_at_its_bounds(value, kw, ok):
    if ok:
        assert check_int("n", value, **kw) == value and type(check_int("n", value, **kw)) is int
    else:
        with pytest.raises(SpecError):
            check_int("n", value, **kw)


def test_a_long_value_is_quoted_by_its_start_and_length():
    from fpcore.errors import shown
    assert shown(12) == "12" and shown("ab") == "'ab'"
    assert shown(10 ** 60) == "1" + "0" * 27 + "... (61 characters)"
    assert shown("x" * 10 ** 6, 30).endswith("... (1,000,002 characters)")
    with pytest.raises(SpecError, match=r"got 1000.*\(4,001 characters\)$"):
        check_int("layers", 10 ** 4000, hi=10)
    # past the digits Python will print: its size in bits
    with pytest.raises(SpecError, match=r"got an integer of 16,610 bits$"):
        check_int("layers", 10 ** 5000, hi=10)
