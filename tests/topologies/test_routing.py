"""Dimension-order routes, checked hop by hop with the link-id encoding decoded by hand.

A link id is (node * ndim + axis) * 2 + direction; decoding it and following
``neighbour`` must walk from the source to the destination along existing links,
one axis at a time, in as many hops as the torus distance.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.routing import link_loads, route
from topologies.torus import MINUS, PLUS, Torus

FUGAKU = Torus((24, 23, 24, 2, 3, 2), (True, True, True, False, True, False),
               ("X", "Y", "Z", "a", "b", "c"))

SHAPES = [
    FUGAKU,
    Torus((4,), (True,)),
    Torus((5,), (False,)),
    Torus((3, 4, 2), (True, False, True)),
    Torus((2, 2, 3), (False, True, True)),
    Torus((6, 1, 5), (True, True, False)),
    Torus((2, 3, 4, 5), (True, True, False, True)),
]


def decode(t, link):
    node, rest = divmod(int(link), t.ndim * 2)
    axis, d = divmod(rest, 2)
    return node, axis, d


def far_end(t, link):
    node, axis, d = decode(t, link)
    return int(t.neighbour(np.array([node]), axis, d)[0])


@st.composite
def flows(draw):
    t = draw(st.sampled_from(SHAPES))
    n = draw(st.integers(1, 12))
    node = st.integers(0, t.nodes - 1)
    src = draw(st.lists(node, min_size=n, max_size=n))
    dst = draw(st.lists(node, min_size=n, max_size=n))
    return t, np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64)


@settings(max_examples=80, deadline=None)
@given(flows())
def test_routes_walk_existing_links_from_src_to_dst(case):
    t, src, dst = case
    ptr, links = route(t, src, dst)
    assert ptr.shape == (len(src) + 1,) and ptr[0] == 0 and ptr[-1] == len(links)
    np.testing.assert_array_equal(np.diff(ptr), t.hops(src, dst))
    assert t.link_exists[links].all()
    for i in range(len(src)):
        here = int(src[i])
        axes = []
        for link in links[ptr[i]:ptr[i + 1]]:
            node, axis, _ = decode(t, link)
            assert node == here                  # link i+1 starts where link i ends
            axes.append(axis)
            here = far_end(t, link)
            assert here >= 0
        assert here == dst[i]
        assert axes == sorted(axes)              # dimension order


@settings(max_examples=40, deadline=None)
@given(flows())
def test_route_lengths_are_symmetric(case):
    t, src, dst = case
    fwd, _ = route(t, src, dst)
    back, _ = route(t, dst, src)
    np.testing.assert_array_equal(np.diff(fwd), np.diff(back))


def test_route_on_an_odd_ring_is_the_reverse_twin_of_its_return():
    t = Torus((5,), (True,))
    ptr, fwd = route(t, [1], [4])                # 1 -> 0 -> 4, "-" twice
    assert fwd.tolist() == [Torus.link_id(1, 0, MINUS, 1), Torus.link_id(0, 0, MINUS, 1)]
    _, back = route(t, [4], [1])                 # 4 -> 0 -> 1, "+" twice
    assert back.tolist() == [Torus.link_id(4, 0, PLUS, 1), Torus.link_id(0, 0, PLUS, 1)]


def test_tie_half_way_round_an_even_ring_goes_plus():
    t = Torus((4,), (True,))
    ptr, links = route(t, [0], [2])
    assert ptr.tolist() == [0, 2]
    assert links.tolist() == [0, 2]              # node 0 "+", then node 1 "+"
    assert [decode(t, x)[2] for x in links] == [PLUS, PLUS]
    _, back = route(t, [2], [0])                 # the tie also goes "+" on the way back
    assert [decode(t, x) for x in back] == [(2, 0, PLUS), (3, 0, PLUS)]


def test_route_explicit_2d_example():
    t = Torus((3, 4), (False, True))
    # (0, 3) -> (2, 0): axis 0 "+" twice, then axis 1 wraps "+" once
    src, dst = t.ids([[0, 3]]), t.ids([[2, 0]])
    _, links = route(t, src, dst)
    assert [decode(t, x) for x in links] == [(3, 0, PLUS), (7, 0, PLUS), (11, 1, PLUS)]


def test_empty_and_self_flows():
    t = Torus((3, 3), (True, True))
    ptr, links = route(t, [], [])
    assert ptr.tolist() == [0] and links.size == 0
    ptr, links = route(t, [4, 4], [4, 5])
    assert ptr.tolist() == [0, 0, 1]


# ------------------------------------------------------------------ link loads


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_ring_shift_loads_every_plus_link_once(n):
    t = Torus((n,), (True,))
    src = np.arange(n)
    loads = link_loads(t, src, (src + 1) % n, 1.0).reshape(n, 1, 2)
    assert loads.shape == (n, 1, 2)
    assert (loads[:, 0, PLUS] == 1).all()
    assert (loads[:, 0, MINUS] == 0).all()


@pytest.mark.parametrize("n", [2, 3, 6])
def test_mesh_shift_loads_every_plus_link_once(n):
    t = Torus((n,), (False,))
    src = np.arange(n - 1)
    loads = link_loads(t, src, src + 1, 1.0).reshape(n, 2)
    assert loads[:, PLUS].tolist() == [1.0] * (n - 1) + [0.0]     # no "+" link at the top
    assert (loads[:, MINUS] == 0).all()


@settings(max_examples=50, deadline=None)
@given(flows(), st.data())
def test_total_load_is_hops_times_bytes(case, data):
    t, src, dst = case
    nbytes = np.array(data.draw(st.lists(st.integers(0, 10**6), min_size=len(src),
                                         max_size=len(src))), dtype=np.float64)
    loads = link_loads(t, src, dst, nbytes)
    assert loads.shape == (t.n_link_slots,)
    assert loads.sum() == pytest.approx(float((t.hops(src, dst) * nbytes).sum()))
    assert (loads[~t.link_exists] == 0).all()


def test_fugaku_all_nodes_shift_plus_x_without_contention():
    src = np.arange(FUGAKU.nodes)
    dst = FUGAKU.neighbour(src, 0, PLUS)
    loads = link_loads(FUGAKU, src, dst, 1.0)
    assert loads.max() == 1.0
    assert loads.sum() == FUGAKU.nodes
    np.testing.assert_array_equal(loads[Torus.link_id(src, 0, PLUS, FUGAKU.ndim)], 1.0)


def test_fugaku_longest_route_is_the_diameter():
    far = FUGAKU.ids([[12, 11, 12, 1, 1, 1]])
    ptr, links = route(FUGAKU, [0], far)
    assert ptr.tolist() == [0, 38]
    axes = [decode(FUGAKU, x)[1] for x in links]
    assert [axes.count(k) for k in range(6)] == [12, 11, 12, 1, 1, 1]
