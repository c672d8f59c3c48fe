"""An alpha-beta network model of a torus with a per-node injection limit.

Assumptions (the flow-level backend replaces them with routed, shared links):

* A group's ring follows nearest-neighbour links of the torus, so each ring step
  crosses one link; a bidirectional ring sends half the data each way, so a node
  drives two links at once: ring bandwidth is ``2 * link`` per rank.
* All groups of one dimension communicate at once; the ranks of a node share the
  node's injection bandwidth (``groups_per_node`` ways) and ring links.
* Members of a group on the same node talk over the intra-node links; a ring that
  spans nodes is limited by its inter-node hops.
* Latency per message step is ``alpha`` (the measured MPI zero-byte latency).
* With ``reduce_bandwidth``, each byte a rank reduces costs ``3 / reduce_bandwidth``
  (flownet's convention): (n-1)/n of S for the ring and halving algorithms,
  log2 n times S for recursive doubling.

Algorithms priced (the cheapest is chosen, as an MPI library does, and named):
ring and bidirectional ring (bandwidth-optimal), recursive doubling/halving
(latency-optimal, power-of-two groups), binomial tree (barrier), pairwise
exchange (all-to-all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .interface import (COLLECTIVES, CollectiveCost, GroupGeometry, JobShape, group_geometry,
                        library)


@dataclass(frozen=True)
class AlphaBetaTorus:
    latency_s: float                 # alpha: one message step
    link_bandwidth: float            # bytes/s of one link direction, sustained
    injection_bandwidth: float       # bytes/s a node can inject over all links
    intra_node_bandwidth: float      # bytes/s between ranks of one node
    ring_links: int = 2              # links a node drives in a bidirectional ring
    reduce_bandwidth: float | None = None   # bytes/s one rank reduces at (STREAM convention)
    algorithms: tuple[str, ...] | None = None   # the library's algorithms (None: any)
    name: str = "alpha-beta torus"

    def _bandwidth(self, g: GroupGeometry, links: int) -> float:
        """Bytes/s one rank of the group can send (its share of node and links)."""
        if g.nodes <= 1:
            return self.intra_node_bandwidth / max(1, g.groups_per_node)
        net = min(links * self.link_bandwidth, self.injection_bandwidth)
        return net / g.groups_per_node

    def collective(self, op: str, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        if op not in COLLECTIVES:
            raise ValueError(f"unknown collective {op!r}; known: {', '.join(COLLECTIVES)}")
        if op == "p2p":
            return self.p2p(dim, job, nbytes)
        g = group_geometry(job, dim)
        return self.group_collective(op, g, nbytes)

    def group_collective(self, op: str, g: GroupGeometry, nbytes: float) -> CollectiveCost:
        if g.size == 1:
            return CollectiveCost(0.0, "none (group of 1)", nbytes)
        options = library(self.options(op, g, nbytes), self.algorithms)
        best = min(options, key=options.get)
        return CollectiveCost(options[best], best, nbytes)

    def options(self, op: str, g: GroupGeometry, nbytes: float) -> dict[str, float]:
        """Seconds of every algorithm this model prices for ``op`` on group ``g``."""
        n, a = g.size, self.latency_s
        bw_ring = self._bandwidth(g, self.ring_links)
        bw_one = self._bandwidth(g, 1)
        frac = (n - 1) / n
        pow2 = n & (n - 1) == 0
        log_n = math.ceil(math.log2(n))
        red = 3.0 / self.reduce_bandwidth if self.reduce_bandwidth else 0.0   # s per byte
        options: dict[str, float] = {}
        if op == "allreduce":
            options["bidirectional ring"] = (2 * frac * nbytes / bw_ring + 2 * (n - 1) * a
                                             + frac * nbytes * red)
            if pow2:
                options["recursive halving-doubling"] = (2 * log_n * a + 2 * frac * nbytes / bw_one
                                                         + frac * nbytes * red)
            options["recursive doubling"] = log_n * (a + nbytes / bw_one + nbytes * red)
        elif op in ("allgather", "reduce-scatter"):
            red = red if op == "reduce-scatter" else 0.0
            options["bidirectional ring"] = frac * nbytes / bw_ring + (n - 1) * a + frac * nbytes * red
            if pow2:
                options["recursive " + ("doubling" if op == "allgather" else "halving")] = (
                    log_n * a + frac * nbytes / bw_one + frac * nbytes * red)
        elif op == "alltoall":
            options["pairwise exchange"] = (n - 1) * a + frac * nbytes / bw_one
        elif op == "barrier":
            options["dissemination"] = log_n * a
        return options

    def p2p(self, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        g = group_geometry(job, dim)
        if g.size == 1:
            return CollectiveCost(0.0, "none (group of 1)", nbytes)
        return CollectiveCost(self.latency_s + nbytes / self._bandwidth(g, 1), "direct", nbytes)
