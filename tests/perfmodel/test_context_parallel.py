"""Context parallelism (Megatron-Core's ring attention): each sequence split over cp
ranks that hold the same weights. What the ranks compute and hold adds up to the
whole layer's; the ring shows only where the attention cannot hide it; gradients
are reduced over the dp x cp ranks."""

import pytest
from click.testing import CliRunner

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel.des import simulate
from perfmodel.estimator import _ring_times, estimate, network_for, stage_comm
from perfmodel.compute import ComputeModel
from perfmodel.layout import Layout, validate_layout
from perfmodel.memory import activation_bytes_per_layer
from perfmodel.ops import gemm_flops, layer_ops, total_flops
from perfmodel.presets import load_model
from perfmodel.system import load_system

LLAMA = load_model("llama2-7b").replace(seq=16384)
SELENE = load_system("selene")
ANALYTIC = load_system("selene", network_model="analytic")


@pytest.mark.parametrize("attention", ["materialized", "flash"])
@pytest.mark.parametrize("cp", [2, 4, 8])
def test_the_ranks_compute_the_whole_layer_between_them(attention, cp):
    """Every op runs on s / cp tokens, and the attention core on s / cp queries against
    all s keys (a 1 / cp share of the causal blocks): cp ranks' FLOPs are one layer's."""
    whole = layer_ops(LLAMA, 2, 1, True, "bf16", attention)
    part = layer_ops(LLAMA, 2, 1, True, "bf16", attention, cp=cp)
    assert cp * gemm_flops(part.forward) == pytest.approx(gemm_flops(whole.forward), rel=1e-12)
    assert cp * total_flops(part.forward) == pytest.approx(total_flops(whole.forward),
                                                           rel=1e-12)


@pytest.mark.parametrize("attention", ["materialized", "flash"])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_the_ranks_hold_the_whole_layers_activations_between_them(attention, recompute):
    args = (LLAMA, 2, 1, True, recompute, "bf16", attention)
    assert 4 * activation_bytes_per_layer(*args, cp=4) == pytest.approx(
        activation_bytes_per_layer(*args), rel=1e-12)


def test_the_ranks_and_the_replicas():
    layout = Layout(tp=2, cp=4, pp=2, dp=3, global_batch=6)
    assert layout.ranks == 48 and layout.replicas == 12 and layout.micro_batches == 2
    assert layout.job(8).dp == 12
    assert "CP4" in layout.label()


def test_the_sequence_must_split_into_two_chunks_per_rank():
    validate_layout(Layout(cp=4, dp=1, global_batch=1), LLAMA)
    odd = LLAMA.replace(seq=4100)
    with pytest.raises(SpecError, match=r"cp: 2 x cp must divide seq \(4100\)"):
        validate_layout(Layout(cp=4, global_batch=1), odd)


def test_gradients_are_reduced_over_dp_times_cp():
    """cp 2 x dp 4 and cp 1 x dp 8 place the same 8 replicas and reduce the same
    gradients over them."""
    compute = ComputeModel.for_system(SELENE, "bf16")
    network = network_for(SELENE)
    a = Layout(tp=8, cp=2, dp=4, global_batch=8, precision="bf16")
    b = Layout(tp=8, cp=1, dp=8, global_batch=8, precision="bf16")
    ca, cb = (stage_comm(LLAMA, SELENE, x, network, compute, x.job(8), 0) for x in (a, b))
    assert ca.reduce == pytest.approx(cb.reduce, rel=1e-12)


def test_the_ring_shows_only_where_the_attention_does_not_hide_it():
    compute = ComputeModel.for_system(SELENE, "bf16")
    network = network_for(SELENE)
    job = Layout(tp=8, cp=8, dp=1, global_batch=1).job(8)
    short = LLAMA.replace(seq=2048)
    exposed = [_ring_times(m, compute, network, job, 8, 8, 1, True, "bf16", "flash")
               for m in (short, LLAMA)]
    # short sequences: little attention to hide the keys and values behind
    assert exposed[0][0] > 0
    assert exposed[1][0] < exposed[0][0] * LLAMA.seq / short.seq
    assert _ring_times(LLAMA, compute, network, job, 8, 1, 1, True, "bf16", "flash") == \
        (0.0, 0.0)


@pytest.mark.parametrize("layout", [
    Layout(tp=2, cp=4, pp=2, dp=1, global_batch=8, precision="bf16", attention="flash",
           recompute="selective", sequence_parallel=True),
    Layout(tp=8, cp=8, dp=1, global_batch=2, precision="bf16", attention="flash",
           recompute="full", sequence_parallel=True),
], ids=lambda l: l.label())
def test_simulator_agrees_with_the_estimate(layout):
    model = LLAMA.replace(seq=2048)
    est = estimate(model, ANALYTIC, layout)
    sim = simulate(model, ANALYTIC, layout)
    assert sim.iteration_s == pytest.approx(est.iteration_s, rel=0.02)
    assert sim.breakdown["cp_comm"] == pytest.approx(est.breakdown.cp_comm, rel=1e-6)


def test_a_pinned_cp_runs_the_search_and_shows_in_the_table():
    result = CliRunner().invoke(main, ["plan", "--model", "llama2-7b", "--seq", "16384",
                                       "--system", "selene", "--nodes", "8", "--cp", "4",
                                       "--precision", "bf16", "--global-batch", "64",
                                       "--top", "2"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("1 ")]
    assert rows and " cp4 " in rows[0]
    bad = CliRunner().invoke(main, ["plan", "--model", "llama2-7b", "--seq", "4100",
                                    "--cp", "4"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: cp: 2 x cp must divide seq (4100)")


def test_the_search_tries_context_parallelism_for_long_sequences_only():
    """From 8,192 tokens on the search tries cp = 1, 2, 4, ... (Megatron-Core's MoE
    README: "use CP when sequence length >= 8K"); a 32K-token Llama 2 7B on 64 A100s
    is best split over context-parallel ranks, a 4K one is never split."""
    from perfmodel.search import _cp_options, search
    long = LLAMA.replace(seq=32768)
    assert _cp_options(long, {}) == [1, 2, 4, 8, 16, 32]
    assert _cp_options(LLAMA.replace(seq=4096), {}) == [1]
    assert _cp_options(long, {"cp": 2}) == [2]
    best, _ = search(long, ANALYTIC, 64, nodes=[8], pins={"precision": "bf16"}, top=3)
    assert best and best[0].layout.cp > 1
    assert all(e.layout.ranks == 64 for e in best)
    short, _ = search(LLAMA.replace(seq=4096), ANALYTIC, 64, nodes=[8],
                      pins={"precision": "bf16"}, top=3)
    assert all(e.layout.cp == 1 for e in short)
