"""Zero-bubble pipeline schedules (Qi et al. 2023): the backward split into B, the
input gradient, and W, the weight gradients; DeepSeek's DualPipeV, which pairs
forwards and backwards of a V of 2p stages on p devices and splits B from W at its
ends; and DeepSeek's DualPipe, two pipelines of the same stages run in opposite
directions on the same ranks.

The orders are checked against the paper's Figure 3 for p = 4, m = 8 (its first and
last stages, written 0-based here); the bubbles against its Table 2 under the
handcrafted schedules' assumption T_F = T_B = T_W, and ZB-H1's for other ratios
with T_B >= T_W; the analytic makespan against the simulator; the split of the
work against the op list.
"""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel.des import StageWork, Trace, simulate
from perfmodel.estimator import StageComm, estimate, pipeline_ends
from perfmodel.layout import Layout, validate_layout
from perfmodel.memory import stage_memory
from perfmodel.ops import gemm_flops, layer_ops
from perfmodel.presets import load_model
from perfmodel.schedules import (SCHEDULES, Step, consumed_by, held_at_peak, producer,
                                 schedule)
from perfmodel.search import check_pins, search
from perfmodel.system import load_system

from test_schedules import execute, names

ANALYTIC = load_system(network_model="analytic")
TINY = dataclasses.replace(load_model("gpt3-125m"), layers=840)
REAL = load_model("megatron-1.7b")


def costs(f, b, w):
    """Stage costs with a forward f, an input gradient b and weight gradients w."""
    work = StageWork(layers=1, fwd_compute=f, fwd_tp=0.0, bwd_compute=b + w, bwd_tp=0.0,
                     recompute=0.0, p2p=0.0, wgrad=w)
    comm = StageComm(reduce=0.0, gather_after=0.0, reduce_per_micro_batch=0.0,
                     ag_forward=0.0, ag_backward=0.0, buckets=1, gathers=1, prefetch=1,
                     reduce_cpu=0.0, reduce_cpu_per_micro_batch=0.0, tied_sync=0.0,
                     optimizer=0.0)
    return lambda i: (work, comm)


def run(sched, p, m, f, b, w, trace=None):
    layout = Layout(pp=p, global_batch=m, schedule=sched)
    return simulate(TINY, ANALYTIC, layout, costs=costs(f, b, w), validate=False,
                    trace=trace)


# ------------------------------------------------------------------------- orders
def test_zb_h1_p4_m8_is_figure_3():
    """Qi et al. 2023 Figure 3 (top), 0-based: 1F1B's warm-up, then W's that lag their
    B's by i slots on stage i, filling the tail."""
    got = [names(s) for s in schedule("zb-h1", 4, 8)]
    assert got[0] == "F0 F1 F2 F3 B0 W0 F4 B1 W1 F5 B2 W2 F6 B3 W3 F7 B4 W4 B5 W5 B6 W6 B7 W7"
    assert got[3] == "F0 B0 F1 B1 F2 B2 F3 B3 W0 F4 B4 W1 F5 B5 W2 F6 B6 W3 F7 B7 W4 W5 W6 W7"


def test_zb_h2_p4_m8_is_figure_3():
    """Figure 3 (bottom): 2p - 1 = 7 forwards before the first stage's first B."""
    got = [names(s) for s in schedule("zb-h2", 4, 8)]
    assert got[0] == "F0 F1 F2 F3 F4 F5 F6 B0 W0 F7 B1 W1 B2 W2 B3 W3 B4 W4 B5 W5 B6 W6 B7 W7"
    assert got[3] == "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 W0 F7 B7 W1 W2 W3 W4 W5 W6 W7"


@pytest.mark.parametrize("sched", ["zb-h1", "zb-h2"])
@pytest.mark.parametrize("p,m", [(2, 3), (4, 8), (4, 9), (8, 16), (6, 30)])
def test_every_pass_once_and_every_w_after_its_b(sched, p, m):
    steps = schedule(sched, p, m)
    for i, stage in enumerate(steps):
        assert len(stage) == len(set(stage)) == 3 * m
        for kind in "FBW":
            assert [s.micro_batch for s in stage if s.kind == kind] == list(range(m))
        for j in range(m):
            order = [names([s]) for s in stage]
            assert order.index(f"F{j}") < order.index(f"B{j}") < order.index(f"W{j}")
    assert len(execute(steps, p, 1)) == 3 * m * p          # never deadlocks


def test_a_w_waits_for_nothing_on_another_stage():
    step = schedule("zb-h1", 4, 8)[1][6]
    assert str(step) == "W0" and producer(step, 1, 4, 1) is None


@pytest.mark.parametrize("p", [2, 4, 8])
def test_held_micro_batches_are_the_papers(p):
    """Peak in-flight micro-batches on the first stage: p for ZB-H1 (as 1F1B) and
    2p - 1 for ZB-H2 (Qi et al. 2023 Table 2), counted as each W frees its forward's."""
    m = 4 * p
    assert held_at_peak("zb-h1", p, m, 1, 0) == held_at_peak("1f1b", p, m, 1, 0) == p
    assert held_at_peak("zb-h2", p, m, 1, 0) == 2 * p - 1


def test_closed_form_in_flight_counts_equal_the_steps():
    for name in ("gpipe", "1f1b", "interleaved"):
        spec = SCHEDULES[name]
        for p, m, v in [(2, 4, 2), (4, 8, 2), (4, 4, 3), (8, 16, 2), (4, 2, 1)]:
            if not spec.virtual:
                v = 1
            if spec.groups_of_pp and m % p:
                continue
            for i in range(p):
                assert spec.in_flight(12.0, p, m, v, i) == pytest.approx(
                    12.0 / v * held_at_peak(name, p, m, v, i))


# ------------------------------------------------------------------------ bubbles
@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 12), (8, 16), (8, 32)])
def test_equal_passes_give_table_2s_bubbles(p, m):
    """T_F = T_B = T_W = T: 1F1B (p - 1) 3T, ZB-H1 (p - 1) T, a third of it; ZB-H2 none
    inside any stage. ZB-H2's stages start (p - 1) T apart and the optimizer step waits
    for all of them (no post-validation here), so its iteration is ZB-H1's."""
    t = 1.0
    assert run("1f1b", p, m, t, t, t).iteration_s == pytest.approx(3 * m * t + (p - 1) * 3 * t)
    assert run("zb-h1", p, m, t, t, t).iteration_s == pytest.approx(3 * m * t + (p - 1) * t)
    if m >= 2 * p - 1:
        trace = Trace()
        h2 = run("zb-h2", p, m, t, t, t, trace=trace)
        for i in range(p):
            spans = [e for e in trace.events if e["args"]["stage"] == i
                     and e["args"].get("part") == "compute"]
            first = min(e["ts"] for e in spans) / 1e6
            last = max(e["ts"] + e["dur"] for e in spans) / 1e6
            assert last - first == pytest.approx(3 * m * t)      # no bubble inside
            assert first == pytest.approx(i * t)
        assert h2.iteration_s == pytest.approx(3 * m * t + (p - 1) * t)


@pytest.mark.parametrize("f,b,w", [(1.0, 1.5, 0.5), (1.0, 2.0, 0.5), (2.0, 1.0, 1.0),
                                   (1.0, 1.2, 0.8)])
@pytest.mark.parametrize("p,m", [(4, 8), (8, 16)])
def test_zb_h1_bubble_is_table_2s_while_b_outlasts_w(f, b, w, p, m):
    res = run("zb-h1", p, m, f, b, w)
    assert res.iteration_s - m * (f + b + w) == pytest.approx((p - 1) * (f + b - w))


@pytest.mark.parametrize("sched", ["1f1b", "zb-h1", "zb-h2"])
@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (1.0, 1.5, 0.5), (1.0, 2.0, 0.5),
                                   (2.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
@pytest.mark.parametrize("p,m", [(4, 8), (8, 16), (3, 20)])
def test_analytic_stage_ends_equal_the_simulation(sched, f, b, w, p, m):
    """The registry's fill and drain give every stage's end, as the simulator runs the
    order, from uniform passes of any ratio (with enough micro-batches)."""
    spec = SCHEDULES[sched]
    x = (f, b + w, w)
    ends = pipeline_ends([f + b + w] * p, [spec.drain(*x, p, m, 1)] * p, [1] * p, m,
                         fill=[spec.fill(*x, p, m, 1)] * p)
    sim = run(sched, p, m, f, b, w)
    assert [s.end_s for s in sim.stages] == pytest.approx(ends)


@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (1.0, 1.5, 0.5), (2.0, 1.0, 1.0)])
@pytest.mark.parametrize("p", [4, 8])
def test_zb_h1_with_fewer_micro_batches_than_stages(f, b, w, p):
    """With m < p only m - 1 W's fill the bubble: (p - 1)(T_F + T_B) - (m - 1) T_W
    (Fugaku-LLM ran m = 7 on p = 8)."""
    spec = SCHEDULES["zb-h1"]
    for m in range(1, p + 1):
        res = run("zb-h1", p, m, f, b, w)
        assert res.iteration_s - m * (f + b + w) == pytest.approx(
            (p - 1) * (f + b) - (m - 1) * w)
        x = (f, b + w, w)
        assert pipeline_ends([f + b + w] * p, [0.0] * p, [1] * p, m,
                             fill=[spec.fill(*x, p, m, 1)] * p)[0] == \
            pytest.approx(res.iteration_s)


def test_too_few_micro_batches_for_zb_h2_are_refused_naming_the_rule():
    model = REAL
    validate_layout(Layout(pp=4, global_batch=7, schedule="zb-h2"), model)
    with pytest.raises(SpecError, match=r"zb-h2 needs at least 7 micro-batches per pipeline "
                                        r"with pp 4; got 6 \(Qi et al. 2023's ZB-H2"):
        validate_layout(Layout(pp=4, global_batch=6, schedule="zb-h2"), model)
    with pytest.raises(SpecError, match="zb-h1 needs pp >= 2"):
        Layout(pp=1, schedule="zb-h1")


# ------------------------------------------------------------------ the real work
def test_w_runs_the_weight_gradient_gemms():
    """W is dW = X^T dY of every GEMM with a weight: one forward of the projections and
    the MLP, none of the attention core's products; B the rest of the backward."""
    ops = layer_ops(REAL, 2, 1, False, "fp32")
    weighted = {"qkv", "proj", "fc1", "fc2"}
    assert {op.name.removesuffix(".wgrad") for op in ops.weight_gradient} == weighted
    assert gemm_flops(ops.weight_gradient) == pytest.approx(
        sum(op.flops for op in ops.forward if op.name in weighted))
    # 2 x 12 h^2 per token of a GPT layer's weights, on this rank's 1/t of them
    h, s = REAL.hidden, REAL.seq
    assert gemm_flops(ops.weight_gradient) == pytest.approx(24 * s * h * h / 2)


def test_zero_bubble_shortens_a_real_pipeline():
    base = Layout(tp=2, pp=8, global_batch=16)
    times = {sched: estimate(REAL, ANALYTIC, base.replace(schedule=sched)).iteration_s
             for sched in ("1f1b", "zb-h1", "zb-h2")}
    assert times["zb-h2"] <= times["zb-h1"] < times["1f1b"]
    # Table 2's bubble is for equal stages; here the last one, with the head, is the
    # slowest, and the simulated W's fill more than the formula counts: the estimate
    # stays on the slow side, within 5% (4.7% here; 1.7% with m = 64)
    sim = simulate(REAL, ANALYTIC, base.replace(schedule="zb-h1"))
    assert times["zb-h1"] * 0.95 < sim.iteration_s <= times["zb-h1"]
    assert sim.breakdown["bubble"] < simulate(REAL, ANALYTIC, base).breakdown["bubble"]


# ====================================================================== DualPipeV
# deepseek-ai/DualPipe dualpipe/dualpipev.py's eight phases on 4 devices (a V of 8
# stages) with 10 micro-batches; ".1" the chunk on the way back up, BW a whole
# backward (its W at once), the pairs (F, BW) overlapped in DualPipe.
DUALPIPEV_4_10 = [
    "F0 F1 F2 F3 F4 F5 F6 F0.1 B0.1 W0.1 F1.1 B1.1 W1.1 F2.1 B2.1 W2.1 F3.1 F7 BW3.1 F4.1 "
    "BW0 F8 BW4.1 F5.1 BW1 F9 BW5.1 F6.1 BW2 BW6.1 F7.1 BW3 BW7.1 F8.1 BW4 BW8.1 F9.1 BW5 "
    "BW9.1 B6 W6 B7 W7 B8 W8 B9 W9",
    "F0 F1 F2 F3 F4 F0.1 F5 F1.1 B0.1 W0.1 F2.1 B1.1 W1.1 F3.1 F6 BW2.1 F4.1 BW0 F7 BW3.1 "
    "F5.1 BW1 F8 BW4.1 F6.1 BW2 F9 BW5.1 F7.1 BW3 BW6.1 F8.1 BW4 BW7.1 F9.1 BW5 BW8.1 BW6 "
    "B9.1 B7 W9.1 B8 W7 B9 W8 W9",
    "F0 F1 F2 F0.1 F3 F1.1 F4 F2.1 B0.1 W0.1 F3.1 F5 BW1.1 F4.1 BW0 F6 BW2.1 F5.1 BW1 F7 "
    "BW3.1 F6.1 BW2 F8 BW4.1 F7.1 BW3 F9 BW5.1 F8.1 BW4 BW6.1 F9.1 BW5 BW7.1 BW6 BW8.1 B7 "
    "B9.1 B8 W7 B9 W9.1 W8 W9",
    "F0 F0.1 F1 F1.1 F2 F2.1 F3 F3.1 F4 BW0.1 F4.1 BW0 F5 BW1.1 F5.1 BW1 F6 BW2.1 F6.1 BW2 "
    "F7 BW3.1 F7.1 BW3 F8 BW4.1 F8.1 BW4 F9 BW5.1 F9.1 BW5 BW6.1 BW6 BW7.1 BW7 B8.1 B8 B9.1 "
    "B9 W8.1 W8 W9.1 W9",
]


def test_dualpipev_p4_m10_is_the_reference_order():
    assert [names(s) for s in schedule("dualpipev", 4, 10, 2)] == DUALPIPEV_4_10


def run_two_chunks(sched, p, m, f, b, w, trace=None):
    layout = Layout(pp=p, global_batch=m, schedule=sched, virtual_stages=2)
    return simulate(TINY, ANALYTIC, layout, costs=costs(f, b, w), validate=False,
                    trace=trace)


def run_v(p, m, f, b, w, trace=None):
    return run_two_chunks("dualpipev", p, m, f, b, w, trace)


def assert_each_chunk_runs(steps, micro_batches):
    """On every stage each chunk runs a forward and a backward of each of its
    ``micro_batches`` in order, and a W for each split B only."""
    for stage in steps:
        for c in (0, 1):
            forwards = [s.micro_batch for s in stage if s.kind == "F" and s.chunk == c]
            backwards = [s.micro_batch for s in stage if s.kind == "B" and s.chunk == c]
            ws = [s.micro_batch for s in stage if s.kind == "W" and s.chunk == c]
            split = [s.micro_batch for s in stage if s.kind == "B" and s.chunk == c
                     and not s.whole]
            assert forwards == backwards == list(range(micro_batches))
            assert sorted(ws) == split


@pytest.mark.parametrize("p,m", [(2, 4), (2, 9), (4, 8), (4, 10), (6, 13), (8, 16)])
def test_dualpipev_runs_every_pass_once_down_and_back_up(p, m):
    assert_each_chunk_runs(schedule("dualpipev", p, m, 2), m)
    # the V: device 0 holds the first and the last of the 2p virtual stages
    assert producer(Step("F", 0, 1), p - 1, p, 2, v_shape=True) == (p - 1, Step("F", 0, 0))
    assert producer(Step("B", 0, 0), 0, p, 2, v_shape=True) == (1, Step("B", 0, 0))
    assert producer(Step("B", 0, 1), 0, p, 2, v_shape=True) is None
    res = run_v(p, m, 1.0, 1.0, 1.0)                       # (and it never deadlocks)
    assert len(res.stages) == p


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 20), (8, 16), (8, 32)])
def test_dualpipev_bubble_and_memory_are_the_papers(p, m):
    """DeepSeek-V3 report Table 2, DualPipeV row: bubble (PP/2 - 1)(F&B + B - 3W) of
    PP = 2p stages with B a whole backward and F&B = F + B (run one after the other
    here), activations PP + 1 chunks on every device whatever m. Equal F, B (input
    gradient) and W of one: (p - 1)(3 + 2 - 3) = 2 (p - 1)."""
    t = 1.0
    res = run_v(p, m, t, t, t)
    f_and_b, whole = 3 * t, 2 * t
    assert res.iteration_s - m * 2 * 3 * t == pytest.approx((p - 1) * (f_and_b + whole - 3 * t))
    assert [held_at_peak("dualpipev", p, m, 2, i) for i in range(p)] == [2 * p + 1] * p


@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.5, 0.5)])
@pytest.mark.parametrize("p,m", [(4, 8), (8, 16)])
def test_dualpipev_analytic_is_exact_or_on_the_slow_side(f, b, w, p, m):
    spec = SCHEDULES["dualpipev"]
    x = (2 * f, 2 * (b + w), 2 * w)                       # a device's two chunks
    ends = pipeline_ends([2 * (f + b + w)] * p, [spec.drain(*x, p, m, 2)] * p, [1] * p, m,
                         fill=[spec.fill(*x, p, m, 2)] * p)
    sim = run_v(p, m, f, b, w).iteration_s
    assert sim <= max(ends) + 1e-9
    assert max(ends) - sim <= (1.0 if b > w else 0.0) + 1e-9


def test_dualpipev_puts_the_head_on_the_first_device():
    layout = Layout(tp=2, pp=4, global_batch=8, schedule="dualpipev", virtual_stages=2)
    est = estimate(REAL, ANALYTIC, layout)
    assert layout.head_stage == 0
    first, last = est.stages[0], est.stages[-1]
    assert first.compute > last.compute                    # embedding and head
    one_f = Layout(tp=2, pp=4, global_batch=8)
    assert est.memory[0].weights > estimate(REAL, ANALYTIC, one_f).memory[0].weights
    sim = simulate(REAL, ANALYTIC, layout)
    # the head's stage is the slowest; the estimate stays on the slow side (it takes
    # the equal-stage fill of Table 2): 11% at m = 2p here, 3% at m = 8p
    assert est.iteration_s * 0.85 < sim.iteration_s <= est.iteration_s
    for i, stage in enumerate(sim.stages):               # PP + 1 chunks at the peak
        assert stage.peak_memory_bytes == pytest.approx(stage_memory(REAL, layout, i).total,
                                                        rel=1e-9)


def test_dualpipev_runs_two_chunks_and_twice_as_many_micro_batches_as_devices():
    with pytest.raises(SpecError, match="virtual_stages: must be 2 with the dualpipev"):
        Layout(pp=4, global_batch=8, schedule="dualpipev", virtual_stages=3)
    with pytest.raises(SpecError, match="dualpipev needs at least 8 micro-batches per "
                                        "pipeline with pp 4; got 7"):
        validate_layout(Layout(pp=4, global_batch=7, schedule="dualpipev",
                               virtual_stages=2), REAL)


# ======================================================================= DualPipe
# deepseek-ai/DualPipe dualpipe/dualpipe.py on 4 ranks with 10 micro-batches, 5 each
# way; ".1" the direction entering at the last rank. Rank 0 phase by phase (half rank
# 0 of 2, 5 chunks a direction): 2 F0; 1 x (F0, F1); 1 x (B1 zero-bubble, W, F1);
# 2 x ((F0, B1), (F1, B0)) overlapped pairs; 1 x (B1, (F1, B0)); 1 x (B1, B0 with zero
# bubble, as half_rank % 2 == 0); 1 x (W, B0 zero-bubble); 1 W. Rank 3 runs the same
# with the directions swapped (its phase 0 is the reverse direction).
DUALPIPE_4_10 = [
    "F0 F1 F2 F0.1 B0.1 W0.1 F1.1 F3 BW1.1 F2.1 BW0 F4 BW2.1 F3.1 BW1 BW3.1 F4.1 BW2 BW4.1 "
    "B3 W3 B4 W4",
    "F0 F0.1 F1 F1.1 F2 BW0.1 F2.1 BW0 F3 BW1.1 F3.1 BW1 F4 BW2.1 F4.1 BW2 BW3.1 BW3 B4.1 "
    "B4 W4.1 W4",
    "F0.1 F0 F1.1 F1 F2.1 BW0 F2 BW0.1 F3.1 BW1 F3 BW1.1 F4.1 BW2 F4 BW2.1 BW3 BW3.1 B4 "
    "B4.1 W4 W4.1",
    "F0.1 F1.1 F2.1 F0 B0 W0 F1 F3.1 BW1 F2 BW0.1 F4.1 BW2 F3 BW1.1 BW3 F4 BW2.1 BW4 B3.1 "
    "W3.1 B4.1 W4.1",
]


def test_dualpipe_p4_m10_is_the_reference_order():
    assert [names(s) for s in schedule("dualpipe", 4, 10, 2)] == DUALPIPE_4_10


def run_dual(p, m, f, b, w, trace=None):
    return run_two_chunks("dualpipe", p, m, f, b, w, trace)


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 10), (6, 12), (8, 16), (8, 22)])
def test_dualpipe_runs_half_the_micro_batches_each_way(p, m):
    assert_each_chunk_runs(schedule("dualpipe", p, m, 2), m // 2)
    # direction 0 runs up the ranks, direction 1 down; each ends in its own loss
    assert producer(Step("F", 0, 0), 0, p, 2, mirrored=True) is None
    assert producer(Step("F", 0, 0), 1, p, 2, mirrored=True) == (0, Step("F", 0, 0))
    assert producer(Step("F", 0, 1), p - 1, p, 2, mirrored=True) is None
    assert producer(Step("F", 0, 1), 0, p, 2, mirrored=True) == (1, Step("F", 0, 1))
    assert producer(Step("B", 0, 0), p - 1, p, 2, mirrored=True) is None
    assert producer(Step("B", 0, 1), 0, p, 2, mirrored=True) is None
    assert producer(Step("B", 0, 1), p - 1, p, 2, mirrored=True) == (p - 2, Step("B", 0, 1))
    assert consumed_by(Step("F", 0, 1), 0, p, 2, mirrored=True) is None
    assert consumed_by(Step("B", 0, 1), p - 1, p, 2, mirrored=True) is None
    assert consumed_by(Step("B", 0, 0), 1, p, 2, mirrored=True) == (0, Step("B", 0, 0))
    res = run_dual(p, m, 1.0, 1.0, 1.0)                   # (and it never deadlocks)
    assert len(res.stages) == p


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 20), (6, 12), (8, 16), (8, 32)])
def test_dualpipe_bubble_and_memory_are_the_papers(p, m):
    """DeepSeek-V3 report Table 2, DualPipe row: bubble (PP/2 - 1)(F&B + B - 3W) of
    PP = p ranks, with B a whole backward and F&B = F + B (run one after the other
    here), activations PP + 1 chunks (each a whole stage) on every rank whatever m.
    Equal F, B (input gradient) and W of one: (p/2 - 1)(3 + 2 - 3) = p - 2 on m
    chunk-passes of 3 each."""
    t = 1.0
    res = run_dual(p, m, t, t, t)
    f_and_b, whole = 3 * t, 2 * t
    assert res.iteration_s - m * 3 * t == pytest.approx((p / 2 - 1) * (f_and_b + whole - 3 * t))
    assert [held_at_peak("dualpipe", p, m, 2, i) for i in range(p)] == [p + 1] * p


@pytest.mark.parametrize("f,b,w", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.5, 0.5),
                                   (1.0, 0.5, 1.5)])
@pytest.mark.parametrize("p,m", [(4, 8), (6, 12), (8, 16)])
def test_dualpipe_analytic_is_exact_or_on_the_slow_side(f, b, w, p, m):
    spec = SCHEDULES["dualpipe"]
    x = (f, b + w, w)                                      # a rank's chunk: one stage
    ends = pipeline_ends([f + b + w] * p, [spec.drain(*x, p, m, 2)] * p, [1] * p, m,
                         fill=[spec.fill(*x, p, m, 2)] * p)
    sim = run_dual(p, m, f, b, w).iteration_s
    assert sim <= max(ends) + 1e-9
    assert max(ends) - sim <= (p / 2 - 1) * max(0.0, b - w) + 1e-9


def test_dualpipe_holds_two_stages_weights_on_every_rank():
    layout = Layout(tp=2, pp=4, global_batch=16, schedule="dualpipe", virtual_stages=2)
    one_f = Layout(tp=2, pp=4, global_batch=16)
    mine = [stage_memory(REAL, layout, i) for i in range(4)]
    theirs = [stage_memory(REAL, one_f, i) for i in range(4)]
    for i in range(4):          # its own stage's and its mirror's, p - 1 - i
        assert mine[i].weights == pytest.approx(theirs[i].weights + theirs[3 - i].weights)
    assert mine[0].buffers == pytest.approx(mine[3].buffers)      # a head at both ends
    est = estimate(REAL, ANALYTIC, layout)
    assert est.stages[0].compute == pytest.approx(est.stages[-1].compute)
    sim = simulate(REAL, ANALYTIC, layout)
    assert est.iteration_s * 0.9 < sim.iteration_s <= est.iteration_s
    for i, stage in enumerate(sim.stages):               # PP + 1 chunks at the peak
        assert stage.peak_memory_bytes == pytest.approx(mine[i].total, rel=1e-9)
    assert sim.breakdown["bubble"] < simulate(REAL, ANALYTIC, one_f).breakdown["bubble"]


@pytest.mark.parametrize("changes,message", [
    (dict(pp=3, global_batch=12), "pp: dualpipe runs its two directions over an even"),
    (dict(pp=4, global_batch=8, recompute="full", recompute_stages=2),
     "recompute_stages: dualpipe holds two stages on every rank"),
    (dict(pp=4, global_batch=8, partition="type:transformer"), "partition: dualpipe runs a "
                                                               "whole stage in each chunk"),
])
def test_dualpipe_layout_rules(changes, message):
    with pytest.raises(SpecError, match=message):
        Layout(schedule="dualpipe", virtual_stages=2, **changes)


def test_dualpipe_needs_an_even_number_of_micro_batches_twice_the_ranks():
    with pytest.raises(SpecError, match="dualpipe needs at least 8 micro-batches per "
                                        "pipeline with pp 4; got 6"):
        validate_layout(Layout(pp=4, global_batch=6, schedule="dualpipe",
                               virtual_stages=2), REAL)
    with pytest.raises(SpecError, match="global_batch: dualpipe splits the micro-batches "
                                        "between its two directions"):
        validate_layout(Layout(pp=4, global_batch=9, schedule="dualpipe",
                               virtual_stages=2), REAL)
    # each chunk a whole stage: pp divides the layers, no more (24 layers, 8 stages of 3)
    validate_layout(Layout(pp=8, global_batch=16, schedule="dualpipe", virtual_stages=2),
                    REAL)


@pytest.mark.parametrize("sched", ["dualpipe", "dualpipev"])
def test_a_pinned_schedule_of_fixed_chunks_takes_them_unasked(sched):
    result = CliRunner().invoke(main, ["simulate", "--model", "megatron-1.7b", "--tp", "2",
                                       "--pp", "4", "--dp", "2", "--micro-batch", "1",
                                       "--global-batch", "16", "--schedule", sched,
                                       "--network", "analytic", "--json"])
    assert result.exit_code == 0, result.output
    layout = json.loads(result.stdout)["layout"]
    assert (layout["schedule"], layout["virtual_stages"]) == (sched, 2)


def test_a_dualpipe_search_tries_even_pipelines_only():
    """The search under a pinned DualPipe skips the odd depths (it does not stop at the
    first one), and an odd pinned depth is one line naming the rule."""
    best, _ = search(REAL, ANALYTIC, 64, nodes=[12], pins={"schedule": "dualpipe"}, top=3)
    assert best and all(e.layout.pp % 2 == 0 and e.layout.schedule == "dualpipe"
                        for e in best)
    with pytest.raises(SpecError, match="pp: dualpipe runs its two directions over an even "
                                        "number of ranks .*; got 3"):
        check_pins(REAL, ANALYTIC, 64, {"schedule": "dualpipe", "pp": 3})
    # on a stack that also places layers unevenly (DeepSpeed's), the even split only
    jeanzay = load_system("jeanzay-a100", network_model="analytic")
    best, _ = search(REAL, jeanzay, 64, nodes=[4], pins={"schedule": "dualpipe"}, top=3)
    assert best and all(e.layout.partition == "even" for e in best)


def test_presets_say_what_dualpipe_needs():
    listed = CliRunner().invoke(main, ["presets"]).stdout
    line = next(x for x in listed.splitlines() if x.strip().startswith("dualpipe "))
    assert line.endswith("(pp >= 2, even; 2 chunks a stage; only when pinned)")
    data = json.loads(CliRunner().invoke(main, ["presets", "--json"]).stdout)
    assert data["schedules"]["dualpipe"]["even_pp"] is True
    assert data["schedules"]["dualpipev"]["chunks"] == 2


def test_a_pinned_dualpipe_places_whole_stages():
    """40 layers on 8 stages: 5 a stage, which DualPipeV could not halve; DualPipe's
    chunks are whole stages, so the even split places them, even on a stack that also
    places layers unevenly (DeepSpeed's)."""
    result = CliRunner().invoke(main, ["simulate", "--model", "fugaku-llm-13b", "--system",
                                       "jeanzay-a100", "--tp", "4", "--pp", "8", "--dp", "2",
                                       "--global-batch", "32", "--schedule", "dualpipe",
                                       "--precision", "bf16", "--network", "analytic",
                                       "--json"])
    assert result.exit_code == 0, result.output
    layout = json.loads(result.stdout)["layout"]
    assert (layout["schedule"], layout["partition"]) == ("dualpipe", "even")


def test_a_pinned_dualpipev_that_cannot_halve_the_stages_says_so():
    """40 layers on 8 stages are 5 a stage, which DualPipeV's two chunks cannot halve:
    the error names that rule, not the micro-batches (32 a pipeline here, enough)."""
    result = CliRunner().invoke(main, ["plan", "--model", "fugaku-llm-13b", "--tp", "6",
                                       "--pp", "8", "--dp", "72", "--global-batch", "2304",
                                       "--schedule", "dualpipev"])
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    assert line.endswith("breaks a schedule rule (dualpipev places whole layers evenly, 2 "
                         "chunks a stage: pp x 2 chunks (8 x 2) must divide the layers (40))")
    assert "micro-batches" not in line
