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
