"""The discrete-event simulator (perfmodel.des): narratives and properties.

Narratives (SimPy style): tiny pipelines with synthetic per-stage costs whose
timelines are worked out by hand below; the Trace the simulator records is the log,
and the tests assert its exact spans. Properties: the textbook bubble with uniform
costs, an independent list-scheduling reference for arbitrary per-stage costs,
agreement with the analytic estimator where nothing overlaps or contends, memory
equal to perfmodel.memory, more bandwidth never slower, determinism, noise, the
trace file, ZeRO gathers and DP overlap.
"""

import dataclasses
import json

import pytest
from hypothesis import given, settings, strategies as st

from perfmodel.des import Noise, StageWork, Trace, simulate, simulate_runs
from fpcore.errors import SpecError
from perfmodel.estimator import StageComm, _exposed_reduce, estimate
from perfmodel.layout import Layout
from perfmodel.memory import stage_memory
from perfmodel.presets import load_model
from perfmodel.schedules import producer, schedule
from perfmodel.system import load_system

ANALYTIC = load_system(network_model="analytic")
# memory accounting only, when costs are synthetic: 840 layers, which every pipeline
# depth of these tests (1-8) divides evenly
TINY = dataclasses.replace(load_model("gpt3-125m"), layers=840)
REAL = load_model("megatron-1.7b")      # 24 layers, tied embeddings: real costs


# ----------------------------------------------------------------------- helpers
def work(f, b, *, p2p=0.0, layers=1, fwd_tp=0.0, bwd_tp=0.0, recompute=0.0):
    return StageWork(layers=layers, fwd_compute=f, fwd_tp=fwd_tp, bwd_compute=b,
                     bwd_tp=bwd_tp, recompute=recompute, p2p=p2p)


def comm(**kw):
    """Free communication and a free optimizer unless told otherwise."""
    base = dict(reduce=0.0, gather_after=0.0, reduce_per_micro_batch=0.0, ag_forward=0.0,
                ag_backward=0.0, buckets=1, gathers=1, prefetch=1, reduce_cpu=0.0,
                reduce_cpu_per_micro_batch=0.0, tied_sync=0.0, optimizer=0.0)
    return StageComm(**{**base, **kw})


def uniform(f, b, **kw):
    """The same synthetic costs on every stage; ``kw`` splits into StageWork/StageComm."""
    wk = {k: kw.pop(k) for k in ("p2p", "layers", "fwd_tp", "bwd_tp", "recompute") if k in kw}
    w, c = work(f, b, **wk), comm(**kw)
    return lambda i: (w, c)


def per_stage(fs, bs, p2p=0.0, comms=None):
    comms = comms or [comm()] * len(fs)
    return lambda i: (work(fs[i], bs[i], p2p=p2p), comms[i])


def run(p, m, costs, schedule="1f1b", v=1, **kw):
    """Simulate a pipeline of p stages and m micro-batches (tp = dp = mbs = 1)."""
    opts = {k: kw.pop(k) for k in ("trace", "noise") if k in kw}
    layout = Layout(pp=p, global_batch=m, schedule=schedule, virtual_stages=v, **kw)
    return simulate(TINY, ANALYTIC, layout, costs=costs, validate=False, **opts)


def spans(trace, part="compute"):
    """{track: [(name, start_s, end_s), ...]} of the trace's X events, in start order.

    ``part`` selects the layer pieces ("compute", "tp_comm"); None keeps the
    events without a part (sends, optimizer steps, stream work)."""
    names = {tid: name for name, tid in trace.tracks.items()}
    out = {}
    for e in trace.events:
        if e["ph"] != "X" or e["args"].get("part") != part:
            continue
        out.setdefault(names[e["tid"]], []).append(
            (e["name"], e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6))
    return {k: sorted(v, key=lambda s: (s[1], s[2])) for k, v in out.items()}


def faster(system, factor):
    net = dataclasses.replace(system.network,
                              link_bandwidth=system.network.link_bandwidth * factor,
                              injection_bandwidth=system.network.injection_bandwidth * factor)
    return dataclasses.replace(system, network=net)


# ====================================================================== narratives
def test_1f1b_p2_m2_exact_timeline():
    """f = 1, b = 2, free communication.

    Stage 0 (warm-up 1): F0 F1 B0 B1; stage 1 (warm-up 0): F0 B0 F1 B1.
      t=0  stage 0 runs F0 [0,1], then F1 [1,2] (no dependency).
      t=1  F0 reaches stage 1: F0 [1,2], then B0 [2,4] (last stage: own F0).
      t=4  stage 1 runs F1 [4,5] (it arrived at 2) and B1 [5,7];
           stage 0 gets B0's gradient: B0 [4,6], then waits for B1 until 7: [7,9].
    Iteration (m + p - 1)(f + b) = 9; stage 1 is done at 7."""
    trace = Trace()
    res = run(2, 2, uniform(1.0, 2.0), trace=trace)
    assert spans(trace) == {
        "stage 0": [("F0", 0, 1), ("F1", 1, 2), ("B0", 4, 6), ("B1", 7, 9)],
        "stage 1": [("F0", 1, 2), ("B0", 2, 4), ("F1", 4, 5), ("B1", 5, 7)],
    }
    steps = spans(trace, None)
    assert steps["stage 0"] == [("optimizer", 9, 9)]
    assert steps["stage 1"] == [("optimizer", 7, 7)]
    assert res.iteration_s == 9.0
    assert [s.end_s for s in res.stages] == [9.0, 7.0]
    assert [s.busy_s["compute"] for s in res.stages] == [6.0, 6.0]
    assert res.critical_stage == 0
    assert res.breakdown["compute"] == 6.0 and res.breakdown["bubble"] == 3.0


def test_gpipe_p2_m2_exact_timeline():
    """GPipe, f = 1, b = 2: stage 1 runs both forwards [1,2] [2,3], then B0 [3,5], B1 [5,7];
    stage 0's backwards wait for them: B0 [5,7], B1 [7,9]."""
    trace = Trace()
    res = run(2, 2, uniform(1.0, 2.0), schedule="gpipe", trace=trace)
    assert spans(trace) == {
        "stage 0": [("F0", 0, 1), ("F1", 1, 2), ("B0", 5, 7), ("B1", 7, 9)],
        "stage 1": [("F0", 1, 2), ("F1", 2, 3), ("B0", 3, 5), ("B1", 5, 7)],
    }
    assert res.iteration_s == 9.0


def test_interleaved_p2_m2_v2_exact_timeline():
    """Interleaved, v = 2, per-chunk f = 1, b = 2. Virtual stages 0 1 2 3 live on
    stages 0 1 0 1. Stage 0: F0 F1 F0.1 F1.1 B0.1 B1.1 B0 B1 (warm-up 4 = all
    forwards); stage 1: F0 F1 F0.1 B0.1 F1.1 B1.1 B0 B1 (warm-up 2).
      stage 0: F0 [0,1] F1 [1,2]; F0.1 needs stage 1's F0 (done 2): [2,3]; F1.1 [3,4]
      stage 1: F0 [1,2] F1 [2,3]; F0.1 needs stage 0's F0.1 (3): [3,4]; B0.1 [4,6];
               F1.1 (ready at 4) [6,7]; B1.1 [7,9]
      stage 0: B0.1 needs stage 1's B0.1 (6): [6,8]; B1.1 needs B1.1 (9): [9,11]
      stage 1: B0 needs stage 0's B0.1 (8), but runs after B1.1: [9,11]; B1 needs (11): [11,13]
      stage 0: B0 needs stage 1's B0 (11): [11,13]; B1 (13): [13,15]
    Iteration (v m + p - 1)(f + b) = 15."""
    trace = Trace()
    res = run(2, 2, uniform(1.0, 2.0), schedule="interleaved", v=2, trace=trace)
    assert spans(trace) == {
        "stage 0": [("F0", 0, 1), ("F1", 1, 2), ("F0.1", 2, 3), ("F1.1", 3, 4),
                    ("B0.1", 6, 8), ("B1.1", 9, 11), ("B0", 11, 13), ("B1", 13, 15)],
        "stage 1": [("F0", 1, 2), ("F1", 2, 3), ("F0.1", 3, 4), ("B0.1", 4, 6),
                    ("F1.1", 6, 7), ("B1.1", 7, 9), ("B0", 9, 11), ("B1", 11, 13)],
    }
    assert res.iteration_s == 15.0


def test_p2p_sends_are_spans_and_delay_the_consumer():
    """1F1B p = 2, m = 2, f = 1, b = 2, p2p = 0.5 (a blocking send: the sender is busy).
      stage 0: F0 [0,1] send [1,1.5]; F1 [1.5,2.5] send [2.5,3]
      stage 1: F0 [1.5,2.5] (arrived 1.5); B0 [2.5,4.5] send [4.5,5];
               F1 (arrived 3) [5,6]; B1 [6,8] send [8,8.5]
      stage 0: B0 (arrived 5) [5,7]; B1 (arrived 8.5) [8.5,10.5] - the first stage sends no
               gradient, the last no activation."""
    trace = Trace()
    res = run(2, 2, uniform(1.0, 2.0, p2p=0.5), trace=trace)
    assert spans(trace) == {
        "stage 0": [("F0", 0, 1), ("F1", 1.5, 2.5), ("B0", 5, 7), ("B1", 8.5, 10.5)],
        "stage 1": [("F0", 1.5, 2.5), ("B0", 2.5, 4.5), ("F1", 5, 6), ("B1", 6, 8)],
    }
    other = spans(trace, None)
    assert other["stage 0 p2p"] == [("send F0", 1, 1.5), ("send F1", 2.5, 3)]
    assert other["stage 1 p2p"] == [("send B0", 4.5, 5), ("send B1", 8, 8.5)]
    assert res.iteration_s == 10.5
    assert [s.busy_s["pp_comm"] for s in res.stages] == [1.0, 1.0]
    assert res.breakdown["pp_comm"] == 1.0 and res.breakdown["bubble"] == 3.5


def test_layers_tp_collectives_and_recompute_are_split_per_layer():
    """One stage, one micro-batch, 2 layers: each layer computes, then runs its TP
    collective (blocking). Forward 1 + TP 0.5, backward 2 + TP 1, of which 1.5 is
    recomputation (half of the backward: the breakdown splits compute and TP alike)."""
    trace = Trace()
    res = run(1, 1, uniform(1.0, 2.0, layers=2, fwd_tp=0.5, bwd_tp=1.0, recompute=1.5),
              trace=trace)
    assert spans(trace) == {"stage 0": [("F0", 0, 0.5), ("F0", 0.75, 1.25),
                                        ("B0", 1.5, 2.5), ("B0", 3, 4)]}
    assert spans(trace, "tp_comm") == {"stage 0": [("F0", 0.5, 0.75), ("F0", 1.25, 1.5),
                                                   ("B0", 2.5, 3), ("B0", 4, 4.5)]}
    assert res.iteration_s == 4.5
    b = res.breakdown
    assert (b["compute"], b["tp_comm"], b["recompute"], b["bubble"]) == (2.0, 1.0, 1.5, 0.0)


@pytest.mark.parametrize("sched,fs,bs,expected", [
    # 1F1B, heavy first stage (w = 5, 3): stage 1 F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7];
    # stage 0 F0 [0,1] F1 [1,2] B0 [4,8] B1 [8,12]. The analytic m max(w) + sum(w) - max(w)
    # gives 13: the heavy first stage's backward never waits for the second's.
    ("1f1b", (1.0, 1.0), (4.0, 2.0), 12.0),
    # forward heavy on stage 0, backward on stage 1 (w = 3, 5):
    # 1F1B: stage 0 F0 [0,2] F1 [2,4]; stage 1 F0 [2,3] B0 [3,7] F1 [7,8] B1 [8,12];
    #       stage 0 B0 [7,8] B1 [12,13] -> 13 (= the analytic 2 * 5 + 3)
    ("1f1b", (2.0, 1.0), (1.0, 4.0), 13.0),
    # GPipe: stage 1 F0 [2,3] F1 [4,5] B0 [5,9] B1 [9,13]; stage 0 B0 [9,10] B1 [13,14] -> 14
    # (the analytic gives 13: the forward fill is paced by stage 0, the drain by stage 1)
    ("gpipe", (2.0, 1.0), (1.0, 4.0), 14.0),
])
def test_unequal_stages_exact_makespan(sched, fs, bs, expected):
    """Why the analytic formula is only an approximation with unequal stages."""
    assert run(2, 2, per_stage(fs, bs), schedule=sched).iteration_s == expected


# ---------------------------------------------------- an independent reference
def reference(steps, p, v, fw, bw, p2p):
    """List scheduling, written independently of SimPy: a step starts when its stage is
    free and its producer's output has arrived; a send keeps the sender busy.
    Returns (end time of each stage, {(stage, step): (start, end)})."""
    free, arrived, when, pos = [0.0] * p, {}, {}, [0] * p
    while any(pos[i] < len(steps[i]) for i in range(p)):
        for i in range(p):
            while pos[i] < len(steps[i]):
                step = steps[i][pos[i]]
                dep = producer(step, i, p, v)
                if dep is not None and dep not in arrived:
                    break
                start = max(free[i], arrived[dep]) if dep is not None else free[i]
                end = start + (fw[i] if step.kind == "F" else bw[i])
                when[(i, step)] = (start, end)
                virtual = step.chunk * p + i
                sends = (virtual < p * v - 1) if step.kind == "F" else (virtual > 0)
                free[i] = arrived[(i, step)] = end + (p2p if sends else 0.0)
                pos[i] += 1
    return free, when


@st.composite
def uneven_pipelines(draw):
    p = draw(st.integers(1, 5))
    m = draw(st.integers(1, 8))
    options = [("1f1b", 1), ("gpipe", 1)]
    if p > 1 and m % p == 0:
        options += [("interleaved", 2), ("interleaved", 3)]
    sched, v = draw(st.sampled_from(options))
    quarter = st.integers(1, 12).map(lambda k: k / 4)     # exact binary fractions
    fw = draw(st.lists(quarter, min_size=p, max_size=p))
    bw = draw(st.lists(quarter, min_size=p, max_size=p))
    p2p = draw(st.sampled_from([0.0, 0.25, 1.0]))
    return sched, p, m, v, fw, bw, p2p


@settings(max_examples=60, deadline=None)
@given(uneven_pipelines())
def test_des_equals_list_scheduling_reference(case):
    sched, p, m, v, fw, bw, p2p = case
    trace = Trace()
    res = run(p, m, per_stage(fw, bw, p2p=p2p), schedule=sched, v=v, trace=trace)
    ends, when = reference(schedule(sched, p, m, v), p, v, fw, bw, p2p)
    assert res.iteration_s == pytest.approx(max(ends), rel=1e-12)
    assert [s.end_s for s in res.stages] == pytest.approx(ends, rel=1e-12)
    got = spans(trace)
    for i in range(p):
        ref = sorted(((str(step), *when[(j, step)]) for j, step in when if j == i),
                     key=lambda s: (s[1], s[2]))
        assert [n for n, _, _ in got[f"stage {i}"]] == [n for n, _, _ in ref]
        flat = [t for _, start, end in got[f"stage {i}"] for t in (start, end)]
        assert flat == pytest.approx([t for _, start, end in ref for t in (start, end)],
                                     rel=1e-12, abs=1e-12)


# ========================================================= bubble and iteration time
PM = [(1, 1), (1, 4), (2, 1), (2, 2), (3, 5), (4, 2), (4, 6), (4, 8), (6, 12), (8, 3)]


@pytest.mark.parametrize("sched", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", PM)
def test_uniform_costs_give_the_textbook_pipeline(sched, p, m):
    """T = (m + p - 1)(f + b); the critical stage idles (p - 1)(f + b), a bubble
    fraction of (p - 1) / (m + p - 1) (Narayanan et al. 2021). Exact: sums of 1s and 2s."""
    f, b = 1.0, 2.0
    res = run(p, m, uniform(f, b), schedule=sched)
    assert res.iteration_s == pytest.approx((m + p - 1) * (f + b), rel=1e-9)
    assert res.breakdown["bubble"] / res.iteration_s == pytest.approx(
        (p - 1) / (m + p - 1), rel=1e-9, abs=1e-12)
    assert res.breakdown["compute"] == pytest.approx(m * (f + b), rel=1e-9)


@pytest.mark.parametrize("p,m,v", [(2, 2, 2), (2, 4, 3), (3, 6, 3), (4, 4, 2), (4, 8, 2),
                                   (4, 8, 3)])
def test_uniform_costs_give_the_interleaved_bubble(p, m, v):
    """Per-chunk f, b equal on every stage: T = (v m + p - 1)(f + b), bubble fraction
    (p - 1) / (v m + p - 1) (Narayanan et al. 2021, Sec. 2.2)."""
    f, b = 1.0, 2.0
    res = run(p, m, uniform(f, b), schedule="interleaved", v=v)
    assert res.iteration_s == pytest.approx((v * m + p - 1) * (f + b), rel=1e-9)
    assert res.breakdown["bubble"] / res.iteration_s == pytest.approx(
        (p - 1) / (v * m + p - 1), rel=1e-9)


@pytest.mark.parametrize("sched", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(2, 2), (4, 6), (4, 8)])
def test_reported_bubble_fraction_is_the_textbook_one(sched, p, m):
    res = run(p, m, uniform(1.0, 2.0), schedule=sched)
    assert res.bubble_fraction == pytest.approx((p - 1) / (m + p - 1), rel=1e-9)


# ============================================================= DES vs the estimator
def real_layout(**kw):
    return Layout(**{"micro_batch": 1, **kw})


# No pipeline: a chain of passes plus a reduction after them; the two must agree exactly.
NO_PIPELINE = [real_layout(tp=t, dp=8, global_batch=64, overlap_dp=False) for t in (1, 2, 4)]
# Near-uniform stages (24 equal layers; embedding and head are slivers of megatron-1.7b);
# nothing overlaps (overlap_dp=False or dp=1) and the analytic network has no contention.
NEAR_UNIFORM = [
    real_layout(tp=2, pp=2, global_batch=16),
    real_layout(tp=2, pp=4, global_batch=32),
    real_layout(tp=2, pp=4, global_batch=32, schedule="gpipe"),
    real_layout(tp=2, pp=4, global_batch=32, schedule="interleaved", virtual_stages=2),
    real_layout(tp=2, pp=2, global_batch=8, schedule="interleaved", virtual_stages=3),
    real_layout(tp=2, pp=8, global_batch=64),
    real_layout(tp=4, pp=4, global_batch=8),
    real_layout(tp=2, pp=4, global_batch=32, recompute="full"),
    real_layout(tp=2, pp=4, global_batch=32, recompute="selective", sequence_parallel=True),
    real_layout(tp=2, pp=4, dp=4, global_batch=128, overlap_dp=False),
    real_layout(tp=2, pp=4, dp=4, global_batch=128, zero=1, overlap_dp=False),
    real_layout(tp=2, pp=4, global_batch=32, schedule="zb-h1"),
    real_layout(tp=2, pp=4, global_batch=32, schedule="zb-h2"),
    real_layout(tp=2, pp=4, global_batch=32, schedule="zb-h1", recompute="full"),
    real_layout(tp=2, pp=4, dp=4, global_batch=128, schedule="zb-h1", overlap_dp=False),
]


@pytest.mark.parametrize("layout", NO_PIPELINE, ids=lambda l: l.label())
def test_des_equals_estimate_without_a_pipeline(layout):
    des = simulate(REAL, ANALYTIC, layout).iteration_s
    assert des == pytest.approx(estimate(REAL, ANALYTIC, layout).iteration_s, rel=1e-9)


@pytest.mark.parametrize("layout", NO_PIPELINE + NEAR_UNIFORM, ids=lambda l: l.label())
def test_no_stage_is_ever_idle_for_negative_time(layout):
    """A stage that never waits is idle 0 s, not a rounding error below zero (once shown
    as 'bubble -0.0%' and 'idle -4.26e-14')."""
    sim = simulate(REAL, ANALYTIC, layout)
    assert all(s.idle_s >= 0 for s in sim.stages) and sim.bubble_fraction >= 0
    assert sim.breakdown["bubble"] >= 0
    if layout.pp == 1:
        assert sim.stages[0].idle_s == 0.0 and sim.bubble_fraction == 0.0


@pytest.mark.parametrize("layout", NEAR_UNIFORM, ids=lambda l: l.label())
def test_des_within_two_percent_of_estimate_for_near_uniform_stages(layout):
    des = simulate(REAL, ANALYTIC, layout).iteration_s
    ana = estimate(REAL, ANALYTIC, layout).iteration_s
    assert des == pytest.approx(ana, rel=0.02)


# ========================================================================= memory
SCHEDULES = [dict(schedule="1f1b"), dict(schedule="gpipe"),
             dict(schedule="interleaved", virtual_stages=2), dict(schedule="zb-h1"),
             dict(schedule="zb-h2")]
RECOMPUTES = [dict(), dict(recompute="selective"), dict(recompute="full"),
              dict(recompute="full", recompute_stages=2)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda d: d["schedule"])
@pytest.mark.parametrize("rc", RECOMPUTES, ids=lambda d: str(d or "none"))
@pytest.mark.parametrize("m", [8, 2], ids=["m8", "m2"])
def test_peak_memory_equals_the_memory_model(sched, rc, m):
    """Activations held from each forward to its backward, plus one layer rebuilt in full
    during a full-recompute backward: the peak per stage is perfmodel.memory's total.
    m = 2 < p = 4 caps 1F1B's in-flight micro-batches at m (interleaved needs m
    divisible by p, so it runs m = 4 there; the zero-bubble ones need at least p and
    2p - 1, so they run m = 8). A zero-bubble schedule frees a micro-batch's
    activations after its W, not its B."""
    if sched["schedule"] == "interleaved" and m % 4:
        m = 4
    if sched["schedule"].startswith("zb"):
        m = 8
    gb = 2 * m          # dp = 2
    layout = Layout(tp=2, pp=4, dp=2, global_batch=gb, **sched, **rc)
    res = simulate(REAL, ANALYTIC, layout)
    for i, stage in enumerate(res.stages):
        assert stage.peak_memory_bytes == pytest.approx(
            stage_memory(REAL, layout, i).total, rel=1e-9)
    assert res.peak_memory_bytes == max(s.peak_memory_bytes for s in res.stages)


def test_peak_memory_with_zero3_fp16_and_sequence_parallel():
    layout = Layout(tp=4, pp=4, dp=2, global_batch=8, schedule="interleaved",
                    virtual_stages=3, zero=3, precision="fp16", sequence_parallel=True,
                    recompute="full", recompute_stages=1)
    res = simulate(REAL, ANALYTIC, layout)
    for i, stage in enumerate(res.stages):
        assert stage.peak_memory_bytes == pytest.approx(
            stage_memory(REAL, layout, i).total, rel=1e-9)


# ============================================================= more bandwidth helps
BANDWIDTH_LAYOUTS = [
    Layout(tp=2, pp=2, dp=4, global_batch=32),
    Layout(tp=4, pp=1, dp=8, global_batch=64, overlap_dp=False),
    Layout(tp=2, pp=2, dp=2, global_batch=16, schedule="interleaved", virtual_stages=3),
    Layout(tp=1, pp=4, dp=4, global_batch=16, schedule="gpipe", zero=1),
    Layout(tp=2, pp=2, dp=8, global_batch=32, zero=2, recompute="full"),
    Layout(tp=4, pp=2, dp=4, global_batch=16, zero=3, sequence_parallel=True),
    Layout(tp=2, pp=6, dp=2, global_batch=24, recompute="full", recompute_stages=3),
]


@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from(BANDWIDTH_LAYOUTS), factor=st.sampled_from([1.5, 2.0, 8.0]),
       model=st.sampled_from(["gpt3-125m", "megatron-1.7b"]))
def test_more_bandwidth_never_slower_analytic_network(layout, factor, model):
    spec = load_model(model)
    slow = simulate(spec, ANALYTIC, layout).iteration_s
    fast = simulate(spec, faster(ANALYTIC, factor), layout).iteration_s
    assert fast <= slow * (1 + 1e-12)


@pytest.mark.parametrize("layout", [Layout(tp=2, pp=2, dp=2, global_batch=8),
                                    Layout(tp=4, pp=2, dp=4, global_batch=16, zero=1)],
                         ids=lambda l: l.label())
def test_more_bandwidth_never_slower_flow_network(layout):
    flow = load_system(network_model="flow")
    slow = simulate(REAL, flow, layout).iteration_s
    fast = simulate(REAL, faster(flow, 2.0), layout).iteration_s
    assert fast < slow


# ================================================================ determinism, noise
DET_LAYOUT = Layout(tp=2, pp=4, dp=2, global_batch=32)


def test_same_inputs_same_json():
    a = simulate(REAL, ANALYTIC, DET_LAYOUT).to_dict()
    b = simulate(REAL, ANALYTIC, DET_LAYOUT).to_dict()
    assert a == b
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["tokens_per_s"] == DET_LAYOUT.global_batch * REAL.seq / a["iteration_s"]


def test_inactive_noise_is_no_noise():
    quiet = simulate(REAL, ANALYTIC, DET_LAYOUT).to_dict()
    assert simulate(REAL, ANALYTIC, DET_LAYOUT, noise=Noise(seed=9)).to_dict() == quiet
    assert not Noise(straggler_fraction=0.5).active          # slowdown 1: nobody is slow


def test_jitter_is_seeded():
    quiet = simulate(REAL, ANALYTIC, DET_LAYOUT)
    a = simulate(REAL, ANALYTIC, DET_LAYOUT, noise=Noise(jitter=0.1, seed=3)).to_dict()
    b = simulate(REAL, ANALYTIC, DET_LAYOUT, noise=Noise(jitter=0.1, seed=3)).to_dict()
    c = simulate(REAL, ANALYTIC, DET_LAYOUT, noise=Noise(jitter=0.1, seed=4)).to_dict()
    assert a == b
    assert c["iteration_s"] != a["iteration_s"]
    assert a["iteration_s"] != quiet.iteration_s
    assert a["events"] == quiet.events                     # same work, different durations


def test_simulate_runs_summarises_seeds():
    runs = simulate_runs(REAL, ANALYTIC, DET_LAYOUT, Noise(jitter=0.1, seed=3), runs=8)
    assert runs["runs"] == 8
    assert runs["min_s"] <= runs["mean_s"] <= runs["p99_s"] <= runs["max_s"]
    assert runs["min_s"] < runs["max_s"]
    # run r uses seed 3 + r: the first run is the single seeded simulation
    first = simulate(REAL, ANALYTIC, DET_LAYOUT, noise=Noise(jitter=0.1, seed=3)).iteration_s
    assert runs["min_s"] <= first <= runs["max_s"]


def test_simulate_runs_gives_every_seeds_time_and_traces_the_first():
    noise = Noise(jitter=0.1, seed=3)
    times = sorted(simulate(REAL, ANALYTIC, DET_LAYOUT,
                            noise=Noise(jitter=0.1, seed=3 + r)).iteration_s for r in range(5))
    trace = Trace()
    runs = simulate_runs(REAL, ANALYTIC, DET_LAYOUT, noise, runs=5, trace=trace)
    assert runs["seeds"] == [3, 7]
    assert runs["mean_s"] == pytest.approx(sum(times) / 5)
    assert runs["p99_s"] == times[-1]         # nearest rank: below 100 runs, the slowest
    assert (runs["min_s"], runs["max_s"]) == (times[0], times[-1])
    first = Trace()
    simulate(REAL, ANALYTIC, DET_LAYOUT, noise=noise, trace=first)
    assert trace.events == first.events       # the trace is the first run's (seed 3)
    one = simulate_runs(REAL, ANALYTIC, DET_LAYOUT, noise, runs=1)
    assert one["mean_s"] == one["p99_s"] == simulate(
        REAL, ANALYTIC, DET_LAYOUT, noise=noise).iteration_s
    with pytest.raises(SpecError):
        simulate_runs(REAL, ANALYTIC, DET_LAYOUT, noise, runs=0)


def test_stragglers_everywhere_double_the_compute():
    """Every stage slow by 2x, compute-only synthetic costs: every span and the whole
    iteration exactly double (1F1B p=2 m=4: (4 + 1) * 3 = 15 -> 30)."""
    slow_noise = Noise(straggler_fraction=1.0, straggler_slowdown=2.0)
    t1, t2 = Trace(), Trace()
    base = run(2, 4, uniform(1.0, 2.0), trace=t1)
    slow = run(2, 4, uniform(1.0, 2.0), trace=t2, noise=slow_noise)
    assert (base.iteration_s, slow.iteration_s) == (15.0, 30.0)
    doubled = {k: [(n, 2 * s, 2 * e) for n, s, e in v] for k, v in spans(t1).items()}
    assert spans(t2) == doubled
    # with real costs the communication is not slowed: a bit under 2x
    real = simulate(REAL, ANALYTIC, DET_LAYOUT).iteration_s
    real_slow = simulate(REAL, ANALYTIC, DET_LAYOUT, noise=slow_noise).iteration_s
    assert 1.8 * real < real_slow < 2.0 * real


# ========================================================================== trace
def test_trace_write_is_chrome_trace_json(tmp_path):
    """One process per pipeline stage, a thread per stream, slices named by what they
    do, in microseconds."""
    trace = Trace()
    run(2, 2, uniform(1.0, 2.0, p2p=0.5), trace=trace)
    path = tmp_path / "t.json"
    trace.write(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]     # no temp left
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "process_name"}
    assert processes == {1: "pipeline stage 0", 2: "pipeline stage 1"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(threads.values()) == {"compute", "TP collectives", "PP sends", "DP stream"}
    spans_x = [e for e in events if e["ph"] == "X"]
    assert spans_x and all((e["pid"], e["tid"]) in threads for e in spans_x)
    # microseconds: stage 0's B1 runs [8.5 s, 10.5 s]
    b1 = [e for e in spans_x if e["pid"] == 1 and e["name"] == "backward B1"]
    assert [(e["ts"], e["dur"]) for e in b1] == [(8.5e6, 2e6)]
    sends = {e["name"] for e in spans_x if threads[(e["pid"], e["tid"])] == "PP sends"}
    assert sends == {"send F0 to stage 1", "send F1 to stage 1", "send B0 to stage 0",
                     "send B1 to stage 0"}


def test_trace_write_is_atomic(tmp_path):
    """A failed write leaves the old file intact and no temporary file behind."""
    path = tmp_path / "t.json"
    path.write_text('{"old": true}')
    trace = Trace()
    trace.span("stage 0", "bad", 0.0, 1.0, stage=0, kind="optimizer",
               payload=object())                                   # not JSON-serialisable
    with pytest.raises(TypeError):
        trace.write(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
    assert json.loads(path.read_text()) == {"old": True}


# ========================================================================= events
def test_events_grow_with_micro_batches():
    counts = [run(4, m, uniform(1.0, 2.0, p2p=0.1)).events for m in (1, 2, 4, 8)]
    assert counts[0] > 0
    assert counts == sorted(set(counts))        # strictly increasing


# ==================================================================== data parallel
def test_zero3_every_layer_waits_for_its_gather():
    """One stage, m = 2, 2 layers (2 buckets), f = 1, b = 2, ZeRO-3 gathers 4 s per pass
    (2 s per layer). Each pass queues both layers' gathers on the dp stream at its start
    (prefetch, in order) and each layer waits for its own:
      F0: gathers [0,2] [2,4]; layer 0 computes [2,2.5], layer 1 [4,4.5]
      B0: gathers [4.5,6.5] [6.5,8.5]; layers [6.5,7.5] [8.5,9.5]
      F1: gathers [9.5,11.5] [11.5,13.5]; layers [11.5,12] [13.5,14]
      B1: gathers [14,16] [16,18]; layers [16,17] [18,19]
    The stream is the bottleneck: 19 s instead of 6, 13 s of it waiting for weights."""
    trace = Trace()
    res = run(1, 2, uniform(1.0, 2.0, layers=2, buckets=2, ag_forward=4.0,
                                     ag_backward=4.0), trace=trace)
    base = run(1, 2, uniform(1.0, 2.0, layers=2, buckets=2))
    assert base.iteration_s == 6.0
    assert res.iteration_s == 19.0
    assert res.breakdown["dp_comm"] == 13.0
    assert res.breakdown["compute"] == 6.0
    gathers = spans(trace, None)["stage 0 dp stream"]
    assert gathers == [("gather", s, s + 2) for s in (0, 2, 4.5, 6.5, 9.5, 11.5, 14, 16)]
    assert spans(trace)["stage 0"] == [
        ("F0", 2, 2.5), ("F0", 4, 4.5), ("B0", 6.5, 7.5), ("B0", 8.5, 9.5),
        ("F1", 11.5, 12), ("F1", 13.5, 14), ("B1", 16, 17), ("B1", 18, 19)]
    # whatever the overlap, every gather passes through the stream: 2 passes x m x 4 s
    assert res.iteration_s >= 2 * 2 * 4.0


def test_zero3_real_layout_reports_dp_communication():
    layout = Layout(tp=2, pp=2, dp=8, global_batch=64, zero=3)
    res = simulate(REAL, ANALYTIC, layout)
    assert res.breakdown["dp_comm"] > 0
    assert res.iteration_s > simulate(REAL, ANALYTIC, layout.replace(zero=1)).iteration_s


def test_dp_reduction_overlaps_the_last_backward():
    """One stage, m = 2, 2 layers in 2 buckets, f = 1, b = 2, all-reduce 2 s.
    Overlapped: B1's layer 0 ends at 5, its bucket reduces [5,6] while layer 1 runs [5,6],
    the last bucket [6,7]: done at 7. Not overlapped: compute ends at 6, reduce [6,8]."""
    costs = uniform(1.0, 2.0, layers=2, buckets=2, reduce=2.0)
    on, off = run(1, 2, costs, overlap_dp=True), run(1, 2, costs, overlap_dp=False)
    assert (on.iteration_s, off.iteration_s) == (7.0, 8.0)
    assert (on.breakdown["dp_comm"], off.breakdown["dp_comm"]) == (1.0, 2.0)


# Fugaku with gradients bucketed per layer (its stacks reduce one flat buffer, which
# leaves nothing to overlap)
BUCKETED = dataclasses.replace(ANALYTIC, stack=ANALYTIC.stack.replace(reduce_bucket_mb="layer"))


def test_dp_overlap_helps_real_layouts_where_reductions_are_free():
    free = dataclasses.replace(BUCKETED, node=dataclasses.replace(ANALYTIC.node,
                                                                reduce_bandwidth=0.0))
    for layout in (Layout(tp=2, dp=8, global_batch=64),
                   Layout(tp=2, pp=2, dp=8, global_batch=64, zero=1)):
        on = simulate(REAL, free, layout).iteration_s
        off = simulate(REAL, free, layout.replace(overlap_dp=False)).iteration_s
        assert on < off


def test_overlap_on_a_cpu_node_still_pays_the_reduction_arithmetic():
    """As test_dp_reduction_overlaps_the_last_backward, with 1 s of the 2 s all-reduce
    arithmetic on the compute cores (0.5 s per bucket). B1's layer 0 ends at 5: its
    bucket reduces on the stream [5,6] while the stage adds [5,5.5]; layer 1 [5.5,6.5];
    the last bucket [6.5,7.5] beside the stage's [6.5,7]: done at 7.5, not 7. The
    analytic estimate resolves it the same way."""
    costs = uniform(1.0, 2.0, layers=2, buckets=2, reduce=2.0, reduce_cpu=1.0)
    on, off = run(1, 2, costs, overlap_dp=True), run(1, 2, costs, overlap_dp=False)
    assert (on.iteration_s, off.iteration_s) == (7.5, 8.0)
    assert on.breakdown["dp_comm"] == 1.5
    assert _exposed_reduce(2.0, 1.0, 2.0, 2, True) == 1.5      # after 6 s of compute


def test_reduction_arithmetic_in_a_pipeline_can_make_overlap_a_loss():
    """On Fugaku's cores the last stage's overlapped reduction lengthens its backward,
    so the gradient it sends upstream leaves later: with pp = 2 overlapping costs more
    than it hides, which an accelerator's free reductions never do."""
    layout = Layout(tp=2, pp=2, dp=8, global_batch=64, zero=1)
    on = simulate(REAL, BUCKETED, layout)
    off = simulate(REAL, BUCKETED, layout.replace(overlap_dp=False))
    assert on.iteration_s > off.iteration_s


def test_one_flat_gradient_buffer_leaves_nothing_to_overlap():
    """Fugaku's stacks all-reduce one flat buffer after the backward (Megatron-LM's
    local DDP): overlap cannot hide any of it, in the DES or the estimate."""
    layout = Layout(tp=2, dp=8, global_batch=64)
    for run_ in (simulate, estimate):
        on = run_(REAL, ANALYTIC, layout).iteration_s
        assert on == pytest.approx(run_(REAL, ANALYTIC, layout.replace(
            overlap_dp=False)).iteration_s, rel=1e-12)
        assert on > run_(REAL, BUCKETED, layout).iteration_s


def test_prefetch_zero_waits_for_every_gather():
    """test_zero3_every_layer_waits_for_its_gather without prefetch: each layer queues
    its own gather when it is reached. F0: gathers [0,2], layer [2,2.5], [2.5,4.5],
    [4.5,5]; B0: [5,7] [7,8] [8,10] [10,11]; F1 from 11 the same 5 s, B1 6 s: 22 s,
    against 19 with one layer prefetched (the stream then overlaps compute)."""
    costs = uniform(1.0, 2.0, layers=2, buckets=2, ag_forward=4.0, ag_backward=4.0)
    assert run(1, 2, costs, zero=3, prefetch=0).iteration_s == 22.0
    assert run(1, 2, costs, zero=3, prefetch=1).iteration_s == 19.0


def test_a_flat_gather_is_waited_for_whole_before_each_pass():
    """One flat buffer per pass (gather = stage): 4 s before each pass, then its two
    layers: F0 [0,4] + 1, B0 [5,9] + 2, F1 [11,15] + 1, B1 [16,20] + 2 = 22 s."""
    costs = uniform(1.0, 2.0, layers=2, buckets=2, ag_forward=4.0, ag_backward=4.0)
    assert run(1, 2, costs, zero=3, gather="stage").iteration_s == 22.0


def test_a_flat_gradient_buffer_reduces_after_the_whole_backward():
    """test_dp_reduction_overlaps_the_last_backward with one bucket (Megatron-LM's
    local DDP): nothing is left to overlap, the 2 s all-reduce follows the backward."""
    costs = uniform(1.0, 2.0, layers=2, buckets=1, reduce=2.0)
    assert run(1, 2, costs, overlap_dp=True).iteration_s == 8.0


@pytest.mark.parametrize("zero", [2, 3])
def test_no_overlap_is_slower_with_zero2_and_zero3(zero):
    layout = Layout(tp=2, pp=2, dp=8, global_batch=64, zero=zero)
    on = simulate(REAL, ANALYTIC, layout).iteration_s
    off = simulate(REAL, ANALYTIC, layout.replace(overlap_dp=False)).iteration_s
    assert off > on


def test_tied_embedding_sync_waits_for_both_ends():
    comms = [comm(tied_sync=1.0), comm(tied_sync=1.0, optimizer=3.0)]
    res = run(2, 1, per_stage((1.0, 1.0), (2.0, 2.0), comms=comms))
    assert res.stages[0].end_s == 7.0
    assert res.stages[1].end_s == 10.0
    assert res.iteration_s == 10.0


# ===================================================================== validation
def test_simulate_validates_the_layout():
    with pytest.raises(SpecError, match="pp"):
        simulate(REAL, ANALYTIC, Layout(pp=5, global_batch=5))        # 24 layers


@pytest.mark.parametrize("pins", [
    dict(tp=2, pp=4, dp=2, recompute="full", recompute_stages=2),
    dict(tp=1, pp=4, dp=4, schedule="interleaved", virtual_stages=3, recompute="selective"),
    dict(tp=2, pp=4, dp=2, schedule="zb-h1"),
    dict(tp=2, pp=2, dp=4, zero=1, overlap_dp=True),
])
def test_a_step_whose_layers_nothing_interrupts_runs_as_one_wait_with_the_same_times(pins):
    """Without a trace, a step none of whose layers waits on a gather, queues a
    gradient bucket, shares a link or draws noise runs its layers as one wait; with a
    trace every layer's segments run one by one. The iteration, its accounts and its
    events are the same either way."""
    lay = Layout(global_batch=32, micro_batch=1, **pins)
    lumped = simulate(REAL, ANALYTIC, lay)
    layered = simulate(REAL, ANALYTIC, lay, trace=Trace())
    assert lumped.iteration_s == pytest.approx(layered.iteration_s, rel=1e-12)
    assert lumped.events == layered.events
    for part, seconds in layered.breakdown.items():
        assert lumped.breakdown[part] == pytest.approx(seconds, rel=1e-9, abs=1e-12), part
