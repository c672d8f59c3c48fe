"""A stage's wire (perfmodel.des.Wire): transfers that overlap share the fabric, and
one left alone goes back to full speed. Narratives worked by hand, then real layouts."""

import dataclasses
from types import SimpleNamespace

import pytest
import simpy

import perfmodel.des as des
from perfmodel.des import StageWork, Trace, Wire, simulate
from perfmodel.estimator import StageComm
from perfmodel.layout import Layout
from perfmodel.presets import load_model
from perfmodel.system import load_system
from topologies.sharing import Stream

ANALYTIC = load_system(network_model="analytic")
TINY = dataclasses.replace(load_model("gpt3-125m"), layers=840)


def _finish_times(transfers, speed):
    """Run (start, kind, seconds) transfers on one wire; {kind: end}."""
    env = simpy.Environment()
    wire = Wire(SimpleNamespace(env=env, events=0), speed)
    ends = {}

    def one(start, kind, seconds):
        yield env.timeout(start)
        yield wire.transfer(kind, seconds)
        ends[kind] = env.now
    for t in transfers:
        env.process(one(*t))
    env.run()
    return ends


def test_a_transfer_alone_takes_its_own_time():
    assert _finish_times([(0.0, "tp", 2.5)], lambda kind, other: 0.5) == {"tp": 2.5}


def test_overlapping_transfers_share_until_one_ends():
    """A 10 s reduction from t=0, a 4 s send from t=2, each at half speed beside the
    other. 0-2: the reduction alone (2 s of it done). 2-10: both at 0.5, the send's
    4 s done at 10 (and 4 more of the reduction). 10-14: the reduction's last 4 s alone."""
    ends = _finish_times([(0.0, "reduce", 10.0), (2.0, "pp", 4.0)], lambda kind, other: 0.5)
    assert ends == {"pp": pytest.approx(10.0, rel=1e-12), "reduce": pytest.approx(14.0, rel=1e-12)}


def test_unequal_speeds_are_each_its_own():
    """The send at 0.25 beside the reduction, the reduction at 0.5 beside the send, both
    from 0: the send's 1 s ends at 4 (the reduction has done 2 of its 3 s); the last 1 s
    of the reduction alone: 5."""
    speed = {("pp", "reduce"): 0.25, ("reduce", "pp"): 0.5}
    ends = _finish_times([(0.0, "reduce", 3.0), (0.0, "pp", 1.0)],
                         lambda kind, other: speed[kind, other])
    assert ends == {"pp": pytest.approx(4.0, rel=1e-12), "reduce": pytest.approx(5.0, rel=1e-12)}


def test_a_tiny_transfer_late_in_the_iteration_ends():
    """1e-7 s beside a long reduction, 13 s into the iteration: the clock's rounding there
    (1e-15 s) is a hundredth of a percent of the transfer; it ends at its time anyway."""
    ends = _finish_times([(13.0, "reduce", 5.0), (13.0, "tp", 1e-7)], lambda kind, other: 0.5)
    assert ends["tp"] == pytest.approx(13.0 + 2e-7, rel=1e-12)
    assert ends["reduce"] == pytest.approx(13.0 + 5.0 + 1e-7, rel=1e-12)


def _two_stages(messages):
    """p = 2, one micro-batch; f = b = 1 s a stage, sends of 1 s, a 2 s gradient
    all-reduce overlapped with the backward (one bucket)."""
    w = StageWork(layers=1, fwd_compute=1.0, fwd_tp=0.0, bwd_compute=1.0, bwd_tp=0.0,
                  recompute=0.0, p2p=1.0)
    c = StageComm(reduce=2.0, gather_after=0.0, reduce_per_micro_batch=0.0, ag_forward=0.0,
                  ag_backward=0.0, buckets=1, gathers=1, prefetch=1, reduce_cpu=0.0,
                  reduce_cpu_per_micro_batch=0.0, tied_sync=0.0, optimizer=0.0,
                  messages=messages)
    trace = Trace()
    layout = Layout(pp=2, dp=2, global_batch=2, overlap_dp=True)
    res = simulate(TINY, ANALYTIC, layout, costs=lambda i: (w, c), validate=False, trace=trace)
    return res, trace


def _stream_and_sends(trace):
    names = {tid: name for name, tid in trace.tracks.items()}
    return sorted((names[e["tid"]], e["name"], round(e["ts"] / 1e6, 9),
                   round((e["ts"] + e["dur"]) / 1e6, 9))
                  for e in trace.events if e["ph"] == "X" and e["args"]["kind"] in ("send", "dp"))


def test_a_send_beside_the_reduction_is_slowed_and_so_is_the_reduction(monkeypatch):
    """Stage 0: F0 [0,1], send [1,2] (its stream idle). Stage 1: F0 [2,3], B0 [3,4]; at 4
    its bucket goes to the stream (2 s) as the gradient send (1 s) starts: both at half
    speed, the send ends at 6 with 1 s of the reduction done, whose last 1 s runs alone
    to 7. Stage 0: B0 [6,7], its reduction alone [7,9]. Without sharing: the send [4,5],
    stage 0's B0 [5,6], its reduction [6,8]."""
    monkeypatch.setattr(des, "speeds", lambda network, job, a, b: (0.5, 0.5))
    shared, trace = _two_stages((("reduce", Stream("allreduce", "dp", 1e9)),))
    assert shared.iteration_s == pytest.approx(9.0, rel=1e-12)
    assert shared.shared_links == {"reduce beside pp": 0.5, "pp beside reduce": 0.5}
    assert _stream_and_sends(trace) == ([
        ("stage 0 dp stream", "reduce", 7.0, 9.0), ("stage 0 p2p", "send F0", 1.0, 2.0),
        ("stage 1 dp stream", "reduce", 4.0, 7.0), ("stage 1 p2p", "send B0", 4.0, 6.0)])
    alone, _ = _two_stages(())          # no message: nothing to share
    assert alone.iteration_s == 8.0 and alone.shared_links == {}


REAL = load_model("megatron-39.1b")


def test_pipeline_sends_beside_gradient_reductions_on_a_fat_tree(monkeypatch):
    """Jean Zay's A100 nodes, TP8 PP4 DP8: a stage's pipeline sends and its DP ring step
    leave through the same NIC. The iteration is slower than with nothing shared, by
    less than slowing every transfer by the worst speed would make it."""
    system = load_system("jeanzay-a100")
    layout = Layout(tp=8, pp=4, dp=8, global_batch=512, micro_batch=1)
    shared = simulate(REAL, system, layout)
    assert shared.shared_links and min(shared.shared_links.values()) < 1
    monkeypatch.setattr(des, "speeds", lambda network, job, a, b: (1.0, 1.0))
    alone = simulate(REAL, system, layout)
    assert alone.shared_links == {}
    worst = min(shared.shared_links.values())
    # no transfer is slower than 1 / worst times its own time, so neither is the whole
    assert alone.iteration_s < shared.iteration_s < alone.iteration_s / worst


def test_fugaku_llm_streams_cross_no_common_link():
    """Tofu's placement puts TP6 on b and a, DP on the torus axes, PP on the rest: the
    reductions, the TP all-reduces and the sends of Fugaku-LLM's layout share no link,
    and six injection links leave room for both: nothing is slowed."""
    system = load_system("fugaku")
    model = load_model("fugaku-llm-13b")
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, micro_batch=1, recompute="full",
                    recompute_stages=4)
    assert simulate(model, system, layout).shared_links == {}
