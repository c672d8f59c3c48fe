"""Capacity analyses: the knee rule, Young/Daly reliability, sensitivity, the inverse question."""

import math

import pytest

from perfmodel.capacity import (checkpoint_bytes_total, checkpoint_inputs, knee, largest_model,
                                marginal_efficiency, objective_time, reliability,
                                scaling_steps, sensitivity)
from fpcore.errors import SpecError
from perfmodel.plan import plan
from perfmodel.presets import load_model
from perfmodel.system import load_system

ANALYTIC = load_system(network_model="analytic")


def test_knee_is_the_size_before_the_first_step_whose_marginal_efficiency_is_below_half():
    # 1536 -> 3072: the 1536 added nodes bring 0.6 tokens/s, 0.17 of what a node did
    assert knee([(384, 1.0), (768, 1.9), (1536, 3.6), (3072, 4.2)]) == 1536
    assert knee([(3072, 4.2), (384, 1.0), (1536, 3.6), (768, 1.9)]) == 1536   # any order
    assert knee([(384, 1.0), (768, 2.0), (1536, 2.0)]) == 768       # no gain at all
    assert knee([(384, 1.0), (768, 2.0), (1536, 1.5)]) == 768       # slower when bigger


def test_a_curve_that_keeps_paying_has_no_knee():
    assert knee([(384, 1.0), (768, 2.0), (1536, 4.0)]) is None      # linear to the end
    # 13B on Fugaku, the report's default ladder: every step keeps >= 69%
    ladder = [(336, 21031), (672, 42060), (1344, 84116), (2688, 142416), (5040, 270654),
              (10080, 486666)]
    assert knee(ladder) is None
    assert knee([(384, 1.0)]) is None and knee([]) is None


def test_marginal_efficiency_is_the_added_nodes_rate_over_the_rate_before():
    # 768 -> 1536 nodes, 2.0 -> 3.0 tokens/s: each added node brings 1/768, half of 2/768
    assert marginal_efficiency(768, 2.0, 1536, 3.0) == pytest.approx(0.5)
    assert marginal_efficiency(768, 2.0, 1536, 4.0) == pytest.approx(1.0)
    assert marginal_efficiency(768, 2.0, 768, 3.0) is None          # no nodes added
    assert scaling_steps([(384, 1.0), (768, 1.9), (1536, 3.6)]) == pytest.approx(
        [None, 0.9, (1.7 / 768) / (1.9 / 768)])
    # at exactly half the step pays: the knee is below half
    assert knee([(768, 2.0), (1536, 3.0)]) is None


def _rel(**kw):
    args = dict(checkpoint_bytes_per_node=1e9, checkpoint_bytes_total=100e9,
                node_mtbf_h=1e6, checkpoint_bandwidth_per_node=10e9, fs_bandwidth=1e9,
                relaunch_s=600.0)
    args.update(kw)
    return reliability(10_000, 30 * 86400.0, **args)


def test_reliability_follows_young_and_daly_with_the_slower_of_two_bandwidths():
    node_mtbf_h, nodes, T = 1e6, 10_000, 30 * 86400.0
    r = _rel()
    M = node_mtbf_h * 3600 / nodes
    delta = 100.0                      # 100 GB over a 1 GB/s file system; a node needs 0.1 s
    tau = math.sqrt(2 * delta * M) - delta
    restart = 600.0 + delta            # relaunch, then read the checkpoint back
    assert r["job_mtbf_s"] == pytest.approx(M)
    assert r["checkpoint_node_s"] == pytest.approx(0.1)
    assert r["checkpoint_fs_s"] == pytest.approx(100.0)
    assert r["checkpoint_s"] == pytest.approx(delta) and r["checkpoint_limit"] == "file system"
    assert r["interval_s"] == pytest.approx(tau) and r["restart_s"] == pytest.approx(restart)
    waste = delta / (tau + delta) + (tau / 2 + restart) / M
    assert r["goodput"] == pytest.approx(1 - waste)
    assert r["time_with_failures_s"] == pytest.approx(T / (1 - waste))
    assert r["expected_interruptions"] == pytest.approx(r["time_with_failures_s"] / M)
    # a fast file system: the node's own write sets the time
    fast = _rel(fs_bandwidth=1e15)
    assert fast["checkpoint_s"] == pytest.approx(0.1)
    assert fast["checkpoint_limit"] == "per-node bandwidth"


def test_a_slower_file_system_or_relaunch_costs_goodput():
    base = _rel()
    assert _rel(fs_bandwidth=0.1e9)["goodput"] < base["goodput"]
    assert _rel(relaunch_s=3600.0)["goodput"] < base["goodput"]


def test_more_nodes_fail_more_often():
    args = dict(checkpoint_bytes_per_node=1e7, checkpoint_bytes_total=1e9, node_mtbf_h=1e5,
                checkpoint_bandwidth_per_node=1e9, fs_bandwidth=1e11, relaunch_s=600.0)
    small = reliability(100, 1e6, **args)
    big = reliability(10_000, 1e6, **args)
    assert big["goodput"] < small["goodput"]
    assert big["expected_interruptions"] > small["expected_interruptions"]


@pytest.mark.parametrize("key", ["fs_bandwidth", "checkpoint_bandwidth_per_node", "relaunch_s"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_reliability_refuses_bad_inputs(key, bad):
    with pytest.raises(SpecError) as e:
        _rel(**{key: bad})
    assert e.value.field == key


def test_default_checkpoint_inputs_have_numbers_and_say_they_are_assumed():
    fugaku = load_system()
    d = checkpoint_inputs(fugaku)
    assert d["checkpoint_bandwidth_per_node"] == fugaku.network.link_bandwidth
    assert d["fs_bandwidth"] == 1.4e12 and d["relaunch_s"] == 600.0
    for key in ("checkpoint_source", "fs_bandwidth_source", "relaunch_source"):
        assert d[key].startswith("[assumed]"), d[key]
    assert "6.8 GB/s" in d["checkpoint_source"]         # the link's own source is named
    given = checkpoint_inputs(fugaku, node_bandwidth=2e9, fs_bandwidth=5e11, relaunch_s=60.0)
    assert (given["checkpoint_bandwidth_per_node"], given["fs_bandwidth"],
            given["relaunch_s"]) == (2e9, 5e11, 60.0)
    assert given["fs_bandwidth_source"] == "given with --fs-bandwidth-gbs"
    assert given["relaunch_source"] == "given with --relaunch-minutes"


def test_checkpoint_total_is_every_weight_and_optimizer_state_once():
    model = load_model("gpt3-1.3b")
    layout = plan(model, ANALYTIC, max_nodes=96, top=1).best[0].layout
    assert checkpoint_bytes_total(model, layout) == model.params * (4 + 8)   # fp32 Adam
    assert checkpoint_bytes_total(model, layout.replace(precision="fp16")) == \
        model.params * (2 + 12)


def test_fugaku_mtbf_default_is_derived_from_its_source():
    node = load_system().node
    # one board (2 nodes) fails every 2.5 days among 79,488 boards
    assert node.mtbf_hours == pytest.approx(2.5 * 79_488 * 2 * 24)


def test_sensitivity_moves_in_the_physical_direction():
    model = load_model("gpt3-1.3b")
    base = plan(model, ANALYTIC, max_nodes=384, top=1)
    rows = {r["name"]: r for r in sensitivity(model, ANALYTIC, base)}
    assert rows["eco mode"]["delta"] > 0              # half the FP peak is slower
    assert rows["2 GHz"]["delta"] > 0
    assert rows["link bandwidth x2"]["delta"] <= 1e-12
    assert rows["MPI reductions x2"]["delta"] <= 1e-12
    assert rows["FP16 compute"]["delta"] < 0


def test_largest_model_fits_the_deadline_and_a_bigger_one_does_not():
    model, result = largest_model(ANALYTIC, 384, 10.0, objective="model")
    days = result.best[0].time_to_train_s(result.tokens) / 86400
    assert days <= 10.0
    bigger = plan(load_model_for(model.params * 1.3), ANALYTIC, max_nodes=384, top=1,
                  objective="model")
    assert bigger.best[0].time_to_train_s(bigger.tokens) / 86400 > 10.0
    # by the p90 of the band (the default), the model is smaller and its slow end fits
    robust, banded = largest_model(ANALYTIC, 384, 10.0)
    assert robust.params < model.params
    assert objective_time(banded)[0] <= 10.0 * 86400


def load_model_for(params):
    from perfmodel.sizing import model_for_params
    return model_for_params(params)


def test_largest_model_refuses_bad_inputs():
    with pytest.raises(SpecError):
        largest_model(ANALYTIC, 384, -1.0)
    assert largest_model(ANALYTIC, 12, 1e-6) is None   # nothing trains in a tenth of a second


def test_sensitivity_keeps_the_base_plans_nodes_pins_and_objective():
    """A report of one pinned layout on exactly 13,824 nodes: each change is planned on
    those nodes with those pins and compared by the same objective, so a slower clock
    is slower (planned over the whole budget, it could pick another node count)."""
    model = load_model("fugaku-llm-13b")
    base = plan(model, ANALYTIC, nodes=[13824], global_batch=2016, top=1,
                pins={"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4})
    rows = {r["name"]: r for r in sensitivity(model, ANALYTIC, base)}
    assert rows["2 GHz"]["delta"] > 0 and rows["eco mode"]["delta"] > rows["2 GHz"]["delta"]
    assert rows["FP16 compute"]["delta"] < 0
    for r in rows.values():
        if r["time_to_train_s"] is not None:
            assert r["layout_label"].startswith("TP6 PP8 DP288")
            assert r["objective"] == "p90"
            assert r["base_time_to_train_s"] == pytest.approx(objective_time(base)[0])


def test_eco_mode_is_a_choice_only_where_the_node_has_one():
    """A64FX runs with one FP pipe or both (RIKEN PowerControlFunction); a GPU preset
    gives no eco mode, so neither --eco nor a report's sensitivity offers one there."""
    assert load_system().node.eco_modes == (False, True)
    gpu = load_system("dgx-h100")
    assert gpu.node.eco_modes == (False,)
    with pytest.raises(SpecError, match="eco: DGX H100 .* has no eco mode"):
        gpu.with_options(eco=True)


def test_a_half_precision_plan_is_not_offered_fp16_nor_a_gpu_eco_mode():
    """The FP16 variant is the one a fp32 plan can take; a bf16 plan on GPUs has no
    FP16 row (it moved nothing, under a label of fp32 master weights) and no eco row."""
    gpu = load_system("mosaic-a100", network_model="analytic")
    model = load_model("gpt3-125m")
    base = plan(model, gpu, max_nodes=2, top=1, pins={"precision": "bf16"})
    names = [r["name"] for r in sensitivity(model, gpu, base)]
    assert "FP16 compute" not in names and "eco mode" not in names
    assert "link bandwidth x2" in names
