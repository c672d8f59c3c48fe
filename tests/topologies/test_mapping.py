"""Rank placement on the Tofu torus: permutations, group geometry and fallbacks.

Rank numbering is rebuilt by hand here (rank = tp_i + tp * (dp_i + dp * pp_i)) and
distances come from Torus.hops, which test_torus.py checks against networkx.
"""

import itertools
import math

import numpy as np
import pytest

from topologies.interface import JobShape
from topologies.mapping import place
from topologies.torus import Torus

TOFU_NAMES = ("X", "Y", "Z", "a", "b", "c")
TOFU_WRAP = (True, True, True, False, True, False)
FUGAKU_LLM_TORUS = Torus((24, 2, 24, 2, 3, 2), TOFU_WRAP, TOFU_NAMES)   # 13,824 nodes
FUGAKU_LLM_JOB = JobShape(tp=6, pp=8, dp=288, ranks_per_node=1)
SMALL_TOFU = Torus((2, 2, 2, 2, 3, 2), TOFU_WRAP, TOFU_NAMES)           # 96 nodes


def rank_indices(job):
    r = np.arange(job.ranks)
    return {"tp": r % job.tp, "dp": (r // job.tp) % job.dp, "pp": r // (job.tp * job.dp)}


@pytest.fixture(scope="module")
def fugaku_llm():
    return place(FUGAKU_LLM_JOB, FUGAKU_LLM_TORUS, "tofu")


def test_fugaku_llm_is_a_permutation_of_all_nodes(fugaku_llm):
    p = fugaku_llm
    assert p.strategy == "tofu" and p.note == ""
    assert FUGAKU_LLM_TORUS.nodes == FUGAKU_LLM_JOB.ranks == 13_824
    assert p.node_of_rank.shape == (13_824,)
    np.testing.assert_array_equal(np.sort(p.node_of_rank), np.arange(13_824))


def test_fugaku_llm_tp_groups_sit_in_one_tofu_unit(fugaku_llm):
    p, t = fugaku_llm, FUGAKU_LLM_TORUS
    nodes = p.node_of_rank[p.groups("tp")]                    # (2304, 6)
    assert nodes.shape == (13_824 // 6, 6)
    xyz = t.coords(nodes.ravel()).reshape(*nodes.shape, 6)[..., :3]
    assert (xyz == xyz[:, :1]).all()                          # same X, Y, Z
    assert all(len(set(row)) == 6 for row in nodes.tolist())  # six distinct nodes
    for i, j in itertools.combinations(range(6), 2):
        assert t.hops(nodes[:, i], nodes[:, j]).max() <= 2


def test_fugaku_llm_consecutive_pp_stages_are_one_hop_apart(fugaku_llm):
    p, t = fugaku_llm, FUGAKU_LLM_TORUS
    nodes = p.node_of_rank[p.groups("pp")]                    # (1728, 8)
    assert nodes.shape == (13_824 // 8, 8)
    for s in range(7):
        np.testing.assert_array_equal(t.hops(nodes[:, s], nodes[:, s + 1]), 1)


def test_fugaku_llm_pieces_and_description(fugaku_llm):
    p = fugaku_llm
    names = {"slot", *TOFU_NAMES}
    for dim in ("tp", "pp", "dp"):
        assert math.prod(n for _, n in p.pieces[dim]) == FUGAKU_LLM_JOB.size(dim)
        assert all(a in names and n > 1 for a, n in p.pieces[dim])
    # every physical axis is used up exactly once across the three dimensions
    used = {a: 1 for a in TOFU_NAMES}
    for dim in ("tp", "pp", "dp"):
        for a, n in p.pieces[dim]:
            used[a] *= n
    assert used == dict(zip(TOFU_NAMES, FUGAKU_LLM_TORUS.shape))
    text = "\n".join(p.describe())
    for label in ("TP 6", "PP 8", "DP 288"):
        assert label in text


def test_linear_strategy_is_rank_over_ppn():
    job = JobShape(tp=2, pp=3, dp=16, ranks_per_node=2)       # 96 ranks on 48 nodes
    t = Torus((4, 3, 4), (True, True, False))
    p = place(job, t, "linear")
    assert p.strategy == "linear"
    np.testing.assert_array_equal(p.node_of_rank, np.arange(96) // 2)
    p1 = place(JobShape(6, 8, 2, 1), FUGAKU_LLM_TORUS, "linear")
    np.testing.assert_array_equal(p1.node_of_rank, np.arange(96))


def test_four_ranks_per_node_tp_on_the_slots():
    job = JobShape(tp=4, pp=1, dp=96, ranks_per_node=4)
    p = place(job, SMALL_TOFU, "tofu")
    assert p.strategy == "tofu"
    assert p.pieces["tp"] == (("slot", 4),)
    nodes = p.node_of_rank[p.groups("tp")]                    # (96, 4)
    assert (nodes == nodes[:, :1]).all()                      # one node per TP group
    np.testing.assert_array_equal(np.bincount(p.node_of_rank, minlength=96), 4)
    assert len(set(nodes[:, 0].tolist())) == 96


@pytest.mark.parametrize("job", [
    JobShape(6, 8, 288, 1), JobShape(4, 1, 96, 4), JobShape(2, 3, 4, 1), JobShape(1, 5, 1, 1),
    JobShape(3, 1, 1, 1),
])
def test_groups_partition_ranks_along_one_dimension(job):
    t = Torus((job.nodes,), (True,), ("X",))
    p = place(job, t, "linear")
    idx = rank_indices(job)
    for dim in ("tp", "dp", "pp"):
        g = p.groups(dim)
        size = job.size(dim)
        assert g.shape == (job.ranks // size, size)
        np.testing.assert_array_equal(np.sort(g.ravel()), np.arange(job.ranks))
        # members share the other two indices and run 0..size-1 along this one
        np.testing.assert_array_equal(idx[dim][g], np.broadcast_to(np.arange(size), g.shape))
        for other in {"tp", "dp", "pp"} - {dim}:
            assert (idx[other][g] == idx[other][g][:, :1]).all()


def test_groups_explicit_small_example():
    p = place(JobShape(tp=2, pp=2, dp=3, ranks_per_node=1), Torus((12,), (True,)), "linear")
    # rank = tp_i + 2 * (dp_i + 3 * pp_i)
    assert p.groups("tp").tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert p.groups("dp").tolist() == [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]]
    assert p.groups("pp").tolist() == [[0, 6], [1, 7], [2, 8], [3, 9], [4, 10], [5, 11]]


def test_tp_five_falls_back_to_linear():
    unit = Torus((2, 3, 2), (False, True, False), ("a", "b", "c"))   # no factor 5
    p = place(JobShape(tp=5, pp=1, dp=1), unit, "tofu")
    assert p.strategy == "linear"
    assert "linear" in p.note
    np.testing.assert_array_equal(p.node_of_rank, np.arange(5))


def test_unmappable_axes_fall_back_to_linear():
    # axes named outside the Tofu preference lists cannot take any factor
    t = Torus((4, 6), (True, True))
    p = place(JobShape(tp=2, pp=2, dp=6), t, "tofu")
    assert p.strategy == "linear"
    assert "linear" in p.note
    np.testing.assert_array_equal(p.node_of_rank, np.arange(24))


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="strategy"):
        place(FUGAKU_LLM_JOB, FUGAKU_LLM_TORUS, "snake")


def test_job_larger_than_the_torus_is_rejected():
    with pytest.raises(ValueError, match="job"):
        place(JobShape(tp=2, pp=1, dp=49), SMALL_TOFU, "tofu")
