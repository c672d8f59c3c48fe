"""The fat tree's link layout, routes and max-min rates against hand counts.

Fixture: Selene-like numbers (Narayanan et al. 2021, Sec. 5; A100 datasheet):
8 GPUs per node, 8 x 200 Gb/s HDR NICs (25 GB/s each), NVSwitch 300 GB/s; two
nodes per leaf so that small cases cross leaves.
"""

import numpy as np
import pytest

from topologies.fattree import FatTree
from topologies.flows import max_min_rates

NIC, NVS = 25e9, 300e9


def tree(nodes=6, nodes_per_leaf=2, oversubscription=1.0):
    return FatTree(nodes=nodes, nic_bandwidth=NIC, nodes_per_leaf=nodes_per_leaf,
                   oversubscription=oversubscription, switch_bandwidth=NVS)


def rates(t, src, dst):
    return max_min_rates(*t.routes(np.asarray(src), np.asarray(dst)), t.capacity)


def test_sizes_and_capacities_follow_the_documented_layout():
    t = tree(nodes=5)                    # 40 devices, 40 NICs, 3 leaves (last one partial)
    assert (t.devices, t.nics, t.leaves) == (40, 40, 3)
    assert t.n_links == 2 * (40 + 40 + 3)
    cap = t.capacity
    assert cap.shape == (t.n_links,) and cap.dtype == np.float64
    assert np.all(cap[:80] == NVS)
    assert np.all(cap[80:160] == NIC)
    assert np.all(cap[160:] == 2 * 8 * NIC)          # non-blocking leaf uplink
    assert tree(oversubscription=2.0).capacity[-1] == 8 * NIC
    ids = [t.switch_up(0), t.switch_down(0), t.nic_up(0), t.nic_down(0), t.leaf_up(0),
           t.leaf_down(0), t.leaf_down(t.leaves - 1)]
    assert [int(i) for i in ids] == [0, 40, 80, 120, 160, 163, t.n_links - 1]


def test_construction_errors_name_the_field():
    with pytest.raises(ValueError, match="nodes_per_leaf"):
        FatTree(nodes=4, nic_bandwidth=NIC, nodes_per_leaf=0)
    with pytest.raises(ValueError, match="nic_bandwidth"):
        FatTree(nodes=4, nic_bandwidth=-1.0)
    with pytest.raises(ValueError, match="nics_per_node"):
        FatTree(nodes=4, nic_bandwidth=NIC, nics_per_node=3)
    with pytest.raises(ValueError, match="dst"):
        tree().routes(np.array([0]), np.array([tree().devices]))


def test_routes_for_each_case():
    t = tree()                           # 48 devices; leaf 0 = nodes 0, 1
    src = np.array([3, 3, 3, 3])
    dst = np.array([3, 5, 8 + 5, 2 * 16 + 8 + 6])   # self, same node, same leaf, node 5 (leaf 2)
    ptr, links = t.routes(src, dst)
    assert ptr.tolist() == [0, 0, 2, 4, 8]
    routes = [links[a:b].tolist() for a, b in zip(ptr[:-1], ptr[1:])]
    assert routes[0] == []
    assert routes[1] == [t.switch_up(3), t.switch_down(5)]
    assert routes[2] == [t.nic_up(3), t.nic_down(8 + 5)]             # rail 3 out, rail 5 in
    assert routes[3] == [t.nic_up(3), t.leaf_up(0), t.leaf_down(2), t.nic_down(40 + 6)]
    assert t.hops(src, dst).tolist() == [0, 1, 1, 3]
    empty_ptr, empty_links = t.routes(np.zeros(0, int), np.zeros(0, int))
    assert empty_ptr.tolist() == [0] and empty_links.size == 0


def test_routes_are_symmetric_up_to_direction():
    """Route b->a uses the reverse-direction links of route a->b, in reverse order."""
    t = tree()
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, t.devices, 200), rng.integers(0, t.devices, 200)
    ptr, fwd = t.routes(a, b)
    ptr_back, back = t.routes(b, a)
    assert ptr.tolist() == ptr_back.tolist()
    flip = np.empty(t.n_links, dtype=np.int64)       # each link id -> its opposite direction
    for first, n in ((0, t.devices), (2 * t.devices, t.nics), (2 * (t.devices + t.nics), t.leaves)):
        flip[first:first + n], flip[first + n:first + 2 * n] = np.arange(n) + first + n, \
            np.arange(n) + first
    for lo, hi in zip(ptr[:-1], ptr[1:]):
        assert flip[fwd[lo:hi]][::-1].tolist() == back[lo:hi].tolist()


def test_gpus_on_matching_rails_each_get_a_full_nic():
    t = tree()
    r = rates(t, np.arange(8), 8 + np.arange(8))     # node 0 GPU i -> node 1 GPU i
    np.testing.assert_allclose(r, NIC, rtol=1e-12)


def test_two_gpus_on_one_rail_share_its_nic():
    t = FatTree(nodes=4, nic_bandwidth=NIC, nics_per_node=4, nodes_per_leaf=2)
    assert t.nic_of(np.array([0, 1, 2])).tolist() == [0, 0, 1]      # 2 GPUs per NIC
    np.testing.assert_allclose(rates(t, [0, 1], [8, 10]), NIC / 2, rtol=1e-12)
    # Same with one NIC per GPU: two GPUs sending into one receiving rail.
    np.testing.assert_allclose(rates(tree(), [0, 1], [8, 8]), NIC / 2, rtol=1e-12)


def cross_leaf_permutation(t, seed=0):
    """Every device sends to a distinct device on the next leaf (a random match)."""
    per_leaf = t.nodes_per_leaf * t.devices_per_node
    rng = np.random.default_rng(seed)
    src = np.arange(t.devices)
    leaf, within = src // per_leaf, rng.permutation(per_leaf)[src % per_leaf]
    return src, (leaf + 1) % t.leaves * per_leaf + within


def test_non_blocking_tree_gives_full_nic_rate_to_a_permutation_across_leaves():
    t = tree(nodes=6, nodes_per_leaf=2)
    src, dst = cross_leaf_permutation(t)
    assert np.all(t.leaf_of(src) != t.leaf_of(dst))
    assert sorted(dst.tolist()) == list(range(t.devices))
    np.testing.assert_allclose(rates(t, src, dst), NIC, rtol=1e-12)


@pytest.mark.parametrize("over", [2.0, 4.0])
def test_oversubscription_divides_cross_leaf_rates(over):
    t = tree(nodes=6, nodes_per_leaf=2, oversubscription=over)
    src, dst = cross_leaf_permutation(t)
    np.testing.assert_allclose(rates(t, src, dst), NIC / over, rtol=1e-12)
    # Traffic that stays in its leaf does not see the oversubscription.
    same_leaf = t.nodes_per_leaf * t.devices_per_node
    np.testing.assert_allclose(rates(t, np.arange(8), same_leaf - 8 + np.arange(8)), NIC,
                               rtol=1e-12)


def test_intra_node_flows_get_the_switch_bandwidth():
    t = tree()
    src = np.arange(t.devices)
    dst = src // 8 * 8 + (src + 1) % 8               # ring inside each node
    np.testing.assert_allclose(rates(t, src, dst), NVS, rtol=1e-12)
    assert np.all(t.hops(src, dst) == 1)
