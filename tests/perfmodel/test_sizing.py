"""The --params rule: depth power law refit, the 13B shape, and the rule's bounds."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fpcore.errors import SpecError
from perfmodel.sizing import (DEPTH_COEFF, DEPTH_EXPONENT, PUBLISHED_DEPTHS,
                              model_for_params)


def same_to_3_significant_digits(a: float, b: float) -> bool:
    """|a - b| within half a unit of the 3rd significant digit of b."""
    half_unit = 0.5 * 10 ** (math.floor(math.log10(abs(b))) - 2)
    return abs(a - b) <= half_unit


def test_refit_reproduces_depth_power_law():
    n = np.array([p for p, _ in PUBLISHED_DEPTHS])
    depth = np.array([d for _, d in PUBLISHED_DEPTHS], dtype=float)
    exponent, log_coeff = np.polyfit(np.log(n), np.log(depth), 1)
    assert same_to_3_significant_digits(exponent, DEPTH_EXPONENT), exponent
    assert same_to_3_significant_digits(math.exp(log_coeff), DEPTH_COEFF), math.exp(log_coeff)


def test_13b_gets_the_gpt3_13b_shape():
    m = model_for_params(13e9)
    assert (m.layers, m.hidden, m.heads) == (40, 5120, 40)


# The rule's worst case over [1e8, 1e13] is 3.66%, near 1.203e10: there no admissible
# shape (head width 128, heads and depth multiples of 4, depth in [0.75, 1.33] x fit) is
# closer (36 x 5120 is the best, found by a dense scan). Hence the 3.7% bound.
BOUND = 0.037


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=8.0, max_value=13.0).map(lambda x: 10.0 ** x))
def test_rule_shape_is_valid_and_close(n):
    m = model_for_params(n)
    assert abs(m.params / n - 1) <= BOUND
    assert m.hidden % m.heads == 0
    assert m.layers % 2 == 0
    assert m.head_dim in (64, 128)


@pytest.mark.parametrize("n,shape", [
    (1.1060e10, (52, 4096)),     # nearest by relative error (-3.42%), not 44 x 4608 (+3.53%)
    (1.2011e10, (36, 5120)),
    (1.2029e10, (36, 5120)),     # the worst case: -3.66%
])
def test_coarsest_windows_pick_the_nearest_admissible_shape(n, shape):
    m = model_for_params(n)
    assert (m.layers, m.hidden) == shape
    assert abs(m.params / n - 1) <= BOUND


@pytest.mark.parametrize("n", [5e7, 2e13, -1, float("nan")])
def test_out_of_range_params_is_an_error_naming_params(n):
    with pytest.raises(SpecError) as info:
        model_for_params(n)
    assert info.value.field == "params"


def named_size(name: str) -> float:
    """The parameter count a name like gpt-20.3B states."""
    number, unit = name.removeprefix("gpt-")[:-1], name[-1]
    return float(number) * {"M": 1e6, "B": 1e9, "T": 1e12}[unit]


def digits_shown(name: str) -> int:
    return sum(c.isdigit() for c in name.removeprefix("gpt-").lstrip("0."))


@pytest.mark.parametrize("n", [20.861e9, 13e9, 1.234e8, 7.77e10, 3.3e12])
def test_the_name_states_the_exact_size_and_the_source_the_requested_one(n):
    m = model_for_params(n)
    shown = named_size(m.name)
    half_unit = 0.5 * 10 ** (math.floor(math.log10(m.params)) - digits_shown(m.name) + 1)
    assert abs(shown - m.params) <= half_unit * (1 + 1e-9), (m.name, m.params)
    assert f"{n:,.0f} parameters requested" in m.source


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=8.0, max_value=13.0).map(lambda x: 10.0 ** x))
def test_the_name_matches_the_exact_count_to_the_digits_shown(n):
    m = model_for_params(n)
    half_unit = 0.5 * 10 ** (math.floor(math.log10(m.params)) - digits_shown(m.name) + 1)
    assert abs(named_size(m.name) - m.params) <= half_unit * (1 + 1e-9), (m.name, m.params)
