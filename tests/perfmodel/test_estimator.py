"""The analytic estimator: pipeline arithmetic, breakdown bookkeeping, monotonicity."""

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from perfmodel.compute import ComputeModel
from perfmodel.estimator import estimate, pipeline_ends
from perfmodel.layout import Layout
from perfmodel.model import ModelSpec
from perfmodel.ops import layer_ops
from perfmodel.presets import load_model
from perfmodel.system import load_system
from topologies import CollectiveCost

FUGAKU = load_system()
FUGAKU_LLM = load_model("fugaku-llm-13b")
# Small enough that embedding and head are a sliver of a stage's work.
SMALL = ModelSpec(layers=16, hidden=2048, heads=16, vocab=64, seq=1024, dropout=False)


class FreeNetwork:
    """Communication that costs nothing: isolates compute and the schedule."""

    name = "free"

    def collective(self, op, dim, job, nbytes):
        return CollectiveCost(0.0, "free", nbytes)

    def p2p(self, dim, job, nbytes):
        return CollectiveCost(0.0, "free", nbytes)


def faster_network(system, factor):
    net = dataclasses.replace(system.network,
                              link_bandwidth=system.network.link_bandwidth * factor,
                              injection_bandwidth=system.network.injection_bandwidth * factor)
    return dataclasses.replace(system, network=net)


# ------------------------------------------------------------ pipeline arithmetic
@pytest.mark.parametrize("p,m", [(2, 1), (4, 4), (8, 7), (8, 32)])
def test_equal_stages_give_the_textbook_bubble(p, m):
    """(m + p - 1) w: bubble fraction (p - 1) / (m + p - 1) (Narayanan et al. 2021)."""
    w = 3.0
    end = pipeline_ends([w], [1.0], [p], m)[0]
    assert end == pytest.approx((m + p - 1) * w, rel=1e-12)
    assert 1 - m * w / end == pytest.approx((p - 1) / (m + p - 1), rel=1e-12)


@pytest.mark.parametrize("p,m,v", [(4, 8, 2), (8, 16, 4), (8, 8, 5)])
def test_interleaving_divides_the_bubble_by_v(p, m, v):
    w = 2.0
    end = pipeline_ends([w], [1.0], [p], m, fill=[w / v])[0]
    assert end == pytest.approx(m * w + (p - 1) * w / v, rel=1e-12)
    assert 1 - m * w / end == pytest.approx((p - 1) / (v * m + p - 1), rel=1e-12)


def test_later_stages_finish_their_backward_earlier():
    ends = pipeline_ends([5.0, 5.0, 5.0], [3.0, 3.0, 3.0], [1, 2, 1], m=4)
    assert ends[0] == pytest.approx(4 * 5 + 3 * 5)
    assert ends[1] == pytest.approx(ends[0] - 3.0)       # one stage ahead of it
    assert ends[2] == pytest.approx(ends[0] - 3 * 3.0)   # three stages ahead


def test_a_slow_stage_sets_the_pace():
    ends = pipeline_ends([4.0, 6.0, 4.0], [2.0, 3.0, 2.0], [1, 1, 1], m=10)
    assert ends[0] == pytest.approx(10 * 6.0 + 8.0)


# --------------------------------------------------------------- whole estimates
@pytest.mark.parametrize("schedule,v", [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)])
def test_free_network_bubble_matches_the_closed_form(schedule, v):
    p, m = 4, 8
    lay = Layout(tp=1, pp=p, dp=1, micro_batch=1, global_batch=m, schedule=schedule,
                 virtual_stages=v)
    est = estimate(SMALL, FUGAKU, lay, FreeNetwork())
    fraction = est.breakdown.bubble / est.iteration_s
    # embedding and head make the end stages a little heavier than the rest
    assert fraction == pytest.approx((p - 1) / (v * m + p - 1), rel=0.02)


def test_without_a_pipeline_there_is_no_bubble():
    """No pipeline, no network cost, one replica: an iteration is m micro-batches of
    the one stage's forward + backward, then the optimizer step (Adam moving 32 bytes
    per fp32 parameter), so the bubble is 0 and each part is its own arithmetic."""
    m = 3
    lay = Layout(tp=1, pp=1, dp=1, micro_batch=2, global_batch=2 * m)
    est = estimate(SMALL, FUGAKU, lay, FreeNetwork())
    (stage,) = est.stages
    optimizer = ComputeModel.for_system(FUGAKU, "fp32").optimizer_time(32 * SMALL.params)
    assert est.iteration_s == pytest.approx(m * (stage.forward + stage.backward) + optimizer,
                                            rel=1e-12)
    parts = est.breakdown
    assert parts.bubble == 0.0
    assert parts.compute == pytest.approx(m * stage.compute, rel=1e-12)
    assert parts.compute == pytest.approx(m * (stage.forward + stage.backward), rel=1e-12)
    assert parts.optimizer == pytest.approx(optimizer, rel=1e-12)
    assert (parts.recompute, parts.tp_comm, parts.pp_comm, parts.dp_comm) == (0, 0, 0, 0)


def test_a_layer_stage_is_its_ops():
    """A middle stage's compute is its layers' forward and backward ops, priced one by
    one (no embedding or head on it, no recompute, TP collectives free)."""
    p = 4
    lay = Layout(tp=1, pp=p, dp=1, micro_batch=1, global_batch=8)
    stage = estimate(SMALL, FUGAKU, lay, FreeNetwork()).stages[1]
    compute = ComputeModel.for_system(FUGAKU, "fp32")
    ops = layer_ops(SMALL, 1, 1, False, "fp32")
    layers = SMALL.layers // p
    assert stage.forward == pytest.approx(layers * compute.ops_time(ops.forward), rel=1e-12)
    assert stage.backward == pytest.approx(layers * compute.ops_time(ops.backward), rel=1e-12)


@pytest.mark.parametrize("schedule,v", [("1f1b", 1), ("gpipe", 1), ("interleaved", 2)])
def test_pipeline_bubble_is_the_wait_for_the_other_stages(schedule, v):
    """Narayanan et al. 2021: with p equal stages, each taking f + b per micro-batch,
    the first stage (which finishes last, so the breakdown is taken on it) waits
    (p - 1)(f + b) / v in all, the forward of the first micro-batch going down the
    other stages and its backward coming back. Here the end stages also carry the
    embedding and the head, so exactly: the pipeline takes m w_max + (sum w - w_max) / v
    (every micro-batch at the slowest stage's pace, plus one pass through the others),
    of which the first stage works m w_0; the rest is its bubble."""
    p, m = 4, 8
    lay = Layout(tp=1, pp=p, dp=1, micro_batch=1, global_batch=m, schedule=schedule,
                 virtual_stages=v)
    est = estimate(SMALL, FUGAKU, lay, FreeNetwork())
    w = [s.forward + s.backward for s in est.stages]     # p2p transfers are free here
    assert len(w) == p and all(s.p2p == 0 for s in est.stages)
    parts = est.breakdown
    assert parts.compute == pytest.approx(m * est.stages[0].compute, rel=1e-12)  # stage 0
    expected = m * (max(w) - w[0]) + (sum(w) - max(w)) / v
    assert parts.bubble == pytest.approx(expected, rel=1e-9)
    # ... which is the textbook (p - 1)(f + b) / v of a layer-only stage, but for the
    # embedding and head on the end stages (small for this model's vocabulary of 64)
    assert parts.bubble == pytest.approx((p - 1) * w[1] / v, rel=5e-3)
    assert parts.bubble > (p - 1) * w[1] / v


def test_no_part_of_the_breakdown_is_negative():
    for lay in [Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full",
                       recompute_stages=4),
                Layout(tp=4, pp=2, dp=96, global_batch=2016, zero=3),
                Layout(tp=2, pp=4, dp=8, micro_batch=2, global_batch=256, schedule="interleaved",
                       virtual_stages=5, zero=1, sequence_parallel=True)]:
        est = estimate(FUGAKU_LLM, FUGAKU, lay)
        assert min(est.breakdown.to_dict().values()) >= 0.0


def test_throughput_and_mfu_follow_from_the_iteration_time():
    lay = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)
    est = estimate(FUGAKU_LLM, FUGAKU, lay)
    assert est.nodes == 13824
    assert est.tokens_per_s == pytest.approx(2016 * 2048 / est.iteration_s)
    per_node = 72 * 2016 * 2048 * 40 * 5184**2 * (1 + 2048 / (6 * 5184) + 49152 / (12 * 5184 * 40))
    assert est.model_flops_per_s_per_node == pytest.approx(per_node / est.iteration_s / 13824)
    assert est.mfu == pytest.approx(est.model_flops_per_s_per_node / 6.7584e12)
    assert est.time_to_train_s(380e9) == pytest.approx(380e9 / est.tokens_per_s)
    assert est.energy_mwh(380e9) == pytest.approx(est.node_hours(380e9) * 188 / 1e6)


def test_no_energy_is_claimed_without_a_power_figure():
    """The GPU presets source no power per node (power_w 0): energy is unknown, not 0."""
    selene = load_system("selene")
    lay = Layout(tp=8, pp=1, dp=4, global_batch=64, precision="bf16")
    model = load_model("megatron-1.7b")
    assert estimate(model, selene, lay).energy_mwh(1e9) is None


def test_recomputation_only_adds_time():
    base = Layout(tp=6, pp=8, dp=288, global_batch=2016)
    times = [estimate(FUGAKU_LLM, FUGAKU, base.replace(**kw)).iteration_s for kw in
             ({}, {"recompute": "selective"}, {"recompute": "full", "recompute_stages": 4},
              {"recompute": "full"})]
    assert times == sorted(times) and times[0] < times[-1]


def test_overlapping_the_gradient_reduction_of_one_stage_never_hurts():
    """Bucketed per layer it hides the transfers (not the arithmetic on Fugaku's cores);
    as Fugaku's stacks run it, one flat buffer after the backward, it hides nothing."""
    lay = Layout(tp=1, pp=1, dp=64, micro_batch=1, global_batch=64)
    model = load_model("gpt3-1.3b")
    bucketed = dataclasses.replace(FUGAKU, stack=FUGAKU.stack.replace(reduce_bucket_mb="layer"))
    for system in (bucketed, FUGAKU):
        on, off = (estimate(model, system, lay.replace(overlap_dp=o)).iteration_s
                   for o in (True, False))
        assert on < off if system is bucketed else on == off


layouts = st.builds(
    lambda tp, pp, dp, mb, k, zero, rc, sp: Layout(
        tp=tp, pp=pp, dp=dp, micro_batch=mb, global_batch=dp * mb * k, zero=zero,
        recompute=rc, sequence_parallel=sp and tp > 1),
    tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 8, 96]),
    mb=st.sampled_from([1, 2]), k=st.integers(1, 16), zero=st.integers(0, 3),
    rc=st.sampled_from(["none", "selective", "full"]), sp=st.booleans())


@settings(max_examples=60, deadline=None)
@given(layouts, st.sampled_from([1.5, 2.0, 10.0]))
def test_more_bandwidth_never_makes_an_iteration_slower(layout, factor):
    model = load_model("gpt3-2.7b")
    slow = estimate(model, FUGAKU, layout).iteration_s
    fast = estimate(model, faster_network(FUGAKU, factor), layout).iteration_s
    assert fast <= slow * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(layouts)
def test_ranks_per_node_only_regroup_ranks(layout):
    """Four ranks per node: a quarter of the nodes, each rank a quarter of a node."""
    model = load_model("gpt3-2.7b")
    four = FUGAKU.with_options(ppn=4)
    if layout.ranks % 4:
        return
    est = estimate(model, four, layout)
    assert est.nodes == layout.ranks // 4
    assert est.memory_bytes_per_node == pytest.approx(4 * est.peak_memory.total)
    assert est.memory_fits == (est.peak_memory.total <= four.node.usable_memory_bytes / 4)


def test_eco_mode_and_lower_clock_slow_compute_down():
    lay = Layout(tp=6, pp=8, dp=288, global_batch=2016)
    base = estimate(FUGAKU_LLM, FUGAKU, lay).breakdown.compute
    assert estimate(FUGAKU_LLM, FUGAKU.with_options(clock_ghz=2.0), lay).breakdown.compute \
        == pytest.approx(base * 2.2 / 2.0, rel=0.02)
    assert estimate(FUGAKU_LLM, FUGAKU.with_options(eco=True), lay).breakdown.compute \
        > 1.5 * base
