"""The fitted alpha-beta network against the closed forms it claims to implement."""

import functools

import pytest

from fpcore.errors import SpecError
from topologies import CollectiveCost, JobShape
from topologies.analytic import AlphaBetaTorus
from topologies.fitted import FittedCollectives, collective_seconds
from topologies.interface import COLLECTIVES

FITS = (("allreduce", 2e-6, 10e9), ("allgather", 3e-6, 8e9),
        ("reduce-scatter", 4e-6, 6e9), ("p2p", 1e-6, 12e9))
NET = FittedCollectives(FITS)
S = 64 * 2**20


def closed_form(op: str, n: int, nbytes: float) -> float:
    """Thakur, Rabenseifner & Gropp 2005 ring costs, written out per operation."""
    alpha, bw = {o: (a, b) for o, a, b in FITS}[op if op != "alltoall" else "allgather"]
    if op == "allreduce":
        return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / bw
    if op == "p2p":
        return alpha + nbytes / bw
    return (n - 1) * alpha + (n - 1) / n * nbytes / bw


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("op", ["allreduce", "allgather", "reduce-scatter", "alltoall"])
def test_collectives_are_the_ring_closed_forms(op, n):
    cost = NET.collective(op, "dp", JobShape(tp=1, pp=1, dp=n), S)
    assert cost.seconds == pytest.approx(closed_form(op, n, S), rel=1e-12)
    assert cost.algorithm.startswith(f"fitted {op}")
    assert cost.nbytes == S


def test_n2_and_n4_by_hand():
    # allreduce n=4: 6 alpha + 1.5 S / bw; allgather n=2: alpha + S / (2 bw)
    assert NET.collective("allreduce", "tp", JobShape(4, 1, 1, 4), S).seconds == \
        pytest.approx(6 * 2e-6 + 1.5 * S / 10e9, rel=1e-12)
    assert NET.collective("allgather", "pp", JobShape(1, 2, 1), S).seconds == \
        pytest.approx(3e-6 + 0.5 * S / 8e9, rel=1e-12)


@pytest.mark.parametrize("n", [2, 4])
def test_p2p_is_latency_plus_size_over_bandwidth(n):
    job = JobShape(1, n, 1)
    assert NET.p2p("pp", job, S).seconds == pytest.approx(1e-6 + S / 12e9, rel=1e-12)
    assert NET.collective("p2p", "pp", job, S) == NET.p2p("pp", job, S)


@pytest.mark.parametrize("n", [2, 4])
def test_barrier_is_an_allreduce_of_nothing(n):
    cost = NET.collective("barrier", "dp", JobShape(1, 1, n), 12345)
    assert cost.seconds == pytest.approx(2 * (n - 1) * 2e-6, rel=1e-12)


@pytest.mark.parametrize("op", COLLECTIVES)
def test_a_group_of_one_is_free(op):
    assert NET.collective(op, "dp", JobShape(4, 2, 1), S).seconds == 0.0
    assert collective_seconds("allreduce", 1, S, 1.0, 1.0) == 0.0


def test_allgather_and_reduce_scatter_stand_in_for_each_other():
    only_rs = FittedCollectives((("reduce-scatter", 4e-6, 6e9),))
    job = JobShape(1, 1, 4)
    ag = only_rs.collective("allgather", "dp", job, S)
    assert ag.seconds == pytest.approx(only_rs.collective("reduce-scatter", "dp", job, S).seconds)
    assert ag.algorithm == "fitted allgather (reduce-scatter fit)"
    only_ag = FittedCollectives((("allgather", 3e-6, 8e9),))
    assert only_ag.collective("reduce-scatter", "dp", job, S).seconds == \
        pytest.approx(3 * 3e-6 + 0.75 * S / 8e9, rel=1e-12)
    assert only_ag.collective("alltoall", "dp", job, S).algorithm == \
        "fitted alltoall (pairwise exchange, allgather fit)"


@pytest.mark.parametrize("op, missing", [("p2p", "p2p"), ("allreduce", "allreduce"),
                                         ("barrier", "allreduce")])
def test_an_operation_without_a_fit_names_what_is_missing(op, missing):
    net = FittedCollectives((("allgather", 3e-6, 8e9),))
    with pytest.raises(ValueError, match=f"no fit for '{missing}'"):
        net.collective(op, "dp", JobShape(1, 1, 4), S)


def test_hashable_and_equal_whatever_the_order():
    shuffled = FittedCollectives(tuple(reversed(FITS)))
    assert shuffled == NET and hash(shuffled) == hash(NET)
    assert len({NET, shuffled, FittedCollectives(FITS[:1])}) == 2
    # lists are stored as tuples, so the model can key perfmodel's lru_caches
    listed = FittedCollectives([list(f) for f in FITS])
    assert listed == NET and hash(listed) == hash(NET)
    cached = functools.lru_cache(lambda net: net.name)
    assert cached(NET) == "fitted alpha-beta"


@pytest.mark.parametrize("fits, field", [
    ((("alltoall", 1e-6, 1e9),), "fits[0].op"),
    ((("p2p", -1e-6, 1e9),), "fits[0].alpha_s"),
    ((("p2p", 1e-6, 1e9), ("allreduce", 1e-6, 0.0)), "fits[1].bandwidth_bytes_per_s"),
    ((("p2p", 1e-6),), "fits[0]"),
    ((("p2p", 1e-6, 1e9), ("p2p", 2e-6, 1e9)), "fits"),
    ((), "fits"),
])
def test_bad_fits_are_refused_naming_the_field(fits, field):
    with pytest.raises(SpecError) as e:
        FittedCollectives(fits)
    assert e.value.field == field


def test_same_interface_as_the_alpha_beta_torus():
    torus = AlphaBetaTorus(latency_s=1e-6, link_bandwidth=6e9, injection_bandwidth=40e9,
                           intra_node_bandwidth=128e9)
    job = JobShape(tp=2, pp=2, dp=4, ranks_per_node=2)
    for net in (torus, NET):
        assert isinstance(net.name, str)
        for dim in ("tp", "dp", "pp"):
            for op in COLLECTIVES:
                cost = net.collective(op, dim, job, 1e6)
                assert isinstance(cost, CollectiveCost) and cost.nbytes == 1e6
                assert isinstance(cost.seconds, float) and cost.seconds > 0
            assert isinstance(net.p2p(dim, job, 1e6), CollectiveCost)
        with pytest.raises(ValueError):
            net.collective("broadcast", "dp", job, 1e6)


def test_agrees_with_the_torus_where_the_torus_runs_a_ring():
    """A fit with the torus's latency and ring bandwidth (two links) is the torus's ring."""
    torus = AlphaBetaTorus(latency_s=1e-6, link_bandwidth=6e9, injection_bandwidth=40e9,
                           intra_node_bandwidth=128e9)
    fitted = FittedCollectives((("allreduce", 1e-6, 12e9), ("allgather", 1e-6, 12e9)))
    job = JobShape(1, 1, 3)
    for op in ("allreduce", "allgather", "reduce-scatter"):
        ring = torus.collective(op, "dp", job, S)
        assert ring.algorithm == "bidirectional ring"
        assert fitted.collective(op, "dp", job, S).seconds == pytest.approx(ring.seconds,
                                                                            rel=1e-12)
