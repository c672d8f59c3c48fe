"""Mixtures of experts: exact sizes against the published totals, FLOPs against the
closed form, expert parallelism in memory, communication, the estimate, the
simulator and the search."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel.des import simulate
from perfmodel.estimator import (_collective, _tp_collective, activation_message, estimate,
                                  network_for)
from perfmodel.layout import Layout, tensor_parallel_sizes, validate_layout
from perfmodel.memory import stage_memory, stage_params
from perfmodel.megatron import read_megatron
from perfmodel.model import ModelSpec
from perfmodel.ops import layer_ops, model_flops_per_token, total_flops
from perfmodel.parts import StackSpec
from perfmodel.presets import load_model
from perfmodel.search import base_layouts, check_pins, search
from perfmodel.system import load_system

MIXTRAL = load_model("mixtral-8x7b")
A100 = load_system("mosaic-a100")
ANALYTIC_A100 = load_system("mosaic-a100", network_model="analytic")


# ------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("name,total,active", [
    ("mixtral-8x7b", 46.7, 12.9),        # Mistral AI: "46.7B total ... 12.9B per token"
    ("mixtral-8x22b", 141, 39),          # "39B active parameters out of 141B"
    ("deepseek-moe-16b", 16.4, None),    # DeepSeek-MoE README: "16.4B parameters"
])
def test_parameter_counts_are_the_published_totals(name, total, active):
    m = load_model(name)
    digits = 1 if total % 1 else 0
    assert round(m.params / 1e9, digits) == total
    if active is not None:
        assert round(m.active_params / 1e9, digits) == active


def test_mixtral_by_hand():
    """32 layers of attention (4096^2 x 2 + 4096 x 1024 x 2), 8 SwiGLU experts of
    3 x 4096 x 14336, a 4096 x 8 router and two RMSNorms; untied embeddings and head."""
    h, kv, f, layers, vocab = 4096, 1024, 14336, 32, 32000
    attention = 2 * h * h + 2 * h * kv
    expert = 3 * h * f
    layer = attention + 8 * expert + 8 * h + 2 * h
    assert MIXTRAL.params == layers * layer + 2 * vocab * h + h
    assert MIXTRAL.active_params == MIXTRAL.params - layers * 6 * expert


def test_which_layers_are_moe():
    m = dataclasses.replace(MIXTRAL, layers=12, first_dense=1, moe_every=2)
    assert [i for i in range(12) if m.is_moe_layer(i)] == [1, 3, 5, 7, 9, 11]
    assert m.moe_layers == 6
    assert [m.moe_layers_in(i, 4) for i in (0, 4, 8)] == [2, 2, 2]
    assert m.moe_layers_in(1, 1) == 1 and m.moe_layers_in(2, 1) == 0
    assert m.params == 6 * m.layer_params + 6 * m.moe_layer_params + m.embedding_params


@pytest.mark.parametrize("changes,field", [
    (dict(top_k=2), "top_k"),                            # experts without a mixture
    (dict(experts=8, top_k=9), "top_k"),
    (dict(experts=8), "top_k"),                          # (top_k must be given)
    (dict(experts=8, top_k=2, capacity_factor=0.5), "capacity_factor"),
    (dict(experts=8, top_k=2, first_dense=12), "first_dense"),
    (dict(experts=-1), "experts"),
])
def test_bad_expert_fields_name_the_field(changes, field):
    base = dict(layers=12, hidden=768, heads=12, vocab=50257, seq=1024)
    with pytest.raises(SpecError) as e:
        ModelSpec(**base, **changes)
    assert e.value.field == field


# ------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-moe-16b"])
def test_flops_per_token_are_the_closed_form(name):
    """Per token and layer, forward: QKV 2h(h + 2 kv), projection 2h^2, scores and
    values 4 s h, and in an MoE layer the router 2hE and (k + shared) SwiGLU experts
    of 6 h f_e (a dense layer's MLP 6 h f); the head 2 h V; backward twice that."""
    m = load_model(name)
    h, s = m.hidden, m.seq
    attention = 2 * h * (h + 2 * m.kv_dim) + 2 * h * h + 4 * s * h
    moe = 2 * h * m.experts + (m.top_k + m.shared_experts) * 6 * h * m.expert_ffn
    dense = 6 * h * m.ffn
    forward = (m.layers * attention + m.moe_layers * moe + (m.layers - m.moe_layers) * dense
               + 2 * h * m.vocab)
    assert model_flops_per_token(m) == pytest.approx(3 * forward, rel=1e-12)


# --------------------------------------------------------------- layouts, memory
def test_expert_parallelism_must_fit_the_experts_and_dp():
    validate_layout(Layout(dp=8, ep=8, global_batch=8), MIXTRAL)
    with pytest.raises(SpecError, match="ep: must divide dp"):
        Layout(dp=4, ep=8, global_batch=8)
    with pytest.raises(SpecError, match=r"must divide the experts \(8\); got 16"):
        validate_layout(Layout(dp=16, ep=16, global_batch=16), MIXTRAL)
    with pytest.raises(SpecError, match="needs a mixture of experts"):
        validate_layout(Layout(dp=2, ep=2, global_batch=2), load_model("llama2-7b"))


def test_expert_parallelism_splits_the_experts_weights_and_their_states():
    one, eight = (Layout(dp=8, ep=ep, global_batch=8, precision="bf16") for ep in (1, 8))
    expert = 3 * 4096 * 14336
    assert stage_params(MIXTRAL, one, 0) - stage_params(MIXTRAL, eight, 0) == \
        32 * 7 * expert                                  # 7 of 8 experts elsewhere
    zero1 = [stage_memory(MIXTRAL, lay.replace(zero=1), 0) for lay in (one, eight)]
    # ZeRO-1 shards the optimizer states over dp: the experts' over dp / ep = 1 rank
    rest = stage_params(MIXTRAL, eight, 0) - 32 * expert
    assert zero1[1].optimizer == pytest.approx(12 * (rest / 8 + 32 * expert))


def test_uneven_routing_costs_compute_and_all_to_all_time():
    base = Layout(tp=1, pp=1, dp=16, ep=8, global_batch=128, precision="bf16",
                  recompute="full", sequence_parallel=False)
    even, skewed = (estimate(MIXTRAL, A100, base.replace(moe_load=x)) for x in (1.0, 1.5))
    assert skewed.breakdown.compute > even.breakdown.compute
    assert skewed.breakdown.ep_comm == pytest.approx(1.5 * even.breakdown.ep_comm, rel=0.05)
    capped = dataclasses.replace(MIXTRAL, capacity_factor=1.25)  # drops beyond 1.25x
    at_cap = estimate(capped, A100, base.replace(moe_load=1.5))
    assert even.iteration_s < at_cap.iteration_s < skewed.iteration_s


def test_no_all_to_all_without_expert_parallelism():
    est = estimate(MIXTRAL, A100, Layout(dp=16, global_batch=128, precision="bf16",
                                         recompute="full"))
    assert est.breakdown.ep_comm == 0.0


# --------------------------------------------------------- estimate and simulator
@pytest.mark.parametrize("layout", [
    Layout(tp=1, pp=4, dp=16, ep=8, global_batch=256, precision="bf16", recompute="full"),
    Layout(tp=2, pp=2, dp=8, ep=4, global_batch=64, precision="bf16", recompute="selective",
           sequence_parallel=True),
    Layout(tp=1, pp=4, dp=4, ep=2, global_batch=64, precision="bf16", recompute="full",
           schedule="zb-h1"),
], ids=lambda l: l.label())
def test_simulator_agrees_with_the_estimate(layout):
    """Nothing contends on the analytic network: the event simulation runs the same
    all-to-alls, layer by layer, and ends within 2% of the estimate, with the same
    all-to-all time on the critical stage."""
    est = estimate(MIXTRAL, ANALYTIC_A100, layout)
    sim = simulate(MIXTRAL, ANALYTIC_A100, layout)
    assert sim.iteration_s == pytest.approx(est.iteration_s, rel=0.02)
    assert sim.breakdown["ep_comm"] == pytest.approx(est.breakdown.ep_comm, rel=1e-6)
    assert est.breakdown.ep_comm > 0


def test_simulated_memory_is_the_memory_model():
    layout = Layout(tp=1, pp=4, dp=8, ep=8, global_batch=64, precision="bf16",
                    recompute="selective")
    sim = simulate(MIXTRAL, ANALYTIC_A100, layout)
    for i, stage in enumerate(sim.stages):
        assert stage.peak_memory_bytes == pytest.approx(
            stage_memory(MIXTRAL, layout, i).total, rel=1e-9)


# ----------------------------------------------------------------------- search
def test_the_search_tries_expert_parallelism():
    best, _ = search(MIXTRAL, ANALYTIC_A100, 256, nodes=[8], pins={"precision": "bf16"},
                     top=3)
    assert best and all(e.layout.dp % e.layout.ep == 0 for e in best)
    assert best[0].layout.ep > 1


def test_expert_parallelism_on_a_dense_model_is_one_line():
    result = CliRunner().invoke(main, ["plan", "--params", "1e9", "--ep", "2"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ep: needs a mixture of experts")
    assert "Traceback" not in result.output + result.stderr


def test_the_fugaku_sized_moe_runs_fugaku_llms_parameters_per_token():
    """Two experts of half Fugaku-LLM's MLP width per token: the same MLP weights but
    one more output bias, plus the router (8 h per layer)."""
    moe, dense = load_model("fugaku-llm-moe-8x"), load_model("fugaku-llm-13b")
    assert moe.active_params == dense.params + 40 * (8 + 1) * 5184
    assert model_flops_per_token(moe) == pytest.approx(
        model_flops_per_token(dense) + 3 * 40 * 2 * 5184 * 8, rel=1e-12)


# ------------------------------------- experts whole on every TP rank (DeepSpeed's)
FUGAKU_MOE = load_model("fugaku-llm-moe-8x")


def test_whole_experts_run_the_same_flops_in_gemms_tp_times_wider():
    """DeepSpeed's MoE layer without expert tensor parallelism: each of 4 TP ranks runs
    its experts whole on a quarter of their tokens."""
    split, whole = (layer_ops(MIXTRAL, 4, 1, True, "bf16", moe=True, ep=4, expert_tp=x)
                    for x in (True, False))
    s, w = ({op.name: op for op in ops.forward} for ops in (split, whole))
    assert total_flops(whole.forward) == pytest.approx(total_flops(split.forward), rel=1e-12)
    for name in ("expert_fc1", "expert_fc2"):
        assert w[name].flops == pytest.approx(s[name].flops, rel=1e-12)
        assert w[name].m == pytest.approx(s[name].m / 4)
    assert (w["expert_fc1"].n, w["expert_fc2"].k) == (2 * 14336, 14336)     # not / 4
    assert (s["expert_fc1"].n, s["expert_fc2"].k) == (2 * 14336 // 4, 14336 // 4)


def test_whole_experts_hold_tp_times_their_weights():
    split = Layout(tp=4, dp=8, ep=8, global_batch=8, precision="bf16")
    whole = split.replace(expert_tp=False)
    expert = 3 * 4096 * 14336                      # one expert per rank, of 32 layers
    assert stage_params(MIXTRAL, whole, 0) - stage_params(MIXTRAL, split, 0) == \
        pytest.approx(32 * expert * (1 - 1 / 4))
    # their states are reduced and sharded over the same dp / ep ranks as before
    zero1 = [stage_memory(MIXTRAL, lay.replace(zero=1), 0).optimizer for lay in (split, whole)]
    assert zero1[1] - zero1[0] == pytest.approx(12 * 32 * expert * (1 - 1 / 4))


def test_the_experts_tp_collectives_carry_the_top_k_copies():
    """Per MoE layer and pass: the attention's TP collective as a dense layer's, then
    the routed experts', over the top-k copies of the tokens (Megatron-Core's
    dispatcher all-gathers them over TP after the all-to-all and reduce-scatters the
    outputs before the combine; an all-reduce without sequence parallelism). Whole
    experts trade it for DeepSpeed's all-gather of the outputs, or, with sequence
    parallelism, for nothing; their all-to-alls then move each rank's 1/tp of the
    tokens."""
    base = Layout(tp=4, pp=1, dp=8, ep=8, global_batch=64, precision="bf16",
                  recompute="selective")
    job, net = base.job(A100.ranks_per_node), network_for(ANALYTIC_A100)
    act = activation_message(MIXTRAL, base)
    copies = act * MIXTRAL.top_k
    passes = base.micro_batches * 32 * 2            # forward and backward of 32 layers
    for sp in (False, True):
        lay = base.replace(sequence_parallel=sp)
        split, whole = (estimate(MIXTRAL, ANALYTIC_A100, lay.replace(expert_tp=x))
                        for x in (True, False))
        one_ep = estimate(MIXTRAL, ANALYTIC_A100, lay.replace(ep=1))  # (ep moves no TP bytes)
        attention = _tp_collective(net, job, act, sp)
        routed = _tp_collective(net, job, copies, sp)
        gather = 0.0 if sp else _collective(net, "allgather", "tp", job, copies)
        # and once per micro-batch the embedding's, the head input's gradient and the
        # vocab-parallel loss's three small all-reduces
        loss = 3 * _collective(net, "allreduce", "tp", job, MIXTRAL.seq * 4.0)
        extras = base.micro_batches * (2 * attention + loss)
        assert split.breakdown.tp_comm == pytest.approx(
            passes * (attention + routed) + extras, rel=1e-9)
        assert whole.breakdown.tp_comm == pytest.approx(
            passes * (attention + gather) + extras, rel=1e-9)
        assert one_ep.breakdown.tp_comm == pytest.approx(split.breakdown.tp_comm, rel=1e-9)
        assert whole.breakdown.compute == pytest.approx(split.breakdown.compute, rel=0.02)
        ratio = whole.breakdown.ep_comm / split.breakdown.ep_comm
        assert ratio == pytest.approx(1.0) if sp else ratio < 0.5


def test_shared_experts_add_a_dense_mlps_tp_collective():
    deepseek = load_model("deepseek-moe-16b")
    lay = Layout(tp=2, pp=1, dp=8, ep=8, global_batch=64, precision="bf16",
                 sequence_parallel=True, recompute="selective")
    without = dataclasses.replace(deepseek, shared_experts=0)
    job, net = lay.job(A100.ranks_per_node), network_for(ANALYTIC_A100)
    one = _tp_collective(net, job, activation_message(deepseek, lay), True)
    moe_layers = deepseek.moe_layers
    assert (estimate(deepseek, ANALYTIC_A100, lay).breakdown.tp_comm
            - estimate(without, ANALYTIC_A100, lay).breakdown.tp_comm) == pytest.approx(
        lay.micro_batches * moe_layers * 2 * one, rel=1e-9)


@pytest.mark.parametrize("sp", [False, True])
def test_simulator_agrees_with_the_estimate_for_whole_experts(sp):
    layout = Layout(tp=2, pp=2, dp=8, ep=4, global_batch=64, precision="bf16",
                    recompute="selective", sequence_parallel=sp, expert_tp=False)
    est = estimate(MIXTRAL, ANALYTIC_A100, layout)
    sim = simulate(MIXTRAL, ANALYTIC_A100, layout)
    assert sim.iteration_s == pytest.approx(est.iteration_s, rel=0.02)
    assert sim.breakdown["ep_comm"] == pytest.approx(est.breakdown.ep_comm, rel=1e-6)


def test_whole_experts_are_a_layout_of_a_moe_on_tp_ranks():
    assert Layout(tp=1, expert_tp=False).expert_tp          # no TP ranks: the same layout
    assert "ETP1" in Layout(tp=2, dp=2, ep=2, global_batch=2, expert_tp=False).label()
    with pytest.raises(SpecError, match="expert_tp: needs a mixture of experts"):
        validate_layout(Layout(tp=2, expert_tp=False), load_model("llama2-7b"))
    with pytest.raises(SpecError, match=r"expert_tp: must be true or false"):
        Layout(tp=2, expert_tp="no")
    # whole experts need no tp that divides their width
    odd = dataclasses.replace(MIXTRAL, expert_ffn=14334)
    with pytest.raises(SpecError, match="must divide expert_ffn"):
        validate_layout(Layout(tp=4, dp=8, ep=8, global_batch=8), odd)
    validate_layout(Layout(tp=4, dp=8, ep=8, global_batch=8, expert_tp=False), odd)


def test_the_search_tries_both_where_the_stack_runs_both():
    def ways(options, tp=4):
        return {lay.expert_tp for lay in base_layouts(FUGAKU_MOE, tp, 1, 8, 64, {}, None,
                                                      ("even",), options)}
    assert ways((False, True)) == {False, True}
    assert ways((True,)) == {True} and ways((False,)) == {False}
    assert ways((False, True), tp=1) == {True}
    fugaku = load_system("fugaku")
    assert fugaku.stack.expert_tp == (False, True)               # DeepSpeed's default first
    assert "enable-expert-tensor-parallelism" in fugaku.sources["stacks.fugaku-llm.expert_tp"]
    assert load_system("dgx-h100").stack.expert_tp == (True,)


def test_a_pinned_fugaku_moe_layout_keeps_its_experts_whole_as_deepspeed_does():
    pins = ["plan", "--model", "fugaku-llm-moe-8x", "--tp", "4", "--pp", "8", "--dp", "24",
            "--ep", "8", "--json"]
    runner = CliRunner()
    default, split = (json.loads(runner.invoke(main, pins + extra).stdout)["best"][0]
                      for extra in ([], ["--expert-tp"]))
    assert default["layout"]["expert_tp"] is False and split["layout"]["expert_tp"] is True
    assert default["memory_bytes_per_node"] > split["memory_bytes_per_node"]


@pytest.mark.parametrize("args,message", [
    (["--params", "1e9", "--no-expert-tp"], "error: expert_tp: needs a mixture of experts"),
    (["--model", "mixtral-8x7b", "--system", "dgx-h100", "--no-expert-tp", "--nodes", "8"],
     "error: expert_tp: stack nemo-megatron-core of dgx-h100 runs the experts split over "
     "the TP ranks"),
])
def test_a_way_the_stack_does_not_run_is_one_line(args, message):
    result = CliRunner().invoke(main, ["plan"] + args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.output + result.stderr


def test_a_stack_says_its_expert_layouts_as_true_or_false():
    with pytest.raises(SpecError) as err:
        StackSpec(name="x", expert_tp=("no",))
    assert err.value.field == "stacks.x.expert_tp[0]"


def test_megatron_deepspeeds_expert_flags_are_read():
    _, pins, _, ignored, _ = read_megatron(
        "--num-layers 2 --hidden-size 64 --num-attention-heads 4 "
        "--enable-expert-tensor-parallelism --moe-expert-parallel-size 4")
    assert pins == {"expert_tp": True, "ep": 4} and not ignored


def test_whole_experts_open_tensor_parallel_sizes_that_do_not_divide_their_width():
    odd = dataclasses.replace(MIXTRAL, expert_ffn=14334)      # 2 x 7167
    assert tensor_parallel_sizes(odd) == [1, 2]
    assert tensor_parallel_sizes(odd, (False, True)) == [1, 2, 4, 8]   # (kv_heads 8)
    check_pins(odd, load_system("fugaku"), 64, {"tp": 4})     # whole experts run there
    with pytest.raises(SpecError, match=r"tp: must divide expert_ffn .* allowed: 1, 2$"):
        check_pins(odd, load_system("dgx-h100"), 64, {"tp": 4})
    with pytest.raises(SpecError, match="allowed: 1, 2$"):
        check_pins(odd, load_system("fugaku"), 64, {"tp": 4, "expert_tp": True})
