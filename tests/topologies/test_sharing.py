"""Two streams at once: every flow routed on the links a phase is priced on, and each
stream's speed beside the other, worked by hand."""

import numpy as np
import pytest

from topologies import JobShape
from topologies.allocation import parse_shape
from topologies.analytic import AlphaBetaTorus
from topologies.collectives import algorithms
from topologies.fattree import FatTree
from topologies.flows import max_min_rates
from topologies.sharing import Stream, speeds
from topologies.switched import SwitchedNetwork
from topologies.tofu import TofuNetwork

from networks import INJ, INTRA, LINK, LOCAL, MPI, PUT, OneRing


def tofu(shape):
    return TofuNetwork(link_bandwidth=LINK, injection_bandwidth=INJ, intra_node_bandwidth=INTRA,
                       put_latency_s=PUT, mpi_latency_s=MPI, intra_node_latency_s=LOCAL,
                       shape=parse_shape(shape))


def _transfer_share(net, job, stream):
    """beta: of the stream's collective time, the part its bytes spend on links (no
    reductions priced here: every per-byte second is a transfer)."""
    if stream.op == "p2p":
        line = next(iter(net.options("p2p", stream.dim, job).values()))
    else:
        chosen = net.collective(stream.op, stream.dim, job, stream.nbytes).algorithm
        line = net.options(stream.op, stream.dim, job)[chosen]
    return line.per_byte * stream.nbytes / line.time(stream.nbytes)


@pytest.mark.parametrize("shape, job, dim", [
    ("8x6x8:torus", JobShape(6, 4, 16), "dp"),
    ("8x6x8:torus", JobShape(6, 4, 16), "tp"),
    ("2x3x2", JobShape(3, 2, 2, ranks_per_node=4), "dp"),     # flows inside nodes too
])
def test_routes_price_a_phase_as_the_fabric_does(shape, job, dim):
    """The slowest flow's max-min rate on ``routes`` is the rate ``phase`` gives (the
    first level of progressive filling, from link loads on a routed slice)."""
    net = tofu(shape)
    fabric = net.fabric(job)
    placement = net.placement(job)
    pieces = [n for _, n in placement.pieces[dim]]
    for name, phases in algorithms("allreduce", placement.groups(dim), pieces).items():
        for ph in phases:
            if ph.fraction <= 0:
                continue
            ptr, links, capacity = fabric.routes(ph.src, ph.dst)
            slowest = max_min_rates(ptr, links, capacity).min()
            assert slowest == pytest.approx(fabric.phase(ph.src, ph.dst, dim).rate, rel=1e-12), \
                (name, ph.key)


def test_a_stream_beside_itself_gets_half_of_every_link():
    """Point-to-point sends around a ring, twice: two flows on every link, each at half
    the rate; only the bytes' part of the send slows, not its latency."""
    net, job = OneRing(6), JobShape(1, 6, 1)
    send = Stream("p2p", "pp", 8e6)
    beta = (8e6 / LINK) / (MPI + 8e6 / LINK)
    expected = 1.0 / ((1.0 - beta) + beta / 0.5)
    assert speeds(net, job, send, send) == pytest.approx((expected, expected), rel=1e-12)
    # a message of a few bytes is nearly all latency: it hardly slows
    tiny = Stream("p2p", "pp", 8.0)
    beta = (8.0 / LINK) / (MPI + 8.0 / LINK)
    assert speeds(net, job, tiny, tiny)[0] == pytest.approx(1.0 / (1.0 + beta), rel=1e-12)
    assert speeds(net, job, tiny, tiny)[0] > 0.998


def test_streams_on_different_axes_do_not_slow_each_other():
    """TP around the b ring of one Tofu unit, DP over a and c: no link in common, and
    two flows leave a node against an injection of six links' worth."""
    net, job = tofu("2x3x2"), JobShape(3, 1, 4)
    assert speeds(net, job, Stream("allreduce", "dp", 64e6),
                  Stream("allreduce", "tp", 64e6)) == (1.0, 1.0)


def test_pipeline_sends_and_the_gradient_ring_share_a_gpus_nic():
    """On a rail fat tree each GPU has one NIC: stage 0's sends to stage 1 and its ring
    step of the DP all-reduce both leave through it, so each gets half of it."""
    net = SwitchedNetwork(FatTree(nodes=1, nic_bandwidth=25e9), put_latency_s=5e-6,
                          mpi_latency_s=5e-6, intra_node_latency_s=2e-6)
    job = JobShape(8, 2, 4, ranks_per_node=8)
    reduce, send = Stream("allreduce", "dp", 100e6), Stream("p2p", "pp", 20e6)
    got = speeds(net, job, reduce, send)
    want = tuple(1.0 / ((1.0 - b) + b / 0.5) for b in (_transfer_share(net, job, reduce),
                                                        _transfer_share(net, job, send)))
    assert got == pytest.approx(want, rel=1e-9)
    assert all(s < 1 for s in got)


def test_a_network_that_routes_nothing_shares_nothing():
    net = AlphaBetaTorus(PUT, LINK, INJ, INTRA)
    assert speeds(net, JobShape(2, 2, 2), Stream("allreduce", "dp", 1e9),
                  Stream("p2p", "pp", 1e9)) == (1.0, 1.0)


def test_routes_of_a_fat_tree_are_its_own():
    net = SwitchedNetwork(FatTree(nodes=1, nic_bandwidth=25e9), put_latency_s=5e-6,
                          mpi_latency_s=5e-6, intra_node_latency_s=2e-6)
    job = JobShape(8, 1, 4, ranks_per_node=8)
    fabric = net.fabric(job)
    src, dst = np.arange(32), (np.arange(32) + 8) % 32
    ptr, links, capacity = fabric.routes(src, dst)
    assert max_min_rates(ptr, links, capacity).min() == pytest.approx(
        fabric.phase(src, dst).rate, rel=1e-12)


def test_stream_speeds_finish_where_flow_completions_do():
    """The check on the stream-level model: the two dominant phases' flows, each kind's
    bytes at once, through flow_completions (every flow re-solved as others finish).
    Each kind ends (its last flow) when the speeds say a pure transfer would: both at
    their share until the shorter is done, then the other alone."""
    from topologies.flows import flow_completions
    from topologies.sharing import _dominant
    net = SwitchedNetwork(FatTree(nodes=1, nic_bandwidth=25e9), put_latency_s=5e-6,
                          mpi_latency_s=5e-6, intra_node_latency_s=2e-6)
    job = JobShape(8, 2, 4, ranks_per_node=8)
    reduce, send = Stream("allreduce", "dp", 100e6), Stream("p2p", "pp", 20e6)
    (pa, beta_a), (pb, beta_b) = _dominant(net, job, reduce), _dominant(net, job, send)
    fabric = net.fabric(job)
    ptr, links, capacity = fabric.routes(np.concatenate((pa.src, pb.src)),
                                         np.concatenate((pa.dst, pb.dst)))
    xa, xb = 60e6, 10e6                                      # bytes per flow of each kind
    n = len(pa.src)
    finish, _ = flow_completions(ptr, links, capacity,
                                 np.r_[np.full(n, xa), np.full(len(pb.src), xb)])
    rate_a = fabric.phase(pa.src, pa.dst).rate
    rate_b = fabric.phase(pb.src, pb.dst).rate
    share_a, share_b = [1 / ((1 / s - (1 - b)) / b)
                        for s, b in zip(speeds(net, job, reduce, send), (beta_a, beta_b))]
    ta, tb = xa / rate_a, xb / rate_b                        # alone
    first = min(ta / share_a, tb / share_b)
    end_a = first + (ta - first * share_a) if ta / share_a > first else first
    end_b = first + (tb - first * share_b) if tb / share_b > first else first
    assert finish[:n].max() == pytest.approx(end_a, rel=1e-9)
    assert finish[n:].max() == pytest.approx(end_b, rel=1e-9)
