"""The alpha-beta torus against the textbook formulas it claims to implement."""

import math

import pytest

from topologies import JobShape, group_geometry
from topologies.analytic import AlphaBetaTorus

ALPHA, LINK, INJ, INTRA = 1e-6, 6e9, 40e9, 128e9
NET = AlphaBetaTorus(latency_s=ALPHA, link_bandwidth=LINK, injection_bandwidth=INJ,
                     intra_node_bandwidth=INTRA)


def test_group_geometry_follows_rank_order_tp_dp_pp():
    job = JobShape(tp=4, pp=2, dp=3, ranks_per_node=4)
    tp, dp, pp = (group_geometry(job, d) for d in ("tp", "dp", "pp"))
    assert (tp.size, tp.per_node, tp.nodes, tp.groups_per_node) == (4, 4, 1, 1)
    assert (dp.size, dp.per_node, dp.nodes, dp.groups_per_node) == (3, 1, 3, 4)
    assert (pp.size, pp.per_node, pp.nodes, pp.groups_per_node) == (2, 1, 2, 4)
    assert job.nodes == 6


@pytest.mark.parametrize("n", [3, 6, 12, 288])
def test_ring_allreduce_is_the_textbook_formula(n):
    """2 (n-1)/n S / B + 2 (n-1) alpha with B the bidirectional ring (2 links)."""
    size = 64e6
    cost = NET.collective("allreduce", "dp", JobShape(1, 1, n), size)
    expected = 2 * (n - 1) / n * size / (2 * LINK) + 2 * (n - 1) * ALPHA
    assert cost.algorithm == "bidirectional ring"
    assert cost.seconds == pytest.approx(expected, rel=1e-12)


def test_small_messages_take_the_latency_optimal_algorithm():
    cost = NET.collective("allreduce", "dp", JobShape(1, 1, 256), 8)
    assert cost.algorithm.startswith("recursive")
    assert cost.seconds == pytest.approx(math.log2(256) * (ALPHA + 8 / LINK), rel=1e-9)


def test_ranks_sharing_a_node_share_its_injection_bandwidth():
    one = NET.collective("allreduce", "dp", JobShape(1, 1, 64, ranks_per_node=1), 1e9)
    four = NET.collective("allreduce", "dp", JobShape(4, 1, 64, ranks_per_node=4), 1e9)
    # four DP groups cross every node, each gets a quarter of the node's links
    assert four.seconds > 3.5 * one.seconds


def test_intra_node_group_uses_the_intra_node_links():
    cost = NET.collective("allreduce", "tp", JobShape(3, 1, 1, ranks_per_node=3), 1e8)
    assert cost.algorithm == "bidirectional ring"
    assert cost.seconds == pytest.approx(2 * 2 / 3 * 1e8 / INTRA + 2 * 2 * ALPHA, rel=1e-12)


def test_power_of_two_group_prefers_halving_doubling_when_cheaper():
    cost = NET.collective("allreduce", "tp", JobShape(4, 1, 1, ranks_per_node=4), 1e8)
    assert cost.algorithm == "recursive halving-doubling"
    assert cost.seconds == pytest.approx(2 * 2 * ALPHA + 2 * 3 / 4 * 1e8 / INTRA, rel=1e-12)


def test_p2p_is_latency_plus_size_over_one_link():
    cost = NET.p2p("pp", JobShape(1, 2, 1), 4 * 2**20)
    assert cost.seconds == pytest.approx(ALPHA + 4 * 2**20 / LINK, rel=1e-12)


def test_group_of_one_costs_nothing():
    assert NET.collective("allreduce", "tp", JobShape(1, 4, 4), 1e9).seconds == 0.0


def test_more_bandwidth_is_never_slower():
    fast = AlphaBetaTorus(ALPHA, 2 * LINK, 2 * INJ, INTRA)
    for op in ("allreduce", "allgather", "reduce-scatter", "alltoall"):
        for n in (2, 6, 96, 288):
            for size in (8, 1e4, 1e8):
                job = JobShape(1, 1, n)
                assert fast.collective(op, "dp", job, size).seconds <= \
                    NET.collective(op, "dp", job, size).seconds


def test_unknown_collective_is_refused():
    with pytest.raises(ValueError, match="unknown collective"):
        NET.collective("allscatter", "dp", JobShape(1, 1, 4), 8)
