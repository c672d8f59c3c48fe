"""Sharded data parallelism as frameworks run it: ZeRO-3 / FSDP FULL_SHARD gathers every
layer's weights in each forward and backward of every micro-batch and reduce-scatters
the gradients, through the collective algorithms the stack's library runs (NCCL: flat
rings). At a fixed global batch a larger data-parallel group leaves fewer sequences per
rank to hide the same per-micro-batch traffic behind, and a flat ring's steps grow with
the group: throughput per rank falls, as the published sharded runs show."""

import pytest

from fpcore.errors import SpecError
from perfmodel.estimator import estimate
from perfmodel.layout import Layout
from perfmodel.model import ModelSpec
from perfmodel.search import search
from perfmodel.system import load_system

MPT_1B = ModelSpec(layers=24, hidden=2048, heads=16, vocab=50368, seq=2048, name="mpt-1b")
RINGS = load_system("mosaic-a100-40gb")                    # llm-foundry: NCCL rings, FSDP
IDEAL = load_system("mosaic-a100-40gb", stack=RINGS.stack.replace(
    name="ideal-library", collective_algorithms=("any",)))


def per_rank(system, dp: int, global_batch: int = 512) -> float:
    layout = Layout(dp=dp, micro_batch=1, global_batch=global_batch, zero=3,
                    **system.stack.layout_settings(), precision="bf16")
    return estimate(MPT_1B, system, layout).tokens_per_s / dp


def test_throughput_per_rank_falls_as_dp_grows_at_a_fixed_global_batch():
    rates = [per_rank(RINGS, dp) for dp in (8, 16, 32, 64, 128)]
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] < 0.5 * rates[0]            # one node's NVLink, then rings across NICs


def test_flat_rings_cost_more_than_an_ideal_library_across_nodes():
    """Within a node the algorithms tie; across nodes a flat ring moves every byte over
    the NICs, which a hierarchical algorithm does only once per node."""
    assert per_rank(RINGS, 8) == pytest.approx(per_rank(IDEAL, 8), rel=0.01)
    for dp in (16, 64, 128):
        assert per_rank(RINGS, dp) < 0.7 * per_rank(IDEAL, dp)


def test_zero_3_gathers_in_forward_and_backward_of_every_micro_batch():
    """Twice the micro-batches (the same tokens in halves): twice the weight gathers and
    gradient reduce-scatters, so the exposed data-parallel time grows."""
    one = Layout(dp=16, micro_batch=2, global_batch=128, zero=3, precision="bf16",
                 **RINGS.stack.layout_settings())
    two = one.replace(micro_batch=1)
    a, b = (estimate(MPT_1B, RINGS, lay).breakdown.dp_comm for lay in (one, two))
    assert b > 1.5 * a


def test_the_planner_proposes_only_the_zero_stages_a_stack_runs():
    found, _ = search(MPT_1B, RINGS, 512, nodes=[8], top=50)
    assert found and {e.layout.zero for e in found} == {3}
    assert {e.layout.attention for e in found} == {"flash"}
    with pytest.raises(SpecError, match="runs ZeRO stage"):
        search(MPT_1B, RINGS, 512, nodes=[8], pins={"zero": 1})


# ----------------------------------------------------------------- named modes
def stack(family: str, stages, **kw):
    """RINGS with another framework family's modes (no overlap unless told)."""
    return load_system("mosaic-a100-40gb", stack=RINGS.stack.replace(
        name=f"{family}-test", sharding=family, zero_stages=tuple(stages),
        **{"overlap_dp": False, **kw}))


FSDP, DEEPSPEED, MEGATRON = stack("fsdp", (0, 2, 3)), stack("deepspeed", (0, 1, 2, 3)), \
    stack("megatron", (0, 1))


def sharded(system, zero: int, mb: int = 2) -> Layout:
    return Layout(dp=16, micro_batch=mb, global_batch=256, zero=zero, precision="bf16",
                  **system.stack.layout_settings())


def comm_of(system, layout):
    from perfmodel.estimator import ComputeModel, JobShape, network_for, stage_comm
    job = JobShape(layout.tp, layout.pp, layout.dp, system.ranks_per_node)
    return stage_comm(MPT_1B, system, layout, network_for(system),
                      ComputeModel.for_system(system, layout.precision), job, 0)


def test_full_shard_is_zero_3_and_the_distributed_optimizer_is_zero_1():
    """Same states sharded, same collectives at the same moments: the same prediction."""
    for system, zero in ((FSDP, 3), (MEGATRON, 1)):
        named = estimate(MPT_1B, system, sharded(system, zero))
        deepspeed = estimate(MPT_1B, DEEPSPEED, sharded(DEEPSPEED, zero))
        assert named.iteration_s == deepspeed.iteration_s
        assert named.peak_memory == deepspeed.peak_memory
    assert sharded(FSDP, 3).label().endswith("FULL_SHARD bf16 flash")
    assert "dist-opt" in sharded(MEGATRON, 1).label().split()


def test_shard_grad_op_gathers_once_per_micro_batch_and_keeps_the_weights_whole():
    """FSDP SHARD_GRAD_OP: unshards before the forward and reshards only after the
    backward: FULL_SHARD's forward gather without its backward one, and the stage's
    weights whole at the peak (ZeRO-2's memory), no gather after the step."""
    sgo, full, zero2 = (comm_of(s, sharded(s, z)) for s, z in ((FSDP, 2), (FSDP, 3),
                                                             (DEEPSPEED, 2)))
    assert sgo.ag_forward == full.ag_forward == full.ag_backward > 0 == sgo.ag_backward
    assert sgo.reduce_per_micro_batch == full.reduce_per_micro_batch > 0
    assert sgo.gather_after == 0 < zero2.gather_after
    m_sgo, m_full, m_zero2 = (estimate(MPT_1B, s, sharded(s, z)).peak_memory
                              for s, z in ((FSDP, 2), (FSDP, 3), (DEEPSPEED, 2)))
    assert m_sgo.weights == m_zero2.weights == m_full.weights * 16
    assert m_sgo.gradients == m_full.gradients and m_sgo.optimizer == m_full.optimizer
    t_sgo, t_full = (estimate(MPT_1B, FSDP, sharded(FSDP, z)).breakdown.dp_comm for z in (2, 3))
    assert t_sgo < t_full


def test_no_shard_all_reduces_after_every_backward():
    """FSDP NO_SHARD outside no_sync(): an all-reduce per micro-batch, where DDP (in
    DeepSpeed and Megatron) all-reduces once: with nothing overlapped, 4 micro-batches
    expose about 4 times the reduction."""
    four = dict(mb=1)
    no_shard = comm_of(FSDP, sharded(FSDP, 0, **four))
    ddp = comm_of(DEEPSPEED, sharded(DEEPSPEED, 0, **four))
    assert no_shard.reduce == 0 and no_shard.reduce_per_micro_batch == ddp.reduce > 0
    a = estimate(MPT_1B, FSDP, sharded(FSDP, 0, mb=4)).breakdown.dp_comm
    b = estimate(MPT_1B, DEEPSPEED, sharded(DEEPSPEED, 0, mb=4)).breakdown.dp_comm
    assert a == pytest.approx(4 * b, rel=0.05)


@pytest.mark.parametrize("zero", [0, 2, 3])
def test_the_simulator_runs_each_fsdp_mode_as_the_estimate_prices_it(zero):
    from perfmodel.des import simulate
    lay = sharded(FSDP, zero)
    assert simulate(MPT_1B, FSDP, lay).iteration_s == pytest.approx(
        estimate(MPT_1B, FSDP, lay).iteration_s, rel=0.02)


def test_a_family_without_the_mode_is_refused_where_it_is_named():
    with pytest.raises(SpecError) as e:
        stack("fsdp", (1, 3))
    assert e.value.field.endswith("zero_stages") and "SHARD_GRAD_OP (ZeRO stage 2)" in str(e.value)
    with pytest.raises(SpecError) as e:
        Layout(dp=4, global_batch=4, zero=2, sharding="megatron")
    assert e.value.field == "zero" and "distributed optimizer (ZeRO stage 1)" in e.value.message
    with pytest.raises(SpecError) as e:
        Layout(sharding="horovod")
    assert e.value.field == "sharding"


def test_the_fugaku_stacks_run_megatrons_own_data_parallelism():
    fugaku = load_system("fugaku")
    assert {s.sharding for s in fugaku.stacks} == {"megatron"}
    assert "no --deepspeed" in fugaku.sources["stacks.fugaku-llm.sharding"]


# ------------------------------------------------ how a stack cuts its traffic
def with_stack(**kw):
    return load_system("mosaic-a100-40gb", stack=RINGS.stack.replace(name="cut-test", **kw))


def test_gradient_buckets_are_the_stacks():
    """One per layer (FSDP's units), one flat buffer (Megatron-LM's local DDP) or a size:
    the same bytes in fewer collectives pay fewer latencies."""
    layer, flat, sized = (comm_of(with_stack(reduce_bucket_mb=b), sharded(RINGS, 3))
                          for b in ("layer", "flat", 1000.0))
    grads = 4.0 * (MPT_1B.layers * MPT_1B.layer_params + MPT_1B.vocab * MPT_1B.hidden)
    assert (layer.buckets, flat.buckets) == (MPT_1B.layers, 1)
    assert sized.buckets == pytest.approx(grads / 1000e6, abs=1.0)
    assert flat.reduce_per_micro_batch < sized.reduce_per_micro_batch \
        < layer.reduce_per_micro_batch
    assert load_system("fugaku").stack.reduce_bucket_mb == "flat"


def test_gather_units_and_prefetch_decide_what_a_pass_waits_for():
    """Module granularity: 4 gathers a layer (more latencies); one layer ahead hides all
    but the first gather; a flat stage buffer is waited for in full; without prefetch
    each layer's gather is too, and in the backward it queues behind the reduction
    before it on the one stream, so neither hides. Memory holds the gathered units: the
    one in use and those prefetched, or the whole stage's weights."""
    base = sharded(RINGS, 3, mb=1)
    times = {}
    for unit, prefetch in (("layer", 1), ("module", 1), ("stage", 1), ("layer", 0),
                           ("layer", 3)):
        system = with_stack(gather_granularity=unit, prefetch_layers=prefetch)
        lay = base.replace(gather=unit, prefetch=prefetch)
        assert comm_of(system, lay).gathers == {"layer": 24, "module": 96, "stage": 1}[unit]
        times[unit, prefetch] = estimate(MPT_1B, system, lay)
    dp = {k: e.breakdown.dp_comm for k, e in times.items()}
    assert dp["layer", 1] < dp["module", 1]
    assert dp["layer", 1] < dp["stage", 1] < dp["layer", 0]
    one = comm_of(RINGS, base)
    m = base.micro_batches                       # every micro-batch waits for all of it
    assert dp["layer", 0] == pytest.approx(m * (2 * one.ag_forward + one.reduce_per_micro_batch),
                                           rel=0.02)
    flat = comm_of(with_stack(gather_granularity="stage"), base.replace(gather="stage"))
    assert dp["stage", 1] >= m * 2 * flat.ag_forward > 0          # waited for in full
    gathered = {k: e.peak_memory.buffers for k, e in times.items()}
    assert gathered["layer", 0] < gathered["layer", 1] < gathered["layer", 3] \
        < gathered["stage", 1]


@pytest.mark.parametrize("unit,prefetch", [("layer", 0), ("stage", 1), ("module", 2)])
def test_the_simulator_gathers_as_the_estimate_prices_it(unit, prefetch):
    from perfmodel.des import simulate
    system = with_stack(gather_granularity=unit, prefetch_layers=prefetch)
    lay = sharded(RINGS, 3).replace(gather=unit, prefetch=prefetch)
    assert simulate(MPT_1B, system, lay).iteration_s == pytest.approx(
        estimate(MPT_1B, system, lay).iteration_s, rel=0.02)


def test_an_offloaded_optimizer_leaves_the_device_and_crosses_the_host_link():
    """ZeRO-Offload: the optimizer states leave the GPU's memory; the step runs at the
    host's memory bandwidth (shared by the node's 8 ranks) after the gradients cross the
    host link down and before the weights cross it back."""
    import dataclasses
    from perfmodel.compute import ComputeModel
    from perfmodel.memory import stage_params
    from perfmodel.precisions import OPTIMIZER_BYTES
    node = dataclasses.replace(RINGS.node, host_memory_bandwidth=200e9,
                               host_link_bandwidth=25e9)
    host = dataclasses.replace(RINGS, node=node).with_stack(
        RINGS.stack.replace(name="offload", optimizer="host"))
    device_lay = sharded(RINGS, 3)
    host_lay = device_lay.replace(optimizer="host")
    on_device, offloaded = (estimate(MPT_1B, s, lay) for s, lay in
                            ((RINGS, device_lay), (host, host_lay)))
    assert offloaded.peak_memory.optimizer == 0 < on_device.peak_memory.optimizer
    n = stage_params(MPT_1B, device_lay, 0)
    states = n / 16 * OPTIMIZER_BYTES["bf16"]
    device_step = ComputeModel.for_system(RINGS, "bf16").optimizer_time(states)
    host_step = states / (200e9 / 8) + n * (4 + 2) / 25e9     # fp32 grads down, bf16 up
    grad_norm = comm_of(RINGS, device_lay).optimizer - device_step
    assert comm_of(host, host_lay).optimizer == pytest.approx(host_step + grad_norm)
    assert offloaded.breakdown.optimizer > on_device.breakdown.optimizer
    with pytest.raises(SpecError) as e:
        RINGS.with_stack(RINGS.stack.replace(name="offload", optimizer="host"))
    assert e.value.field == "stacks.offload.optimizer" and "host_link" in e.value.message


def test_stack_values_out_of_range_are_refused_by_name():
    for kw, field in (({"reduce_bucket_mb": "per-tensor"}, "reduce_bucket_mb"),
                      ({"reduce_bucket_mb": -5.0}, "reduce_bucket_mb"),
                      ({"gather_granularity": "tensor"}, "gather_granularity"),
                      ({"prefetch_layers": -1}, "prefetch_layers"),
                      ({"optimizer": "nvme"}, "optimizer")):
        with pytest.raises(SpecError) as e:
            RINGS.stack.replace(name="bad", **kw)
        assert e.value.field == f"stacks.bad.{field}"


# ------------------------------------------------------------- hybrid sharding
HYBRID = load_system("mosaic-a100-40gb", stack=RINGS.stack.replace(
    name="hybrid-test", shard_groups=("dp", "node")))


def test_hybrid_shard_gathers_inside_a_node_and_all_reduces_the_shards_across():
    """HYBRID_SHARD over 8 ranks (a node of 8 GPUs) at dp 64: each pass gathers as
    FULL_SHARD at dp 8 does (one node's NVLink), and after each reduce-scatter the 8
    replicas all-reduce their 1/8 gradient shard across the nodes. Its states are
    split 8 ways, not 64."""
    from perfmodel.estimator import JobShape, _collective, network_for
    full64 = Layout(dp=64, micro_batch=1, global_batch=512, zero=3, precision="bf16",
                    **RINGS.stack.layout_settings())
    hybrid, full8 = full64.replace(shard_ranks=8), full64.replace(dp=8, global_batch=64)
    h, f8, f64 = (comm_of(RINGS, lay) for lay in (hybrid, full8, full64))
    assert h.ag_forward == h.ag_backward == f8.ag_forward < f64.ag_forward
    from perfmodel.memory import stage_params
    shard = stage_params(MPT_1B, hybrid, 0) * 4.0 / 8        # fp32 gradient shard
    replicas = JobShape(8, 1, 8, 8)                           # one rank a node, 8 nodes
    across = 24 * _collective(network_for(RINGS), "allreduce", "dp", replicas, shard / 24)
    assert h.reduce_per_micro_batch == pytest.approx(f8.reduce_per_micro_batch + across)
    m_h, m_f8, m_f64 = (estimate(MPT_1B, RINGS, lay).peak_memory for lay in (hybrid, full8, full64))
    assert m_h.model_states == pytest.approx(m_f8.model_states) and \
        m_h.model_states > 4 * m_f64.model_states
    assert hybrid.label().split()[5] == "HYBRID_SHARD/8"


def test_hybrid_shard_beats_full_shard_across_nodes_and_the_simulator_agrees():
    """Across 8 nodes a flat ring of FULL_SHARD gathers moves every byte over the NICs
    twice per micro-batch; HYBRID_SHARD keeps them on NVLink."""
    from perfmodel.des import simulate
    full = Layout(dp=64, micro_batch=1, global_batch=512, zero=3, precision="bf16",
                  **RINGS.stack.layout_settings())
    hybrid = full.replace(shard_ranks=8)
    t_full, t_hybrid = (estimate(MPT_1B, RINGS, lay).iteration_s for lay in (full, hybrid))
    assert t_hybrid < 0.6 * t_full
    assert simulate(MPT_1B, RINGS, hybrid).iteration_s == pytest.approx(t_hybrid, rel=0.03)


def test_the_planner_proposes_hybrid_sharding_only_where_the_stack_runs_it():
    as_run, _ = search(MPT_1B, RINGS, 512, nodes=[8], top=20, pins={"precision": "bf16"})
    assert {e.layout.shard_ranks for e in as_run} == {0}
    hybrid, _ = search(MPT_1B, HYBRID, 512, nodes=[8], top=20, pins={"precision": "bf16"})
    assert hybrid[0].layout.shard_ranks == 8 // hybrid[0].layout.tp
    assert hybrid[0].iteration_s < as_run[0].iteration_s


def test_hybrid_sharding_is_refused_where_it_cannot_be():
    with pytest.raises(SpecError) as e:
        Layout(dp=16, global_batch=16, zero=1, shard_ranks=8)
    assert e.value.field == "shard_ranks" and "HYBRID_SHARD (ZeRO stage 3)" in e.value.message
    for shard in (16, 3, 1):
        with pytest.raises(SpecError, match="must divide dp"):
            Layout(dp=16, global_batch=16, zero=3, sharding="fsdp", shard_ranks=shard)
    with pytest.raises(SpecError) as e:
        RINGS.stack.replace(name="x", sharding="megatron", zero_stages=(0, 1),
                            shard_groups=("dp", "node"))
    assert e.value.field == "stacks.x.shard_groups"
    with pytest.raises(SpecError) as e:
        search(MPT_1B, load_system("fugaku"), 512, nodes=[64], pins={"shard_ranks": 4})
    assert e.value.field == "shard_ranks" and "megatron DDP" in e.value.message
