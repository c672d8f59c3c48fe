"""Two streams of collectives at once: how fast each runs while the other does.

A collective's price (topologies.flownet) assumes it has the fabric to itself, all
the groups of its dimension moving together. In a training step two streams
overlap: a stage's data-parallel reductions or weight gathers run beside its
tensor-parallel collectives and its pipeline sends. Where their flows cross the
same links (a node's injection, a torus link, an intra-node port) they share them.

A stream is a collective (``Stream``: operation, dimension, message size). The
algorithm it runs is the one the network chose for that size, and the phase its
bytes spend longest in stands for it (its *dominant* phase). The two dominant
phases' flows are routed together and shared max-min (topologies.flows); a
stream's *share* is its slowest flow's rate together over its rate alone (1: no
link in common). Only the transfer slows: of a collective's time ``T``, the part
``beta T`` its bytes spend on links is stretched by ``1 / share``, its latency and
its reductions' arithmetic are not. So while both run, a stream's whole collective
advances at

    speed = 1 / ((1 - beta) + beta / share)

seconds of its own (alone) time per second. When one stream finishes, the other
goes back to speed 1: the bandwidth a finished flow frees goes to the others, as
in ``topologies.flows.flow_completions``, at the granularity of streams (the DES
runs this, perfmodel.des).

Simplifications, stated: the dominant phase stands for the whole algorithm; both
streams are taken at full strength (every group of each dimension moving, as each
is priced alone) whenever they overlap.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from fpcore.caches import register

from .flownet import FlowNetwork, _algorithms, _phase_cost
from .flows import max_min_rates
from .interface import JobShape


@dataclass(frozen=True)
class Stream:
    """One collective a stream runs: ``op`` over dimension ``dim``'s groups, ``nbytes``
    per rank (``op`` "p2p": a send to the next rank of ``dim``)."""

    op: str
    dim: str
    nbytes: float


def speeds(network, job: JobShape, a: Stream, b: Stream) -> tuple[float, float]:
    """(speed of ``a``, speed of ``b``) while both run: seconds of each one's own time
    per second (1: unslowed). A network that does not route flows shares nothing."""
    if not isinstance(network, FlowNetwork) or a.nbytes <= 0 or b.nbytes <= 0:
        return 1.0, 1.0
    pa, beta_a = _dominant(network, job, a)
    pb, beta_b = _dominant(network, job, b)
    if pa is None or pb is None:
        return 1.0, 1.0
    share_a, share_b = _shares(network, job, (a.dim, pa), (b.dim, pb))
    return _speed(beta_a, share_a), _speed(beta_b, share_b)


def _speed(beta: float, share: float) -> float:
    return 1.0 / ((1.0 - beta) + beta / share) if share > 0 else 0.0


def _dominant(net: FlowNetwork, job: JobShape, s: Stream):
    """(the phase ``s``'s bytes spend longest in, the share of its time on links)."""
    cost = net.p2p(s.dim, job, s.nbytes) if s.op == "p2p" else \
        net.collective(s.op, s.dim, job, s.nbytes)
    algorithm = _algorithms(net, s.op, s.dim, job)[cost.algorithm]
    best, longest, transfer = None, 0.0, 0.0
    for ph in algorithm.phases:
        if ph.fraction <= 0:
            continue
        rate = _phase_cost(net, job, s.dim, ph).rate
        if not np.isfinite(rate):
            continue
        t = ph.repeat * ph.fraction * s.nbytes / rate
        transfer += t
        if t > longest:
            best, longest = ph, t
    if best is None or cost.seconds <= 0:
        return None, 0.0
    return best, min(1.0, transfer / cost.seconds)


# Per network, {(job, (dim, phase key), (dim, phase key)): shares}; held weakly, as
# flownet's stores (a phase's key names its pattern, the dimension its groups).
_SHARES = register("flows", weakref.WeakKeyDictionary())


def _shares(net: FlowNetwork, job: JobShape, a, b) -> tuple[float, float]:
    """Each phase's slowest flow, routed together with the other's and shared
    max-min, over its slowest alone (the least capacity / flows of a link it uses:
    the first level of progressive filling); ``a`` and ``b`` are (dimension, phase)."""
    (da, pa), (db, pb) = a, b
    store = _SHARES.get(net)
    if store is None:
        store = _SHARES[net] = {}
    key = (job, da, pa.key, db, pb.key)
    if key not in store:
        fabric = net.fabric(job)
        ptr, links, capacity = fabric.routes(np.concatenate((pa.src, pb.src)),
                                             np.concatenate((pa.dst, pb.dst)))
        together = max_min_rates(ptr, links, capacity)
        n = len(pa.src)
        cut = ptr[n]
        alone_a = _slowest_alone(links[:cut], capacity)
        alone_b = _slowest_alone(links[cut:], capacity)
        store[key] = (_ratio(together[:n].min(), alone_a), _ratio(together[n:].min(), alone_b))
    return store[key]


def _slowest_alone(links: np.ndarray, capacity: np.ndarray) -> float:
    if not links.size:
        return np.inf
    used = np.unique(links, return_counts=True)
    return float((capacity[used[0]] / used[1]).min())


def _ratio(together: float, alone: float) -> float:
    if not np.isfinite(alone):
        return 1.0
    return min(1.0, float(together) / alone)
