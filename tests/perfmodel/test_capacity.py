"""Capacity analyses: the knee rule, Young/Daly reliability, sensitivity, the inverse question."""

import math

import pytest

from perfmodel.capacity import knee, largest_model, reliability, sensitivity
from fpcore.errors import SpecError
from perfmodel.plan import plan
from perfmodel.presets import load_model
from perfmodel.system import load_system

ANALYTIC = load_system(network_model="analytic")


def test_knee_is_the_last_size_before_scaling_falls_below_half():
    assert knee([(384, 1.0), (768, 1.9), (1536, 3.6), (3072, 3.0)]) == 1536
    assert knee([(384, 1.0), (768, 1.9), (1536, 3.6), (3072, 4.0)]) == 3072   # 56% of ideal
    assert knee([(384, 1.0), (768, 2.0), (1536, 4.0)]) == 1536      # scales to the end
    assert knee([(768, 2.0), (384, 1.0)]) == 768                     # order does not matter
    assert knee([]) is None


def test_reliability_follows_young_and_daly():
    node_mtbf_h, nodes, T = 1e6, 10_000, 30 * 86400.0
    r = reliability(nodes, T, 100e9, node_mtbf_h=node_mtbf_h, checkpoint_bandwidth=1e9)
    M = node_mtbf_h * 3600 / nodes
    delta = 100.0
    tau = math.sqrt(2 * delta * M) - delta
    assert r["job_mtbf_s"] == pytest.approx(M)
    assert r["checkpoint_s"] == pytest.approx(delta) and r["interval_s"] == pytest.approx(tau)
    waste = delta / (tau + delta) + (tau / 2 + delta) / M
    assert r["goodput"] == pytest.approx(1 - waste)
    assert r["time_with_failures_s"] == pytest.approx(T / (1 - waste))
    assert r["expected_interruptions"] == pytest.approx(r["time_with_failures_s"] / M)


def test_more_nodes_fail_more_often():
    small = reliability(100, 1e6, 1e9, node_mtbf_h=1e5, checkpoint_bandwidth=1e9)
    big = reliability(10_000, 1e6, 1e9, node_mtbf_h=1e5, checkpoint_bandwidth=1e9)
    assert big["goodput"] < small["goodput"]
    assert big["expected_interruptions"] > small["expected_interruptions"]


def test_without_checkpoint_bandwidth_only_interruptions_are_given():
    r = reliability(13824, 86400.0, 1e9, node_mtbf_h=9538560.0, checkpoint_bandwidth=None)
    assert r["goodput"] is None and r["interval_s"] is None
    assert r["expected_interruptions"] == pytest.approx(86400 / (9538560 * 3600 / 13824))


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
    model, result = largest_model(ANALYTIC, 384, 10.0)
    days = result.best[0].time_to_train_s(result.tokens) / 86400
    assert days <= 10.0 * 1.05                         # bisection tolerance, priced on flows
    bigger = plan(load_model_for(model.params * 1.3), ANALYTIC, max_nodes=384, top=1)
    assert bigger.best[0].time_to_train_s(bigger.tokens) / 86400 > 10.0


def load_model_for(params):
    from perfmodel.sizing import model_for_params
    return model_for_params(params)


def test_largest_model_refuses_bad_inputs():
    with pytest.raises(SpecError):
        largest_model(ANALYTIC, 384, -1.0)
    assert largest_model(ANALYTIC, 12, 1e-6) is None   # nothing trains in a tenth of a second
