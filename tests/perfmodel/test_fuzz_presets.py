"""Property-based fuzzing of the TOML inputs: every mutation of a shipped preset table
is either refused with a SpecError naming the field, or gives a spec whose every number
is finite (no NaN, infinity or wrong type gets in silently)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpcore.errors import SpecError
from fpcore.readers import parse_toml
from hostile import fuzz_settings, mutations, time_limit
from perfmodel.presets import _models, _systems, model_from_table
from perfmodel.system import system_from_table


def finite_everywhere(value, where="spec"):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value), f"{where} = {value}"
    elif isinstance(value, dict):
        for k, v in value.items():
            finite_everywhere(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            finite_everywhere(v, f"{where}[{i}]")


SYSTEMS = sorted(_systems())
MODELS = sorted(_models())


@pytest.mark.parametrize("name", SYSTEMS)
def test_mutated_system_tables_are_refused_or_finite(name):
    from perfmodel.presets import system_table
    table = system_table(name)[1]            # a variant (based_on) with its base's values

    @fuzz_settings(150)
    @given(mutated=mutations(table))
    def run(mutated):
        with time_limit(30):
            try:
                system = system_from_table("fuzzed", mutated, "fuzzed.toml:fuzzed")
            except SpecError as e:
                assert e.field.startswith("fuzzed") or e.field in ("ppn", "stack", "clock"), e
                return
            finite_everywhere(system.to_dict())
            system.rank                                  # the derived views work too
            system.network.allocation_unit(system.network.nodes)
    run()


@pytest.mark.parametrize("name", MODELS[:6])
def test_mutated_model_tables_are_refused_or_finite(name):
    table, _ = _models()[name]

    @fuzz_settings(80)
    @given(mutated=mutations(table))
    def run(mutated):
        try:
            model = model_from_table("fuzzed", mutated, "fuzzed.toml:fuzzed")
        except SpecError as e:
            assert e.field.startswith("fuzzed"), e
            return
        finite_everywhere(model.to_dict())
        assert model.params > 0
    run()


@fuzz_settings(300)
@given(text=st.one_of(st.text(max_size=200),
                      st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace"))))
def test_any_text_parses_or_is_refused_as_toml(text):
    try:
        parse_toml(text, "f.toml")
    except SpecError as e:
        assert e.field == "f.toml"
