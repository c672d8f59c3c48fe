"""Co-design sweeps: the sweep file, its points, each point's system, each point's
answer against the planner's own search, and what a sweep found."""

import math

import pytest

from fpcore.errors import SpecError
from perfmodel.estimator import network_for
from perfmodel.search import search
from perfmodel.sweep import evaluate, point_system, price_factor, read_sweep
from perfmodel.sweep_summary import changes, pareto, sensitivity, summary

SMALL = """
[sweep]
system = "fugaku"
nodes = 96

[vary]
fp16_tflops = [13.5168, 27]
link_bandwidth_gbs = [6.8, 13.6, 27.2]

[[models]]
params = 1e9
tokens = 20e9
precision = ["fp32", "fp16"]

[cost]
shares = { compute = 0.4, network = 0.2 }

[constraints]
days = 30
"""


def write(tmp_path, text: str, name: str = "s.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def small(tmp_path):
    return read_sweep(write(tmp_path, SMALL))


def test_grid_points_run_the_last_knob_fastest(small):
    assert small.points == 6
    assert [small.point(i) for i in (0, 1, 3, 5)] == [
        {"fp16_tflops": 13.5168, "link_bandwidth_gbs": 6.8},
        {"fp16_tflops": 13.5168, "link_bandwidth_gbs": 13.6},
        {"fp16_tflops": 27.0, "link_bandwidth_gbs": 6.8},
        {"fp16_tflops": 27.0, "link_bandwidth_gbs": 27.2}]
    with pytest.raises(SpecError, match="point"):
        small.point(6)


def test_one_at_a_time_starts_at_the_base_and_moves_one_knob(tmp_path):
    text = SMALL.replace('nodes = 96', 'nodes = 96\ndesign = "one-at-a-time"')
    sweep = read_sweep(write(tmp_path, text))
    base = {"fp16_tflops": 13.5168, "link_bandwidth_gbs": 6.8}      # the preset's values
    assert sweep.base_values() == base
    # the base, then each value the base does not already have
    assert sweep.points == 1 + 1 + 2
    assert [sweep.point(i) for i in range(4)] == [
        base, {**base, "fp16_tflops": 27.0}, {**base, "link_bandwidth_gbs": 13.6},
        {**base, "link_bandwidth_gbs": 27.2}]


def test_ranges_are_linear_or_logarithmic(tmp_path):
    text = SMALL.replace("fp16_tflops = [13.5168, 27]",
                         'memory_gib = { from = 32, to = 128, steps = 3, scale = "log" }\n'
                         "nodes = { from = 48, to = 96, steps = 3 }")
    sweep = read_sweep(write(tmp_path, text))
    knobs = dict(sweep.knobs)
    assert knobs["memory_gib"] == (32.0, 64.0, 128.0)
    assert knobs["nodes"] == (48, 72, 96)


def test_a_point_is_the_base_system_with_its_values_and_their_sources(small):
    base = small.base_system()
    s = point_system(small, {"fp16_tflops": 27.0, "link_bandwidth_gbs": 13.6})
    assert s.node.peak_flops("fp16") == pytest.approx(27e12)
    assert s.node.peak_flops("fp32") == base.node.peak_flops("fp32")
    assert s.network.link_bandwidth == pytest.approx(13.6e9)
    assert s.network.injection_bandwidth == base.network.injection_bandwidth
    assert s.sources["network.link_bandwidth_gbs"].startswith("[sweep] link_bandwidth_gbs = 13.6")
    assert "[sweep] fp16_tflops = 27" in s.sources["node.flops_per_cycle_per_core"]


def test_memory_knobs_carry_what_follows_them(tmp_path):
    text = SMALL.replace("fp16_tflops = [13.5168, 27]",
                         "memory_gib = [64]\nmemory_bandwidth_gbs = [2048]")
    sweep = read_sweep(write(tmp_path, text))
    s = point_system(sweep, {"memory_gib": 64.0, "memory_bandwidth_gbs": 2048.0})
    base = sweep.base_system()
    assert s.node.memory_bytes == 2 * base.node.memory_bytes
    assert s.node.usable_memory_bytes == pytest.approx(2 * base.node.usable_memory_bytes)
    for name in ("memory_bandwidth", "stream_bandwidth", "stream_bandwidth_per_domain",
                 "reduce_bandwidth"):
        assert getattr(s.node, name) == pytest.approx(2 * getattr(base.node, name)), name
    assert "[A]" in s.sources["node.stream_bandwidth_gbs"]


def test_a_budget_past_the_machine_grows_the_torus_along_x(tmp_path):
    sweep = read_sweep(write(tmp_path, SMALL.replace("fp16_tflops = [13.5168, 27]",
                                                     "nodes = [96, 200000]")))
    s = point_system(sweep, {"nodes": 200000, "link_bandwidth_gbs": 6.8})
    base = sweep.base_system().network.shape
    assert s.network.shape[1:] == base[1:]
    assert s.network.nodes >= 200000 > (s.network.shape[0] - 1) * math.prod(base[1:])
    assert "[A]" in s.sources["network.shape"]
    assert point_system(sweep, {"nodes": 96, "link_bandwidth_gbs": 6.8}).network.shape == base


@pytest.mark.parametrize("change, field", [
    (("fp16_tflops = [13.5168, 27]", "memory_gb = [64]"), "vary.memory_gb"),
    (("fp16_tflops = [13.5168, 27]", "fp16_tflops = [27, 27]"), "vary.fp16_tflops"),
    (("fp16_tflops = [13.5168, 27]", "fp16_tflops = [-1]"), "vary.fp16_tflops[0]"),
    (("fp16_tflops = [13.5168, 27]", 'torus = ["24x23x24"]'), "vary.torus[0]"),
    (("fp16_tflops = [13.5168, 27]", "memory_gib = [1e9]"), "vary.memory_gib[0]"),
    (("params = 1e9", 'params = 1e9\npreset = "fugaku-llm-13b"'), "models[0]"),
    (("precision = [\"fp32\", \"fp16\"]", 'precision = "fp8"'), "models[0].precision"),
    (("tokens = 20e9", "tokens = 20e9\npins = { tp = 7 }"), "models[0].pins.tp"),
    (("tokens = 20e9", "tokens = 20e9\npins = { flavour = 1 }"), "models[0].pins.flavour"),
    (("nodes = 96", "nodes = 96\nspeed = 2"), "sweep.speed"),
    (("shares = { compute = 0.4, network = 0.2 }", "shares = { compute = 0.9, network = 0.2 }"),
     "cost.shares"),
    (("days = 30", "weeks = 4"), "constraints.weeks"),
])
def test_bad_sweep_files_name_the_field(tmp_path, change, field):
    old, new = change
    assert old in SMALL
    with pytest.raises(SpecError) as e:
        read_sweep(write(tmp_path, SMALL.replace(old, new)))
    assert field in str(e.value)
    assert "s.toml" in str(e.value)


def test_a_missing_or_malformed_file_is_one_clear_error(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_sweep(tmp_path / "none.toml")
    with pytest.raises(SpecError, match="malformed TOML"):
        read_sweep(write(tmp_path, "[sweep\n"))


def test_price_factor_follows_the_shares(small):
    assert price_factor(small, small.point(0)) == pytest.approx(1.0)
    both = {"fp16_tflops": 27.0, "link_bandwidth_gbs": 27.2}
    assert price_factor(small, both) == pytest.approx(
        1 + 0.4 * (27 / 13.5168 - 1) + 0.2 * (27.2 / 6.8 - 1))


def test_each_point_is_the_planners_own_answer(small):
    record = evaluate(small, 4)           # fp16 27 TFLOP/s, links 13.6 GB/s
    system = point_system(small, small.point(4))
    run = small.models[0]
    found = {}
    for precision in ("fp32", "fp16"):
        best, _ = search(run.model, system, run.global_batch, min_nodes=48, max_nodes=96,
                         pins={"precision": precision}, top=1)
        found[precision] = best[0]
    best = min(found.values(), key=lambda e: e.iteration_s)
    [m] = record["models"]
    assert (m["layout"], m["nodes"]) == (best.layout.label(), best.nodes)
    assert m["iteration_s"] == pytest.approx(best.iteration_s, rel=1e-5)
    days = run.tokens / best.tokens_per_s / 86400
    assert m["days"] == pytest.approx(days, rel=1e-5)
    assert m["days_low"] <= m["days"] <= m["days_high"]
    assert m["power_mw"] == pytest.approx(best.nodes * system.node.power_w / 1e6, rel=1e-5)
    factor = price_factor(small, small.point(4))
    assert m["cost"] == pytest.approx(best.node_hours(run.tokens) * factor, rel=1e-5)
    assert m["meets"] is True


def test_a_constraint_missed_is_named(tmp_path):
    sweep = read_sweep(write(tmp_path, SMALL.replace("days = 30", "days = 0.001\nmw = 0.001")))
    [m] = evaluate(sweep, 0)["models"]
    assert m["meets"] is False
    assert [x.split()[0] for x in m["misses"]] == ["days", "MW"]


def test_a_point_without_a_fitting_layout_says_why(tmp_path):
    text = SMALL.replace("params = 1e9", "params = 1e12").replace(
        "fp16_tflops = [13.5168, 27]", "memory_gib = [32]")
    [m] = evaluate(read_sweep(write(tmp_path, text)), 0)["models"]
    assert "error" in m and "memory" in m["error"]


def test_seeds_from_the_point_before_change_no_answer(small):
    seeds: dict = {}
    seeded = [evaluate(small, i, seeds) for i in range(small.points)]
    assert seeds                              # each point's answers went on to the next
    assert seeded == [evaluate(small, i) for i in range(small.points)]


def test_points_on_one_network_share_its_model(small):
    a = point_system(small, {"fp16_tflops": 13.5168, "link_bandwidth_gbs": 6.8})
    b = point_system(small, {"fp16_tflops": 27.0, "link_bandwidth_gbs": 6.8})
    c = point_system(small, {"fp16_tflops": 27.0, "link_bandwidth_gbs": 13.6})
    assert a != b
    assert network_for(a) is network_for(b)
    assert network_for(b) is not network_for(c)


# --- what a sweep found -----------------------------------------------------------------


def _row(point, x, days, **hw):
    return {"point": point, "cost": x, "power_mw": x, "ranked_days": days, "days": days,
            "hardware": hw, "price_factor": 1.0}


def test_pareto_keeps_the_points_nothing_beats_on_both():
    rows = [_row(0, 1, 5), _row(1, 2, 3), _row(2, 3, 4), _row(3, 4, 1), _row(4, 2, 3.5)]
    assert [r["point"] for r in pareto(rows, "cost")] == [0, 1, 3]


def test_sensitivity_is_the_geometric_mean_over_the_other_knobs(small):
    rows = [_row(0, 1, 10.0, fp16_tflops=13.5168, link_bandwidth_gbs=6.8),
            _row(1, 1, 8.0, fp16_tflops=13.5168, link_bandwidth_gbs=13.6),
            _row(3, 1, 5.0, fp16_tflops=27.0, link_bandwidth_gbs=6.8),
            _row(4, 1, 2.0, fp16_tflops=27.0, link_bandwidth_gbs=13.6)]
    sens = sensitivity(small, rows)
    [(v0, r0, n0), (v1, r1, n1)] = sens["fp16_tflops"]
    assert (v0, r0, n0) == (13.5168, 1.0, 2)
    assert (v1, n1) == (27.0, 2) and r1 == pytest.approx(math.sqrt(5 / 10 * 2 / 8))
    links = {v: r for v, r, _ in sens["link_bandwidth_gbs"]}
    assert links[13.6] == pytest.approx(math.sqrt(8 / 10 * 2 / 5))
    assert 27.2 not in links                  # no point has it


def test_changes_rank_days_saved_per_percent_of_machine_price(tmp_path):
    text = SMALL.replace('nodes = 96', 'nodes = 96\ndesign = "one-at-a-time"')
    sweep = read_sweep(write(tmp_path, text))
    base = sweep.base_values()
    rows = [{**_row(0, 1, 10.0, **base), "layout": "a", "nodes": 96},
            {**_row(1, 1, 8.0, **{**base, "fp16_tflops": 27.0}), "layout": "a", "nodes": 96,
             "price_factor": 1.4},
            {**_row(2, 1, 9.0, **{**base, "link_bandwidth_gbs": 13.6}), "layout": "a",
             "nodes": 96, "price_factor": 1.2}]
    out = changes(sweep, rows)
    # 2 days for +40% (0.05 a percent) against 1 day for +20% (0.05): a tie, then days
    assert [c["knob"] for c in out] == ["fp16_tflops", "link_bandwidth_gbs"]
    assert out[0]["days_per_price_pct"] == pytest.approx(2 / 40)
    assert out[1]["days_per_price_pct"] == pytest.approx(1 / 20)


def test_summary_of_a_small_sweep(small):
    records = [evaluate(small, i) for i in range(small.points)]
    s = summary(small, records)
    [m] = s["models"]
    assert m["with_layout"] == m["meeting"] == 6
    assert m["fastest"]["ranked_days"] == min(r["models"][0]["ranked_days"] for r in records)
    front = m["pareto_cost"]
    assert front and all(a["cost"] <= b["cost"] and a["ranked_days"] > b["ranked_days"]
                         for a, b in zip(front, front[1:]))
    assert {k["name"] for k in s["knobs"]} == {"fp16_tflops", "link_bandwidth_gbs"}
    # the smallest machine: node budget (96 at every point) x price factor, not the nodes
    # the job uses
    rows = [{**r["models"][0], "point": r["point"], "factor": r["price_factor"]}
            for r in records]
    smallest = min(rows, key=lambda r: (96 * r["factor"], r["ranked_days"], r["point"]))
    assert m["smallest_meeting"]["point"] == smallest["point"] == 0


def test_two_peaks_moved_together_both_hold(tmp_path):
    text = SMALL.replace("fp16_tflops = [13.5168, 27]", "fp16_tflops = [27]\nfp32_tflops = [13.5]")
    sweep = read_sweep(write(tmp_path, text))
    s = point_system(sweep, {"fp16_tflops": 27.0, "fp32_tflops": 13.5, "link_bandwidth_gbs": 6.8})
    assert s.node.peak_flops("fp16") == pytest.approx(27e12)
    assert s.node.peak_flops("fp32") == pytest.approx(13.5e12)
    source = s.sources["node.flops_per_cycle_per_core"]
    assert "fp16_tflops = 27" in source and "fp32_tflops = 13.5" in source


def test_the_node_hour_price_moves_the_cost_and_nothing_else(tmp_path):
    text = SMALL.replace("fp16_tflops = [13.5168, 27]", "price_per_node_hour = [1.0, 3.0]")
    sweep = read_sweep(write(tmp_path, text))
    cheap, dear = (evaluate(sweep, i)["models"][0] for i in (0, 3))   # links 6.8 GB/s both
    assert sweep.point(3) == {"price_per_node_hour": 3.0, "link_bandwidth_gbs": 6.8}
    assert dear["cost"] == pytest.approx(3 * cheap["cost"], rel=1e-5)
    assert (dear["layout"], dear["days"]) == (cheap["layout"], cheap["days"])
