"""A schedule is described once, in perfmodel.schedules.SCHEDULES, and every consumer
reads that description: adding one (here GPipe under another name, in the test alone)
makes it a layout the memory model, the estimator, the simulator, the search and the
command line all take, with GPipe's figures; an unknown name is refused by each of
them, naming the known ones."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel import schedules
from perfmodel.des import simulate
from perfmodel.estimator import estimate
from perfmodel.layout import Layout, check_runnable
from perfmodel.memory import peak_memory
from perfmodel.presets import load_model
from perfmodel.system import load_system

MODEL = load_model("gpt3-125m")
SYSTEM = load_system(network_model="analytic")


@pytest.fixture
def gpipe_again(monkeypatch):
    """GPipe registered again as "gpipe-again": the registry is all that changes."""
    again = dataclasses.replace(schedules.SCHEDULES["gpipe"], name="gpipe-again",
                                searched=True)
    monkeypatch.setitem(schedules.SCHEDULES, "gpipe-again", again)
    return again


def layout(schedule: str) -> Layout:
    return Layout(tp=2, pp=4, dp=2, micro_batch=1, global_batch=16, schedule=schedule)


def test_a_registered_schedule_is_priced_as_the_one_it_copies(gpipe_again):
    mine, gpipe = layout("gpipe-again"), layout("gpipe")
    check_runnable(mine, MODEL, 16)
    assert peak_memory(MODEL, mine) == peak_memory(MODEL, gpipe)
    assert estimate(MODEL, SYSTEM, mine).iteration_s == estimate(MODEL, SYSTEM, gpipe).iteration_s
    a, b = simulate(MODEL, SYSTEM, mine), simulate(MODEL, SYSTEM, gpipe)
    assert (a.iteration_s, a.events, a.peak_memory_bytes) == \
        (b.iteration_s, b.events, b.peak_memory_bytes)


def test_the_search_and_the_command_line_take_it(gpipe_again):
    result = CliRunner().invoke(main, ["simulate", "--model", "gpt3-125m", "--nodes", "24",
                                       "--tp", "2", "--pp", "4", "--micro-batch", "1",
                                       "--global-batch", "24", "--schedule", "gpipe-again",
                                       "--network", "analytic", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layout"]["schedule"] == "gpipe-again"
    listed = CliRunner().invoke(main, ["presets"]).stdout
    assert "gpipe-again" in listed and "Huang et al. 2019" in listed
    plan = CliRunner().invoke(main, ["plan", "--model", "gpt3-125m", "--nodes", "24", "--tp", "2",
                                     "--pp", "4", "--global-batch", "24", "--network", "analytic",
                                     "--top", "50", "--json"])
    assert plan.exit_code == 0, plan.output
    found = {row["layout"]["schedule"] for row in json.loads(plan.stdout)["best"]}
    assert "gpipe-again" in found                     # searched, as its entry says


@pytest.mark.parametrize("consume", [
    lambda: Layout(pp=2, schedule="zero-bubble"),
    lambda: schedules.schedule("zero-bubble", 2, 4),
    lambda: schedules.get("zero-bubble"),
])
def test_an_unknown_schedule_is_refused_naming_the_known_ones(consume):
    with pytest.raises(SpecError) as e:
        consume()
    assert e.value.field == "schedule"
    assert e.value.message == ("must be one of gpipe, 1f1b, interleaved, zb-h1, zb-h2, "
                               "dualpipev, dualpipe; got 'zero-bubble'")


def test_an_unknown_schedule_on_the_command_line_is_one_line():
    result = CliRunner().invoke(main, ["plan", "--params", "1e9", "--schedule", "zero-bubble"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --schedule: 'zero-bubble' is not one of 'gpipe', "
                                    "'1f1b', 'interleaved', 'zb-h1', 'zb-h2', 'dualpipev'")


def test_a_schedule_with_steps_the_simulator_cannot_run_is_refused(monkeypatch):
    """A new kind of step needs its handler in the simulator (perfmodel.des.STEP_WORK):
    until then the simulator says so instead of guessing."""
    weights = dataclasses.replace(schedules.SCHEDULES["1f1b"], name="zb", kinds=("F", "B", "X"))
    monkeypatch.setitem(schedules.SCHEDULES, "zb", weights)
    with pytest.raises(SpecError, match="zb has steps of kind 'X', which the simulator does "
                                        "not run; it runs F, B, W"):
        simulate(MODEL, SYSTEM, layout("zb"))


def test_every_schedule_describes_what_each_consumer_needs():
    for name, spec in schedules.SCHEDULES.items():
        assert spec.name == name and spec.description
        assert set(spec.kinds) <= set(schedules.STEP_KINDS)
        assert spec.min_pp <= spec.framework_min_pp
        v = spec.chunks or (2 if spec.virtual else 1)
        # a stage adds to the fill and drain no more than 1F1B's whole f + b, and no less
        # than nothing, whatever its split into forward, backward and weight gradients
        for f, b, w in [(3.0, 1.0, 0.0), (1.0, 2.0, 1.0), (1.0, 2.0, 2.0)]:
            assert 0.0 <= spec.fill(f, b, w, 4, 16, v) <= f + b
        assert spec.in_flight(10.0, 4, 8, v, 0) > 0
