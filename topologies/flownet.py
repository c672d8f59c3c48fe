"""Collectives priced on a fabric of routed flows: the part every flow-level network shares.

A ``FlowNetwork`` places a job's ranks (``placement(job)``: groups per parallel
dimension and the pieces they span) on a fabric (``fabric(job)``: the cost of a
phase of concurrent flows, and a cheap bound on it) and answers the
``NetworkModel`` questions by running ``topologies.collectives`` algorithms as
phases. Every algorithm's time is linear in the message size, ``a + b S``, so its
coefficients are computed once per (collective, dimension, job).

Latencies: a step inside a collective costs ``put_latency_s`` between nodes (plus
``hop_latency_s`` per hop) or ``intra_node_latency_s`` inside a node; a
point-to-point message costs ``mpi_latency_s``.

Reductions: with ``reduce_bandwidth`` set, each byte a rank reduces (a phase's
``reduces`` flows, each its fraction of S) costs ``3 / reduce_bandwidth`` seconds
after it arrives: the operator reads the received and the local buffer and writes
the sum, at the memory bandwidth of the one thread an MPI library reduces on
(STREAM's convention: three arrays moved). Without it (GPU libraries reduce in
kernels pipelined with the transfers) reductions are free.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fpcore.caches import cached, register

from .collectives import algorithms
from .interface import COLLECTIVES, CollectiveCost, JobShape, library


@dataclass(frozen=True)
class Linear:
    """Time of one algorithm: ``latency + per_byte * S`` seconds."""

    latency: float
    per_byte: float

    def time(self, nbytes: float) -> float:
        return self.latency + self.per_byte * nbytes if nbytes > 0 else self.latency


class FlowNetwork(ABC):
    """Base of the flow-level models; subclasses give placement() and fabric()."""

    put_latency_s: float
    mpi_latency_s: float
    intra_node_latency_s: float
    hop_latency_s: float = 0.0
    reduce_bandwidth: float | None = None
    algorithms: tuple[str, ...] | None = None
    name: str = "flow-level"

    def reduce_per_byte(self, phases) -> float:
        """Seconds per byte of S the algorithm's reductions cost on one rank."""
        if not self.reduce_bandwidth:
            return 0.0
        return sum(ph.reduces * ph.fraction for ph in phases) * 3.0 / self.reduce_bandwidth

    @abstractmethod
    def placement(self, job: JobShape):
        """Where the job's ranks run: groups(dim), pieces, node_of_rank."""

    @abstractmethod
    def fabric(self, job: JobShape):
        """The job's links: phase(src, dst, dim) and rate_bound(src, dst, dim)."""

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
        algs = library(_algorithms(self, op, dim, job), self.algorithms)
        order = sorted(algs, key=lambda a: algs[a].quick.time(nbytes))
        best_name, best = order[0], float("inf")
        for name in order:
            if algs[name].quick.time(nbytes) >= best:
                break
            bound = algs[name].bound(self, job, dim)
            if bound.time(nbytes) >= best:
                continue
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
    """One algorithm's phases and three prices, each computed when first needed:
    ``quick`` (exact latency, every byte at the best link or injection rate),
    ``bound`` (flows sharing a node pair or an injection port share them) and the
    routed ``exact`` cost. quick <= bound <= exact."""

    phases: list
    quick: Linear
    _bound: Linear | None = None
    _exact: Linear | None = None

    def bound(self, net: "FlowNetwork", job: JobShape, dim: str) -> Linear:
        if self._bound is None:
            per_byte = net.reduce_per_byte(self.phases)
            for ph in self.phases:
                if ph.fraction > 0:
                    _, rate = _rate_bound(net, job, dim, ph)
                    per_byte += ph.repeat * ph.fraction / rate
            self._bound = Linear(self.quick.latency, per_byte)
        return self._bound

    def exact(self, net: "FlowNetwork", job: JobShape, dim: str) -> Linear:
        if self._exact is None:
            latency, per_byte = 0.0, net.reduce_per_byte(self.phases)
            for ph in self.phases:
                cost = _phase_cost(net, job, dim, ph)
                latency += ph.repeat * _step_latency(net, ph, cost.intra, cost.max_hops)
                if ph.fraction > 0 and np.isfinite(cost.rate):
                    per_byte += ph.repeat * ph.fraction / cost.rate
            self._exact = Linear(latency, per_byte)
        return self._exact


def _step_latency(net: "FlowNetwork", phase, intra: bool, hops: int) -> float:
    if phase.key[0] == "next":                      # point-to-point messages
        return net.mpi_latency_s + net.hop_latency_s * hops
    if intra:
        return net.intra_node_latency_s
    return net.put_latency_s + net.hop_latency_s * hops


@cached("flows", maxsize=4096)
def _algorithms(net: "FlowNetwork", op: str, dim: str, job: JobShape) -> dict[str, _Algorithm]:
    placement = net.placement(job)
    fabric = net.fabric(job)
    nodes = placement.node_of_rank
    pieces = [n for _, n in placement.pieces[dim]]
    out = {}
    intra_of: dict[tuple, bool] = {}
    for name, phases in algorithms(op, placement.groups(dim), pieces).items():
        latency, per_byte = 0.0, net.reduce_per_byte(phases)
        for ph in phases:
            if ph.key not in intra_of:
                intra_of[ph.key] = bool(np.all(nodes[ph.src] == nodes[ph.dst]))
            intra = intra_of[ph.key]
            latency += ph.repeat * _step_latency(net, ph, intra, 0 if intra else 1)
            per_byte += ph.repeat * ph.fraction / fabric.best_rate(intra)
        out[name] = _Algorithm(phases, Linear(latency, per_byte))
    return out


# Per network, {(job, dim, pattern): routed PhaseCost} and {...: (intra, rate bound)}.
# Keyed on the network itself, held weakly: its costs go when it does, and never reach
# another network (an object's ``id`` is given to a new one once the old is freed).
_PHASES = register("flows", weakref.WeakKeyDictionary())
_BOUNDS = register("flows", weakref.WeakKeyDictionary())
MAX_PATTERNS = 100_000     # flow patterns remembered per network before its store is emptied


def _memo(store, net: "FlowNetwork", job: JobShape, dim: str, phase, compute):
    """A flow pattern's cost on ``net``, computed once and shared by every collective
    that uses it (bounded: a network's store is emptied past MAX_PATTERNS patterns)."""
    costs = store.get(net)
    if costs is None:
        costs = store[net] = {}
    key = (job, dim, phase.key)
    value = costs.get(key)
    if value is None:
        if len(costs) >= MAX_PATTERNS:
            costs.clear()
        value = costs[key] = compute(phase.src, phase.dst, dim)
    return value


def _rate_bound(net: "FlowNetwork", job: JobShape, dim: str, phase) -> tuple[bool, float]:
    return _memo(_BOUNDS, net, job, dim, phase, net.fabric(job).rate_bound)


def _phase_cost(net: "FlowNetwork", job: JobShape, dim: str, phase):
    """Routed cost of a flow pattern."""
    return _memo(_PHASES, net, job, dim, phase, net.fabric(job).phase)
