"""The N-d torus/mesh checked against closed forms and against networkx.

References used here are independent of topologies/torus.py: coordinates come from
itertools.product (C order), degrees from the per-axis rule written out by hand,
distances from networkx shortest paths on the exported MultiGraph, and bisection
widths from brute force over every balanced split of tiny shapes.
"""

import itertools
import math
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.torus import MINUS, PLUS, Torus

FUGAKU = Torus((24, 23, 24, 2, 3, 2), (True, True, True, False, True, False),
               ("X", "Y", "Z", "a", "b", "c"))


@st.composite
def small_tori(draw, max_axes=4, max_size=5):
    ndim = draw(st.integers(1, max_axes))
    shape = tuple(draw(st.lists(st.integers(1, max_size), min_size=ndim, max_size=ndim)))
    wrap = tuple(draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim)))
    return Torus(shape, wrap)


def reference_degree(shape, wrap, coord):
    """Links at one node: per axis 0 (size 1), 2 (ring), or 1/2 (mesh end/interior)."""
    deg = 0
    for n, w, x in zip(shape, wrap, coord):
        if n == 1:
            continue
        deg += 2 if w else (x > 0) + (x < n - 1)
    return deg


def all_coords(shape):
    return list(itertools.product(*(range(n) for n in shape)))


# ------------------------------------------------------------------ nodes


@settings(max_examples=60, deadline=None)
@given(small_tori())
def test_node_count_and_coordinate_round_trip(t):
    ref = all_coords(t.shape)                       # C order: last axis fastest
    assert t.nodes == math.prod(t.shape) == len(ref)
    ids = np.arange(t.nodes)
    c = t.coords(ids)
    assert c.shape == (t.nodes, t.ndim)
    assert [tuple(int(v) for v in row) for row in c] == ref
    np.testing.assert_array_equal(t.ids(c), ids)
    assert t.n_link_slots == t.nodes * t.ndim * 2


def test_constructor_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        Torus((3, 0), (True, True))
    with pytest.raises(ValueError, match="wrap"):
        Torus((3, 3), (True,))
    with pytest.raises(ValueError, match="names"):
        Torus((3, 3), (True, True), ("X",))


# ------------------------------------------------------------------ degrees


@settings(max_examples=60, deadline=None)
@given(small_tori())
def test_degree_per_node_matches_closed_form(t):
    expected = [reference_degree(t.shape, t.wrap, c) for c in all_coords(t.shape)]
    assert t.degree().tolist() == expected


def test_degree_histogram_3x4_mesh():
    t = Torus((3, 4), (False, False))
    # corners 2, non-corner boundary 3, interior (1 x 2) 4
    assert Counter(t.degree().tolist()) == {2: 4, 3: 6, 4: 2}


def test_degree_histogram_torus_is_regular():
    for shape in [(3, 4), (2, 2, 3), (5,), (2,), (4, 3, 2, 2)]:
        t = Torus(shape, (True,) * len(shape))
        assert Counter(t.degree().tolist()) == {2 * len(shape): t.nodes}


def test_size_one_axes_have_no_links():
    t = Torus((1, 4, 1), (True, True, False))
    assert t.degree().tolist() == [2, 2, 2, 2]
    assert t.diameter == 2
    t1 = Torus((1,), (True,))
    assert t1.degree().tolist() == [0]
    assert not t1.link_exists.any()
    assert t1.diameter == 0


def test_fugaku_every_node_has_ten_ports():
    assert FUGAKU.nodes == 24 * 23 * 24 * 2 * 3 * 2 == 158_976
    deg = FUGAKU.degree()
    assert Counter(deg.tolist()) == {10: 158_976}
    # per axis: X, Y, Z, b rings -> 2 each; a, c meshes of 2 -> 1 each
    per_axis = FUGAKU.link_exists.reshape(FUGAKU.nodes, 6, 2).sum(axis=2)
    np.testing.assert_array_equal(per_axis, np.broadcast_to([2, 2, 2, 1, 2, 1], per_axis.shape))


def test_fugaku_diameter_is_38():
    assert FUGAKU.diameter == 12 + 11 + 12 + 1 + 1 + 1 == 38
    far = FUGAKU.ids([[12, 11, 12, 1, 1, 1]])
    assert FUGAKU.hops([0], far).tolist() == [38]
    # no node is further than 38 hops from node 0 (vertex-transitive in X, Y, Z, b)
    everyone = np.arange(FUGAKU.nodes)
    assert FUGAKU.hops(np.zeros_like(everyone), everyone).max() == 38


# ------------------------------------------------------------------ link multiplicity


def test_two_ring_has_two_cables_two_mesh_has_one():
    ring = Torus((2,), (True,)).to_networkx()
    mesh = Torus((2,), (False,)).to_networkx()
    assert isinstance(ring, nx.MultiGraph)
    assert ring.number_of_edges(0, 1) == 2
    assert mesh.number_of_edges(0, 1) == 1
    assert dict(ring.degree()) == {0: 2, 1: 2}
    assert dict(mesh.degree()) == {0: 1, 1: 1}


def test_three_ring_has_three_cables():
    g = Torus((3,), (True,)).to_networkx()
    assert g.number_of_edges() == 3
    assert all(g.number_of_edges(a, b) == 1 for a, b in [(0, 1), (1, 2), (2, 0)])


def test_simple_graph_would_lose_the_two_ring_multiplicity():
    t = Torus((2, 2), (True, True))
    g = t.to_networkx()
    assert g.number_of_edges() == 8                 # 4 node pairs x 2 cables
    assert nx.Graph(g).number_of_edges() == 4       # what a simple graph would model
    assert all(d == 4 for _, d in g.degree())


@settings(max_examples=60, deadline=None)
@given(small_tori())
def test_cable_count_is_half_the_degree_sum(t):
    g = t.to_networkx()
    deg = t.degree()
    assert g.number_of_nodes() == t.nodes
    assert g.number_of_edges() * 2 == deg.sum()
    assert [d for _, d in sorted(g.degree())] == deg.tolist()
    assert nx.number_of_selfloops(g) == 0


@settings(max_examples=60, deadline=None)
@given(small_tori())
def test_link_endpoints_are_neighbours_with_a_reverse_twin(t):
    links, frm, to = t.link_endpoints()
    np.testing.assert_array_equal(links, np.flatnonzero(t.link_exists))
    assert (to >= 0).all() and (to != frm).all()
    node, rest = np.divmod(links, t.ndim * 2)
    axis, d = np.divmod(rest, 2)
    np.testing.assert_array_equal(node, frm)
    # the far end differs from the near end in exactly the link's axis, by one step
    diff = t.coords(to) - t.coords(frm)
    for i in range(len(links)):
        k = axis[i]
        n = t.shape[k]
        assert (np.delete(diff[i], k) == 0).all()
        step = 1 if d[i] == PLUS else -1
        assert diff[i][k] % n == step % n
    # every directed link has its twin: the far node's opposite link on the same axis
    twin = Torus.link_id(to, axis, 1 - d, t.ndim)
    assert t.link_exists[twin].all()


# ------------------------------------------------------------------ neighbour / link_exists


def test_neighbour_mesh_ends_and_ring_wrap():
    mesh = Torus((4,), (False,))
    ring = Torus((4,), (True,))
    ids = np.arange(4)
    assert mesh.neighbour(ids, 0, PLUS).tolist() == [1, 2, 3, -1]
    assert mesh.neighbour(ids, 0, MINUS).tolist() == [-1, 0, 1, 2]
    assert ring.neighbour(ids, 0, PLUS).tolist() == [1, 2, 3, 0]
    assert ring.neighbour(ids, 0, MINUS).tolist() == [3, 0, 1, 2]
    one = Torus((1, 3), (True, True))
    assert one.neighbour(np.arange(3), 0, PLUS).tolist() == [-1, -1, -1]
    assert one.neighbour(np.arange(3), 1, PLUS).tolist() == [1, 2, 0]


def test_neighbour_in_two_dimensions():
    t = Torus((3, 4), (False, True))
    # node (1, 3) = id 7: axis 1 wraps to (1, 0) = 4; axis 0 steps to (2, 3) = 11 and (0, 3) = 3
    assert t.neighbour([7], 1, PLUS).tolist() == [4]
    assert t.neighbour([7], 0, PLUS).tolist() == [11]
    assert t.neighbour([7], 0, MINUS).tolist() == [3]
    assert t.neighbour([11], 0, PLUS).tolist() == [-1]


@settings(max_examples=60, deadline=None)
@given(small_tori())
def test_link_exists_iff_neighbour_exists(t):
    ids = np.arange(t.nodes)
    exists = t.link_exists.reshape(t.nodes, t.ndim, 2)
    for k in range(t.ndim):
        for d in (PLUS, MINUS):
            np.testing.assert_array_equal(exists[:, k, d], t.neighbour(ids, k, d) >= 0)


# ------------------------------------------------------------------ distances

HOPS_SHAPES = (
    [((3, 4, 2), w) for w in itertools.product((False, True), repeat=3)]
    + [((2, 2, 3), w) for w in itertools.product((False, True), repeat=3)]
    + [((5,), (True,)), ((5,), (False,)), ((6,), (True,)), ((1, 3), (True, False)),
       ((4, 1, 3), (True, True, True))]
)


@pytest.mark.parametrize("shape, wrap", HOPS_SHAPES)
def test_hops_and_diameter_match_networkx(shape, wrap):
    t = Torus(shape, wrap)
    g = t.to_networkx()
    ref = dict(nx.all_pairs_shortest_path_length(g))
    a, b = np.meshgrid(np.arange(t.nodes), np.arange(t.nodes), indexing="ij")
    hops = t.hops(a.ravel(), b.ravel()).reshape(t.nodes, t.nodes)
    expected = np.array([[ref[i][j] for j in range(t.nodes)] for i in range(t.nodes)])
    np.testing.assert_array_equal(hops, expected)
    assert t.diameter == nx.diameter(g)


@settings(max_examples=80, deadline=None)
@given(small_tori(), st.data())
def test_hops_symmetric_and_triangle_inequality(t, data):
    node = st.integers(0, t.nodes - 1)
    a, b, c = (np.array([data.draw(node)]) for _ in range(3))
    assert t.hops(a, b)[0] == t.hops(b, a)[0]
    assert t.hops(a, a)[0] == 0
    assert t.hops(a, c)[0] <= t.hops(a, b)[0] + t.hops(b, c)[0]
    assert t.hops(a, b)[0] <= t.diameter


def test_displacement_tie_goes_plus_and_short_way_round():
    ring4 = Torus((4,), (True,))
    assert ring4.displacement([0, 2, 0, 0], [2, 0, 3, 1]).ravel().tolist() == [2, 2, -1, 1]
    ring5 = Torus((5,), (True,))
    assert ring5.displacement([0, 0], [3, 2]).ravel().tolist() == [-2, 2]
    mesh4 = Torus((4,), (False,))
    assert mesh4.displacement([3], [0]).ravel().tolist() == [-3]


# ------------------------------------------------------------------ bisection


def brute_force_bisection(t):
    """Fewest cables between two halves of equal size, over every balanced split."""
    g = t.to_networkx()
    edges = np.array([(a, b) for a, b in g.edges()], dtype=np.int64).reshape(-1, 2)
    n = t.nodes
    best = None
    for rest in itertools.combinations(range(1, n), n // 2 - 1):   # node 0 on side A
        side = np.zeros(n, dtype=bool)
        side[0] = True
        side[list(rest)] = True
        cut = int((side[edges[:, 0]] != side[edges[:, 1]]).sum())
        best = cut if best is None else min(best, cut)
    return best


@pytest.mark.parametrize("shape, wrap, expected", [
    ((8,), (True,), 2),
    ((8,), (False,), 1),
    ((4, 4), (True, True), 8),
    ((4, 4), (False, False), 4),
    ((2,), (True,), 2),                 # two cables between the two nodes
    ((2,), (False,), 1),
    ((2, 2), (True, True), 4),
    ((3, 4), (False, True), 6),         # only axis 1 can be halved: 3 lines x 2 cuts
    ((2, 6), (False, True), 4),         # axis 0: 6 lines x 1 cut; axis 1: 2 lines x 2 cuts
])
def test_bisection_closed_forms(shape, wrap, expected):
    assert Torus(shape, wrap).bisection_links() == expected


def test_bisection_without_an_even_axis_is_zero():
    assert Torus((3,), (True,)).bisection_links() == 0
    assert Torus((3, 5), (True, False)).bisection_links() == 0


@pytest.mark.parametrize("shape, wrap", [
    ((8,), (True,)), ((8,), (False,)), ((4, 4), (True, True)), ((4, 4), (False, False)),
    ((2, 2), (True, True)), ((2, 2, 2), (True, False, True)), ((2, 4), (True, True)),
    ((3, 4), (False, True)), ((2, 3), (False, False)), ((2, 6), (False, True)),
    ((6,), (True,)), ((4, 3), (True, True)),
])
def test_bisection_equals_brute_force_where_an_axis_cut_is_optimal(shape, wrap):
    t = Torus(shape, wrap)
    assert t.bisection_links() == brute_force_bisection(t)


def test_bisection_is_an_axis_cut_not_the_true_minimum():
    """The docstring promises the narrowest cut *along one axis*. On a 2 x 5 mesh the
    only halvable axis is the 2-long one (5 cables); a staircase cut does better (3).
    The function must report what it claims, and the brute force must be no worse."""
    t = Torus((2, 5), (False, False))
    assert t.bisection_links() == 5
    assert brute_force_bisection(t) == 3
    for shape, wrap in [((2, 3), (True, False)), ((2, 2, 3), (False, False, False))]:
        t = Torus(shape, wrap)
        assert brute_force_bisection(t) <= t.bisection_links()


def test_fugaku_bisection():
    # halvable axes: X (24, ring), Z (24, ring), a (2, mesh), c (2, mesh)
    n = FUGAKU.nodes
    assert FUGAKU.bisection_links() == min(n // 24 * 2, n // 2) == 13_248


def test_to_networkx_refuses_huge_shapes():
    with pytest.raises(ValueError, match="shape"):
        FUGAKU.to_networkx()
