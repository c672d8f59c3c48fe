"""Fitting a software stack to logged runs (calibration.stackfit, `fugakuperf fit-stack`)."""

import csv
from importlib import resources

import pytest

from calibration.against import COLUMNS
from calibration.stackfit import _predict, _runs, fit_stack
from fpcore.errors import SpecError
from perfmodel.system import load_system

RUNS = resources.files("perfmodel.data") / "validation"
OLD = "deepspeedfugaku-2023"


def test_the_shipped_fit_reproduces_the_preset_values():
    result = fit_stack(str(RUNS / "runs_fugaku_fit.csv"), OLD)
    preset = load_system("fugaku", stack=OLD).stack
    assert result["converged"] and len(result["rows"]) == 19
    for name, value in result["params"].items():
        assert value == pytest.approx(getattr(preset, name), rel=0.01), name
    assert result["mean_abs_error"] < 0.15
    assert "[fugaku.stacks.deepspeedfugaku-2023]" in result["toml"]


def _row(**values) -> dict:
    row = dict(system="fugaku", model="gpt small", layers=4, hidden=512, heads=8, vocab=8192,
               seq=512, ranks=1, tp=1, pp=1, dp=1, global_batch=16, micro_batch=1,
               interleave=1, recompute="none", sequence_parallel="no", zero=0,
               precision="fp32", clock_ghz="2.0", measured="1.0", unit="sec_per_iter",
               flops_convention="", source="synthetic", stack=OLD)
    row.update(values)
    return {k: str(v) for k, v in row.items()}


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(COLUMNS) + ["stack"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_a_fit_recovers_the_values_that_made_the_runs(tmp_path):
    truth = load_system("fugaku", stack=OLD).stack.replace(kernel_bytes_per_cycle=9.0,
                                                           collective_efficiency=0.4)
    shapes = [dict(), dict(micro_batch=4), dict(hidden=1024, heads=16),
              dict(ranks=8, dp=8), dict(ranks=4, tp=4), dict(clock_ghz="2.2", ranks=16, dp=16)]
    path = _write(tmp_path / "shapes.csv", [_row(**s) for s in shapes])
    made = [_row(**shape, measured=repr(_predict(run, truth)))
            for shape, run in zip(shapes, _runs(path, OLD))]
    path = _write(tmp_path / "made.csv", made)
    result = fit_stack(path, OLD, params=("kernel_bytes_per_cycle", "collective_efficiency"))
    assert result["params"]["kernel_bytes_per_cycle"] == pytest.approx(9.0, rel=1e-3)
    assert result["params"]["collective_efficiency"] == pytest.approx(0.4, rel=1e-3)
    assert result["max_abs_error"] < 1e-3 and result["at_bound"] == []


def test_a_value_the_runs_do_not_ask_for_is_reported_on_its_bound():
    # with MPI's reduction arithmetic modelled, the early stack's runs need no
    # collective factor: fitted, it goes to 1, its upper bound
    result = fit_stack(str(RUNS / "runs_fugaku_fit.csv"), OLD,
                       params=("kernel_bytes_per_cycle", "collective_efficiency"))
    assert result["at_bound"] == ["collective_efficiency"]
    assert result["params"]["collective_efficiency"] == pytest.approx(1.0)


@pytest.mark.parametrize("changes,field", [
    (dict(micro_batch=""), "micro_batch"),
    (dict(stack="fugaku-llm"), "stack"),
])
def test_runs_a_fit_cannot_use_are_refused_by_name(tmp_path, changes, field):
    path = _write(tmp_path / "runs.csv", [_row(), _row(micro_batch=2), _row(**changes)])
    with pytest.raises(SpecError) as err:
        fit_stack(path, OLD)
    assert err.value.field == field and "row 4" in str(err.value)


def test_bad_parameters_and_too_few_runs_are_refused(tmp_path):
    path = _write(tmp_path / "runs.csv", [_row(), _row(micro_batch=2)])
    with pytest.raises(SpecError, match="fittable"):
        fit_stack(path, OLD, params=("clock",))
    with pytest.raises(SpecError, match="cannot fit 2"):
        fit_stack(path, OLD, params=("kernel_bytes_per_cycle", "collective_efficiency"))


def test_the_124m_runs_alone_give_the_same_value(tmp_path):
    # the 1.3B runs are then predicted from 124M runs only: the fit does not lean on them
    rows = [r for r in csv.DictReader((RUNS / "runs_fugaku_fit.csv").open())
            if r["model"] == "gpt 124M"]
    path = _write(tmp_path / "124m.csv", rows)
    value = fit_stack(path, OLD)["params"]["kernel_bytes_per_cycle"]
    preset = load_system("fugaku", stack=OLD).stack.kernel_bytes_per_cycle
    assert len(rows) == 16 and value == pytest.approx(preset, rel=0.03)


def test_a_value_that_prices_nothing_the_runs_do_is_refused(tmp_path):
    """The early stack's runs use no fused attention: its efficiency changes none of
    their predictions, so a fit of it would only print its starting value."""
    path = _write(tmp_path / "runs.csv", [_row(), _row(micro_batch=2), _row(micro_batch=4)])
    with pytest.raises(SpecError, match="attention_efficiency changes no prediction of the 3 "
                                        "runs"):
        fit_stack(path, OLD, params=("attention_efficiency",))
