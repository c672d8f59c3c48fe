"""Collectives as phases of routed flows: textbook cases, agreement, contention, choice."""

import math

import numpy as np
import pytest

from topologies import JobShape, group_geometry
from topologies.analytic import AlphaBetaTorus
from topologies.collectives import algorithms
from topologies.fabric import TofuFabric, _slices_alike
from topologies.fattree import FatTree
from topologies.switched import SwitchedNetwork
from topologies.tofu import TofuNetwork, _allocation
from topologies.allocation import MachineShape, parse_shape
from topologies.torus import Torus

from networks import INJ, INTRA, LINK, LOCAL, MPI, PUT, OneRing

def tofu(**kw):
    return TofuNetwork(link_bandwidth=LINK, injection_bandwidth=INJ, intra_node_bandwidth=INTRA,
                       put_latency_s=PUT, mpi_latency_s=MPI, intra_node_latency_s=LOCAL, **kw)


@pytest.mark.parametrize("n", [3, 8, 24])
def test_ring_allreduce_on_a_ring_is_the_textbook_formula(n):
    """2 (n-1)/n S / B + 2 (n-1) alpha: one flow per link, every step alike."""
    S = 64e6
    opts = OneRing(n).options("allreduce", "dp", JobShape(1, 1, n))
    assert opts["ring"].time(S) == pytest.approx(2 * (n - 1) / n * S / LINK + 2 * (n - 1) * PUT)
    # both directions of every link: half the time on the wire
    assert opts["bidirectional ring"].time(S) == pytest.approx(
        (n - 1) / n * S / LINK + 2 * (n - 1) * PUT)


def test_uncongested_flow_and_analytic_models_agree():
    """TP3 around the b ring of one Tofu unit: no two flows share a link."""
    net = tofu(shape=parse_shape("2x3x2"))
    job = JobShape(3, 1, 4)
    assert [a for a, _ in net.placement(job).pieces["tp"]] == ["b"]
    analytic = AlphaBetaTorus(latency_s=PUT, link_bandwidth=LINK, injection_bandwidth=INJ,
                              intra_node_bandwidth=INTRA)
    geometry = group_geometry(job, "tp")
    for S in (1e3, 1e6, 1e8):
        flow = net.options("allreduce", "tp", job)["bidirectional ring"].time(S)
        assert flow == pytest.approx(
            analytic.options("allreduce", geometry, S)["bidirectional ring"])
    # neighbours along b: point to point agrees too (MPI latency on both sides)
    ab = AlphaBetaTorus(MPI, LINK, INJ, INTRA)
    assert net.p2p("tp", job, 1e6).seconds == pytest.approx(ab.p2p("tp", job, 1e6).seconds)


def test_groups_that_share_links_are_slower_than_the_contention_free_model():
    net = tofu(shape=parse_shape("48x6x48:torus"))
    job = JobShape(6, 8, 288)
    ring = net.options("allreduce", "dp", job)["ring"]
    analytic = AlphaBetaTorus(PUT, LINK, INJ, INTRA, ring_links=1)
    free = analytic.group_collective("allreduce", group_geometry(job, "dp"),
                                     1e9)
    assert ring.time(1e9) > 2 * free.seconds       # rank-order DP rings pile 8 flows on Z links


@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce-scatter", "alltoall"])
@pytest.mark.parametrize("size", [8, 4096, 4 * 2**20, 1e9])
def test_the_chosen_algorithm_is_the_cheapest(op, size):
    net = tofu()
    job = JobShape(1, 1, 1536, 4)
    got = net.collective(op, "dp", job, size)
    opts = net.options(op, "dp", job)
    best = min(opts[a].time(size) for a in opts)
    # exact, except that a latency-bound message is priced without routing (< 1% off)
    assert got.seconds == pytest.approx(best, rel=0.01)
    assert opts[got.algorithm].time(size) <= best * 1.01


def test_small_messages_take_a_latency_algorithm_and_large_ones_a_bandwidth_one():
    net, job = tofu(), JobShape(1, 1, 1536, 4)
    assert "doubling" in net.collective("allreduce", "dp", job, 8).algorithm
    assert net.collective("allreduce", "dp", job, 2**30).algorithm in (
        "torus", "ring", "bidirectional ring")


@pytest.mark.parametrize("n", [4, 6, 12, 16, 96])
def test_every_allreduce_moves_the_bytes_its_algorithm_needs(n):
    groups = np.arange(n)[None, :]
    algs = algorithms("allreduce", groups, [n])
    moved = {name: sum(p.fraction * p.repeat for p in phases) for name, phases in algs.items()}
    assert moved["ring"] == pytest.approx(2 * (n - 1) / n)
    assert moved["bidirectional ring"] == pytest.approx((n - 1) / n)      # per direction
    pow2 = n & (n - 1) == 0
    fold = 0 if pow2 else 2
    m = 1 << (n.bit_length() - 1)
    assert moved["recursive halving-doubling"] == pytest.approx(fold + 2 * (1 - 1 / m))
    assert moved["recursive doubling"] == pytest.approx(fold + math.log2(m))


@pytest.mark.parametrize("n", [4, 6, 12, 16, 96])
@pytest.mark.parametrize("op", ["allreduce", "reduce-scatter", "allgather"])
def test_every_rank_reduces_what_its_algorithm_makes_it(n, op):
    """A reduce-scatter based algorithm reduces (n-1)/n of S per rank; recursive
    doubling all of S per step; gathering reduces nothing."""
    groups = np.arange(n)[None, :]
    pieces = [2, n // 2] if n % 2 == 0 else [n]
    algs = algorithms(op, groups, pieces)
    reduced = {name: sum(p.reduces * p.fraction for p in phases) for name, phases in algs.items()}
    if op == "allgather":
        assert set(reduced.values()) == {0.0}
        return
    for name in ("ring", "bidirectional ring", "torus"):
        if name in reduced:
            assert reduced[name] == pytest.approx((n - 1) / n), name
    pow2 = n & (n - 1) == 0
    m = 1 << (n.bit_length() - 1)
    if "recursive halving-doubling" in reduced:
        assert reduced["recursive halving-doubling"] == pytest.approx((0 if pow2 else 1)
                                                                      + 1 - 1 / m)
    if op == "allreduce":
        assert reduced["recursive doubling"] == pytest.approx((0 if pow2 else 1) + math.log2(m))


def test_reduction_arithmetic_adds_its_time_to_reducing_collectives_only():
    S, n, bw = 64e6, 8, 20e9
    plain, slow = OneRing(n), OneRing(n)
    slow.reduce_bandwidth = bw
    job = JobShape(1, 1, n)
    for op, reduced in (("allreduce", (n - 1) / n), ("reduce-scatter", (n - 1) / n),
                        ("allgather", 0.0)):
        extra = (slow.collective(op, "dp", job, S).seconds
                 - plain.collective(op, "dp", job, S).seconds)
        assert extra == pytest.approx(3 * reduced * S / bw, rel=1e-6, abs=1e-12), op
    analytic = AlphaBetaTorus(latency_s=PUT, link_bandwidth=LINK, injection_bandwidth=INJ,
                              intra_node_bandwidth=INTRA, reduce_bandwidth=bw)
    free = AlphaBetaTorus(latency_s=PUT, link_bandwidth=LINK, injection_bandwidth=INJ,
                          intra_node_bandwidth=INTRA)
    g = group_geometry(job, "dp")
    extra = (analytic.group_collective("allreduce", g, S).seconds
             - free.group_collective("allreduce", g, S).seconds)
    assert extra == pytest.approx(3 * (n - 1) / n * S / bw, rel=1e-6)


@pytest.mark.parametrize("shape,job,mapping", [
    ("48x6x48:torus", JobShape(6, 8, 288), "tofu"),
    ("8x12x4", JobShape(1, 1, 1536, 4), "tofu"),
    ("4x6x4", JobShape(4, 2, 48, 4), "tofu"),
    ("8x12x4", JobShape(6, 4, 16), "linear"),
    ("8x12x8", JobShape(1, 1, 768), "tofu"),        # dp on every axis: slices checked
    ("8x6x8", JobShape(2, 2, 96), "tofu"),
])
def test_symmetry_shortcut_is_exact(shape, job, mapping):
    net = tofu(shape=parse_shape(shape), strategy=mapping)
    pl = net.placement(job)
    fast = TofuFabric(pl, LINK, INJ, INTRA, symmetry=True)
    slow = TofuFabric(pl, LINK, INJ, INTRA, symmetry=False)
    for dim in ("tp", "dp", "pp"):
        groups = pl.groups(dim)
        pieces = [n for _, n in pl.pieces[dim]]
        op = "p2p" if dim == "pp" else "allreduce"
        if groups.shape[1] == 1:
            continue
        for phases in algorithms(op, groups, pieces).values():
            for ph in phases:
                assert fast.phase(ph.src, ph.dst, dim) == slow.phase(ph.src, ph.dst, dim)
                assert fast.rate_bound(ph.src, ph.dst, dim) == slow.rate_bound(ph.src, ph.dst, dim)
    if job.tp > 1 and mapping == "tofu":
        assert fast.slices_routed > 0      # TP patterns stay inside nodes and Tofu units


def test_a_phase_still_along_its_own_axes_routes_one_checked_slice():
    """A torus algorithm's line phase moves along one of the axes data parallelism
    is placed on: its slices are checked, found alike, and one is routed, for the
    same cost as routing every flow."""
    pl = tofu(shape=parse_shape("8x12x8")).placement(JobShape(1, 1, 768))
    fast = TofuFabric(pl, LINK, INJ, INTRA, symmetry=True)
    slow = TofuFabric(pl, LINK, INJ, INTRA, symmetry=False)
    pieces = [n for _, n in pl.pieces["dp"]]
    line, = [ph for ph in algorithms("allreduce", pl.groups("dp"), pieces)["torus"]
             if ph.key == ("torus", 3)]                  # the rings along Z (4 nodes)
    moves = np.any(pl.torus.coords(pl.node_of_rank[line.src])
                   != pl.torus.coords(pl.node_of_rank[line.dst]), axis=0)
    assert list(moves) == [name == "Z" for name in pl.torus.names]
    assert {a for a, _ in pl.pieces["dp"]} == set(pl.torus.names)     # dp on every axis
    assert fast.phase(line.src, line.dst, "dp") == slow.phase(line.src, line.dst, "dp")
    assert fast.rate_bound(line.src, line.dst, "dp") == slow.rate_bound(line.src, line.dst,
                                                                         "dp")
    assert fast.slices_routed == 1


def test_slices_alike_only_when_each_slice_holds_the_same_flows():
    """Slices {A, B}, {A, A}, {B, B} hold A and B three times each, as three copies of
    slice 0 would: alike in total, not slice by slice (the middle one loads its
    links twice), so they must be routed whole."""
    t = Torus((4, 3), (True, True))
    still = np.array([False, True])                  # flows move along axis 0 only

    def flows(*per_slice):
        cs = [(x, y) for y, fl in enumerate(per_slice) for x, _ in fl]
        disp = [(d, 0) for fl in per_slice for _, d in fl]
        return np.array(cs, dtype=np.int16), np.array(disp, dtype=np.int64)
    a, b = (0, 1), (1, 1)
    assert _slices_alike(t, *flows([a, b], [a, b], [b, a]), still)
    assert not _slices_alike(t, *flows([a, b], [a, a], [b, b]), still)
    assert not _slices_alike(t, *flows([a, b], [a], [b, a, b]), still)


def test_lower_bounds_never_exceed_the_routed_cost():
    from topologies.flownet import _algorithms
    net = tofu(shape=parse_shape("48x6x48:torus"))
    job = JobShape(6, 8, 288)
    for op, dim in [("allreduce", "dp"), ("allreduce", "tp"), ("allgather", "dp")]:
        for alg in _algorithms(net, op, dim, job).values():
            quick, bound, exact = alg.quick, alg.bound(net, job, dim), alg.exact(net, job, dim)
            assert quick.latency <= bound.latency <= exact.latency * (1 + 1e-12)
            assert quick.per_byte <= bound.per_byte * (1 + 1e-12)
            assert bound.per_byte <= exact.per_byte * (1 + 1e-12)


def test_a_node_count_no_box_holds_gets_the_next_box():
    assert _allocation(MachineShape(), 348).nodes == 360      # 29 Tofu units: 29 is prime
    assert tofu().placement(JobShape(1, 1, 348)).strategy == "linear"


def test_switched_cluster_uses_nvswitch_inside_and_rails_across_nodes():
    net = SwitchedNetwork(FatTree(nodes=1, nic_bandwidth=25e9), put_latency_s=5e-6,
                          mpi_latency_s=5e-6, intra_node_latency_s=2e-6)
    job = JobShape(8, 1, 32, ranks_per_node=8)
    tp = net.options("allreduce", "tp", job)["ring"]
    assert tp.per_byte == pytest.approx(2 * 7 / 8 / 300e9)
    dp = net.options("allreduce", "dp", job)["ring"]
    assert dp.per_byte == pytest.approx(2 * 31 / 32 / 25e9)       # one rail NIC per GPU
    with pytest.raises(ValueError, match="ppn"):
        net.placement(JobShape(8, 1, 4, ranks_per_node=4))


# --- costs belong to their network ----------------------------------------------------------

def _ring_allreduce_s(link_bandwidth):
    """A DP allreduce on one 2x3x2 Tofu unit, 64 MB per rank, on links of ``link_bandwidth``."""
    net = TofuNetwork(link_bandwidth=link_bandwidth, injection_bandwidth=INJ,
                      intra_node_bandwidth=INTRA, put_latency_s=PUT, mpi_latency_s=MPI,
                      intra_node_latency_s=LOCAL, shape=parse_shape("2x3x2"))
    return net.collective("allreduce", "dp", JobShape(3, 1, 4), 64e6).seconds


def _forget_networks():
    """What an LRU cache does when it evicts networks: nothing holds them any more."""
    import gc
    from topologies.flownet import _algorithms
    from topologies.tofu import _placement
    _algorithms.cache_clear()
    _placement.cache_clear()
    gc.collect()


def test_a_network_made_after_another_is_freed_is_priced_at_its_own_links(monkeypatch):
    """The slower network may be given the freed network's ``id`` (forced here: every
    object gets the same one); it must still cost its own, doubled, transfer time."""
    import topologies.flownet as flownet
    monkeypatch.setattr(flownet, "id", lambda obj: 0, raising=False)
    _forget_networks()
    fast = _ring_allreduce_s(LINK)
    _forget_networks()
    slow = _ring_allreduce_s(LINK / 2)
    assert slow > 1.9 * fast
    _forget_networks()
    assert _ring_allreduce_s(LINK) == fast


def test_networks_made_and_dropped_in_turn_keep_their_own_costs():
    """Networks created and evicted one after another, as the estimator's caches do,
    reuse freed memory (and so ids); each is priced at its own link bandwidth."""
    times = {}
    for i in range(40):
        link = LINK if i % 2 else LINK / 2
        times.setdefault(link, set()).add(_ring_allreduce_s(link))
        _forget_networks()
    assert len(times[LINK]) == len(times[LINK / 2]) == 1
    assert times[LINK / 2].pop() > 1.9 * times[LINK].pop()
