"""The flow-level Tofu network model: allocation, placement, routed and shared links.

It answers the same questions as the alpha-beta model (``NetworkModel``), on the
job's real shape: the node count is allocated as Fugaku's scheduler would (or a
given shape is used), ranks are placed by a named strategy, each collective is
run as phases of routed flows on all groups of the dimension at once, and the
cheapest algorithm is chosen and named. Every algorithm's time is linear in the
message size, ``a + b S``, so its two coefficients are computed once per
(collective, dimension, job) and any size is then priced by arithmetic.

Latencies: a step inside a collective is an RDMA put (the measured 8-byte put
latency), plus a per-hop latency (not published; zero unless given), or, between
ranks of one node, one memory round trip; a point-to-point message pays the full
MPI send/receive latency (the measured ping-pong latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .allocation import AXES, TOFU_WRAP, JobAllocation, MachineShape, allocate, wrap_for
from .collectives import algorithms
from .fabric import TofuFabric
from .interface import COLLECTIVES, CollectiveCost, JobShape
from .mapping import Placement, place
from .torus import Torus


@dataclass(frozen=True)
class Linear:
    """Time of one algorithm: ``latency + per_byte * S`` seconds."""

    latency: float
    per_byte: float

    def time(self, nbytes: float) -> float:
        return self.latency + self.per_byte * nbytes if nbytes > 0 else self.latency


@dataclass(frozen=True, eq=False)
class TofuNetwork:
    link_bandwidth: float            # bytes/s per link direction, sustained
    injection_bandwidth: float       # bytes/s per node over all its TNIs, sustained
    intra_node_bandwidth: float      # bytes/s per rank between CMGs
    put_latency_s: float             # one collective step between nodes
    mpi_latency_s: float             # one point-to-point message
    intra_node_latency_s: float      # one collective step inside a node
    hop_latency_s: float = 0.0
    machine: MachineShape = field(default_factory=MachineShape)
    machine_wrap: tuple[bool, ...] = TOFU_WRAP
    job_torus: bool = True
    strategy: str = "tofu"
    shape: JobAllocation | None = None      # a given job shape instead of the allocator's
    name: str = "tofu flow-level"

    # ---------------------------------------------------------------- placement
    def allocation(self, nodes: int) -> JobAllocation:
        if self.shape is not None:
            if nodes > self.shape.nodes:
                raise ValueError(f"nodes: the job needs {nodes:,} nodes but the given shape "
                                 f"{self.shape.describe()} has {self.shape.nodes:,}")
            return self.shape
        return _allocation(self.machine, nodes)

    def placement(self, job: JobShape) -> Placement:
        return _placement(self, job)

    def fabric(self, job: JobShape) -> TofuFabric:
        return TofuFabric(self.placement(job), self.link_bandwidth, self.injection_bandwidth,
                          self.intra_node_bandwidth)

    # ---------------------------------------------------------------- costs
    def options(self, op: str, dim: str, job: JobShape) -> dict[str, Linear]:
        """Every algorithm for ``op`` on ``dim``'s groups, as a + b S (all routed)."""
        return {name: alg.exact(self, job, dim) for name, alg in _algorithms(self, op, dim, job).items()}

    def collective(self, op: str, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        """The cheapest algorithm for this size. Algorithms are tried in order of a
        lower bound (exact latency, bytes at the best rate any flow could get) and
        routed only while the bound is below the best time found; a message too
        small for its transfer time to matter is priced from the latency alone."""
        if op not in COLLECTIVES:
            raise ValueError(f"unknown collective {op!r}; known: {', '.join(COLLECTIVES)}")
        if op == "p2p":
            return self.p2p(dim, job, nbytes)
        algs = _algorithms(self, op, dim, job)
        order = sorted(algs, key=lambda a: algs[a].bound.time(nbytes))
        best_name, best = order[0], float("inf")
        for name in order:
            bound = algs[name].bound
            if bound.time(nbytes) >= best:
                break
            if self.hop_latency_s == 0 and 1000 * bound.per_byte * nbytes < 0.01 * bound.latency:
                # latency-bound: the latency is exact without routing, and even a
                # thousand times the bound's transfer time is under 1% of it
                t = bound.time(nbytes)
            else:
                t = algs[name].exact(self, job, dim).time(nbytes)
            if t < best:
                best_name, best = name, t
        return CollectiveCost(best, best_name, nbytes)

    def p2p(self, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        (name, alg), = _algorithms(self, "p2p", dim, job).items()
        return CollectiveCost(alg.exact(self, job, dim).time(nbytes), name, nbytes)


@dataclass
class _Algorithm:
    """One algorithm's phases, its lower bound, and (once routed) its exact cost."""

    phases: list
    latency: float          # exact: steps x their latency (hop latency at one hop)
    bound: Linear
    _exact: Linear | None = None

    def exact(self, net: "TofuNetwork", job: JobShape, dim: str) -> Linear:
        if self._exact is None:
            latency = per_byte = 0.0
            for ph in self.phases:
                cost = _phase_cost(net, job, dim, ph)
                latency += ph.repeat * _step_latency(net, ph, cost.intra, cost.max_hops)
                if ph.fraction > 0 and np.isfinite(cost.rate):
                    per_byte += ph.repeat * ph.fraction / cost.rate
            self._exact = Linear(latency, per_byte)
        return self._exact


@lru_cache(maxsize=1024)
def _allocation(m: MachineShape, nodes: int) -> JobAllocation:
    """The smallest box the allocator gives that holds ``nodes`` nodes: a whole
    number of allocation units, grown unit by unit while no box of that size fits
    the machine (e.g. 29 Tofu units: 29 is prime and larger than any axis)."""
    from .allocation import AllocationError
    n, first_error = nodes, None
    while n <= m.nodes:
        unit = m.unit_nodes if n <= m.large_threshold else m.large_unit_nodes
        n = -(-n // unit) * unit
        try:
            return allocate(n, m)
        except AllocationError as e:
            first_error = first_error or e
            n += unit
    raise first_error or AllocationError("nodes", f"{nodes:,} nodes do not fit the machine")


@lru_cache(maxsize=512)
def _placement(net: TofuNetwork, job: JobShape) -> Placement:
    alloc = net.allocation(job.nodes)
    wrap = wrap_for(alloc, net.machine_wrap, net.job_torus, net.machine)
    torus = Torus(alloc.shape, wrap, AXES)
    if job.nodes != torus.nodes:
        # The job uses part of its allocation (its node count is not a whole number
        # of allocation units): ranks go on the first nodes in linear order, and the
        # flows are still routed on the allocated shape.
        return place(job, torus, "linear", note=f"the job uses {job.nodes:,} of the "
                                                f"{torus.nodes:,} allocated nodes")
    return place(job, torus, net.strategy)


def _step_latency(net: TofuNetwork, phase, intra: bool, hops: int) -> float:
    if phase.key[0] == "next":                      # point-to-point messages
        return net.mpi_latency_s + net.hop_latency_s * hops
    if intra:
        return net.intra_node_latency_s
    return net.put_latency_s + net.hop_latency_s * hops


@lru_cache(maxsize=4096)
def _algorithms(net: TofuNetwork, op: str, dim: str, job: JobShape) -> dict[str, _Algorithm]:
    placement = net.placement(job)
    nodes = placement.node_of_rank
    pieces = [n for _, n in placement.pieces[dim]]
    out = {}
    bounds: dict[tuple, tuple[bool, float]] = {}
    for name, phases in algorithms(op, placement.groups(dim), pieces).items():
        latency = per_byte = 0.0
        for ph in phases:
            if ph.key not in bounds:
                bounds[ph.key] = _rate_bound(net, nodes, ph)
            intra, best_rate = bounds[ph.key]
            latency += ph.repeat * _step_latency(net, ph, intra, 0 if intra else 1)
            per_byte += ph.repeat * ph.fraction / best_rate
        out[name] = _Algorithm(phases, latency, Linear(latency, per_byte))
    return out


def _rate_bound(net: TofuNetwork, nodes: np.ndarray, phase) -> tuple[bool, float]:
    """(all flows inside nodes, a rate the slowest flow cannot beat), without routing.

    Flows between the same two nodes take the same dimension-order route, so they
    share all its links; flows leaving one node share its injection bandwidth."""
    if not len(phase.src):
        return True, float("inf")
    s, d = nodes[phase.src], nodes[phase.dst]
    inter = s != d
    if not inter.any():
        per_rank = max(np.bincount(phase.src).max(), np.bincount(phase.dst).max())
        return True, net.intra_node_bandwidth / per_rank
    s, d = s[inter], d[inter]
    pairs = np.unique(s * (int(nodes.max()) + 1) + d, return_counts=True)[1].max()
    out = np.bincount(s).max()
    return False, min(net.link_bandwidth / pairs, net.injection_bandwidth / out)


_PHASES: dict = {}


def _phase_cost(net: TofuNetwork, job: JobShape, dim: str, phase):
    """Routed cost of a flow pattern, shared by every collective that uses it."""
    key = (id(net), job, dim, phase.key)
    cost = _PHASES.get(key)
    if cost is None:
        if len(_PHASES) > 100_000:
            _PHASES.clear()
        cost = _PHASES[key] = net.fabric(job).phase(phase.src, phase.dst)
    return cost
