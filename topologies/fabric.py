"""The Tofu fabric seen by ranks: torus links, per-node injection, intra-node links.

Endpoints are ranks. A message between ranks on one node crosses the sender's and
receiver's inter-CMG ports; between nodes it enters the network through the
sending node's injection limit (its 6 TNIs together) and follows the
dimension-order route. Link ids: torus link slots first, then one injection link
per node, then one outgoing and one incoming intra-node port per rank.

The cost of a *phase* (many concurrent flows of equal size) is the size over the
rate of its slowest flow. Under max-min fair sharing that rate is the first level
of progressive filling, ``min over links of capacity / flows on the link``, so a
phase needs link loads, not the whole max-min solution (topologies.flows gives
per-flow rates when they are wanted). Symmetry: when a phase moves along some
axes only and its pattern repeats identically along the others, one slice of it
is routed and stands for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .flows import _ranges
from .mapping import Placement
from .routing import route
from .torus import Torus


SPLITS_KEPT = 32      # patterns whose split is kept (an algorithm's steps, at least)
_SPLITS: dict = {}    # (placement, src, dst ids, dim, symmetry) -> (placement, src, dst, split)


@dataclass(frozen=True)
class PhaseCost:
    rate: float        # bytes/s of the slowest flow (inf when no flow crosses a link)
    max_hops: int      # longest route, in torus hops
    intra: bool        # every flow stays inside its node


@dataclass
class TofuFabric:
    placement: Placement
    link_bandwidth: float
    injection_bandwidth: float
    intra_node_bandwidth: float
    symmetry: bool = True
    slices_routed: int = field(default=0, init=False)   # for tests and benchmarks

    @property
    def torus(self) -> Torus:
        return self.placement.torus

    def phase(self, src_ranks, dst_ranks, dim: str | None = None) -> PhaseCost:
        src_ranks = np.asarray(src_ranks, dtype=np.int64)
        dst_ranks = np.asarray(dst_ranks, dtype=np.int64)
        local, inter = self._split(src_ranks, dst_ranks, dim)
        worst = 0.0                                     # max over links of flows / capacity
        if local.any():
            out = np.bincount(src_ranks[local]).max()
            inn = np.bincount(dst_ranks[local]).max()
            worst = max(out, inn) / self.intra_node_bandwidth
        if inter is not None:
            s, d, cs, disp = inter
            worst = max(worst, np.bincount(s).max() / self.injection_bandwidth)
            ptr, links = route(self.torus, s, d, disp, cs)
            worst = max(worst, np.bincount(links).max() / self.link_bandwidth)
            hops = int(np.diff(ptr).max())
        else:
            hops = 0
        rate = float("inf") if worst == 0 else 1.0 / float(worst)
        return PhaseCost(rate=rate, max_hops=hops, intra=bool(local.all()))

    def routes(self, src_ranks, dst_ranks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``(flow_ptr, flow_links)`` of every flow and the capacity of every link
        id, on the links ``phase`` counts: a flow inside a node crosses its sender's
        outgoing and its receiver's incoming port; a flow between nodes its sending
        node's injection, then its dimension-order route. Every flow is routed (no
        symmetry): for flows of several patterns shared together (topologies.sharing)."""
        src_ranks = np.asarray(src_ranks, dtype=np.int64)
        dst_ranks = np.asarray(dst_ranks, dtype=np.int64)
        nodes = self.placement.node_of_rank
        t = self.torus
        s, d = nodes[src_ranks], nodes[dst_ranks]
        local = s == d
        inject, port = t.n_link_slots, t.n_link_slots + t.nodes     # first ids of each kind
        r_ptr, r_links = route(t, s[~local], d[~local])
        lens = np.full(len(s), 2, dtype=np.int64)
        lens[~local] = 1 + np.diff(r_ptr)
        ptr = np.concatenate(([0], np.cumsum(lens)))
        links = np.empty(ptr[-1], dtype=np.int64)
        first = ptr[:-1]
        links[first[local]] = port + src_ranks[local]
        links[first[local] + 1] = port + len(nodes) + dst_ranks[local]
        links[first[~local]] = inject + s[~local]
        links[_ranges(first[~local] + 1, np.diff(r_ptr))] = r_links
        capacity = np.concatenate((np.where(t.link_exists, self.link_bandwidth, 0.0),
                                   np.full(t.nodes, self.injection_bandwidth),
                                   np.full(2 * len(nodes), self.intra_node_bandwidth)))
        return ptr, links, capacity

    def best_rate(self, intra: bool) -> float:
        """The fastest any one flow can go: an intra-node port, or one link."""
        return self.intra_node_bandwidth if intra else min(self.link_bandwidth,
                                                           self.injection_bandwidth)

    def rate_bound(self, src_ranks, dst_ranks, dim: str | None = None) -> tuple[bool, float]:
        """(all flows inside nodes, a rate the slowest flow cannot beat), without routing.

        Flows between the same two nodes take the same dimension-order route, so they
        share all its links; flows leaving one node share its injection bandwidth."""
        src_ranks = np.asarray(src_ranks, dtype=np.int64)
        dst_ranks = np.asarray(dst_ranks, dtype=np.int64)
        if not len(src_ranks):
            return True, float("inf")
        _, inter = self._split(src_ranks, dst_ranks, dim)
        if inter is None:
            per_rank = max(np.bincount(src_ranks).max(), np.bincount(dst_ranks).max())
            return True, self.intra_node_bandwidth / per_rank
        s, d, _, _ = inter
        pairs = np.unique(s * self.torus.nodes + d, return_counts=True)[1].max()
        out = np.bincount(s).max()
        return False, min(self.link_bandwidth / pairs, self.injection_bandwidth / out)

    def _split(self, src_ranks: np.ndarray, dst_ranks: np.ndarray, dim: str | None):
        """(which flows stay inside their node, ``_one_slice`` of the others or None).

        ``rate_bound`` and then ``phase`` ask for the same pattern (the arrays of one
        collective's step) on fabrics of one placement: the last few answers are
        kept, keyed by the placement, the arrays themselves (held, so that their ids
        stay theirs) and whether slices stand for the whole."""
        key = (id(self.placement), id(src_ranks), id(dst_ranks), dim, self.symmetry)
        kept = _SPLITS.get(key)
        if kept is not None and kept[0] is self.placement and kept[1] is src_ranks \
                and kept[2] is dst_ranks:
            return kept[3]
        nodes = self.placement.node_of_rank
        src, dst = nodes[src_ranks], nodes[dst_ranks]
        local = src == dst
        inter = None if local.all() else self._one_slice(src[~local], dst[~local], dim)
        if len(_SPLITS) >= SPLITS_KEPT:
            del _SPLITS[next(iter(_SPLITS))]
        _SPLITS[key] = (self.placement, src_ranks, dst_ranks, (local, inter))
        return local, inter

    def _one_slice(self, src, dst, dim: str | None):
        """(src, dst, source coordinates, displacements) of one slice along the axes no
        flow moves on, if every slice is alike; of all flows otherwise.

        For a ``tofu`` placement and a phase of dimension ``dim``, slices along the
        axes ``dim`` is not placed on are alike by construction: each axis
        coordinate is a function of the digits of the dimensions placed on it, so
        moving along such an axis maps ``dim``'s groups onto groups of the same
        shape. Otherwise (another placement, or a phase still along axes ``dim`` is
        placed on, such as one line of a torus algorithm) the slices are checked:
        every slice must hold the same (moving coordinates, displacement) flows as
        slice 0.
        """
        t = self.torus
        cs, cd = t.coords(src), t.coords(dst)

        def everything(disp=None):
            if disp is None:
                disp = t.displacement(src, dst, src_coords=cs, dst_coords=cd)
            return src, dst, cs, disp

        if not self.symmetry:
            return everything()
        # the axes no flow moves on (column by column: a reduction down the short
        # rows of an (n, ndim) array is several times slower)
        still = np.array([np.array_equal(cs[:, k], cd[:, k]) for k in range(t.ndim)])
        if not still.any():
            return everything()
        trusted = np.zeros_like(still)
        if self.placement.strategy == "tofu" and dim is not None:
            own = {a for a, _ in self.placement.pieces[dim]}
            trusted = still & np.array([name not in own for name in t.names])
        if trusted.any():
            still = trusted
        else:
            disp = t.displacement(src, dst, src_coords=cs, dst_coords=cd)
            if not _slices_alike(t, cs, disp, still):
                return everything(disp)
        in_slice = np.all(cs[:, still] == 0, axis=1)
        self.slices_routed += 1
        cs1, cd1 = cs[in_slice], cd[in_slice]
        return (src[in_slice], dst[in_slice], cs1,
                t.displacement(None, None, src_coords=cs1, dst_coords=cd1))


def _slices_alike(t: Torus, cs: np.ndarray, disp: np.ndarray, still: np.ndarray) -> bool:
    """Whether every slice along the ``still`` axes holds the same flows, as (moving
    coordinates, displacement), as every other: then they load their own links
    alike, and routing one stands for all.

    Each flow is one integer: its slice, then its moving coordinates and their
    displacements (within (-n, n)); sorted, the slices' rows must all be slice 0's."""
    key = np.zeros(len(cs), dtype=np.int64)
    span, n_slices = 1, 1
    for k in np.flatnonzero(~still):
        n = t.shape[k]
        key = (key * n + cs[:, k]) * (2 * n + 1) + (disp[:, k] + n)
        span *= n * (2 * n + 1)
    for k in np.flatnonzero(still):
        n_slices *= t.shape[k]
    if span * n_slices >= 2 ** 62 or len(key) % n_slices:
        return False                                # (never for a machine's torus)
    piece = np.zeros(len(cs), dtype=np.int64)
    for k in np.flatnonzero(still):
        piece = piece * t.shape[k] + cs[:, k]
    rows = np.sort(piece * span + key).reshape(n_slices, -1)
    rows -= (np.arange(n_slices, dtype=np.int64) * span)[:, None]
    return bool(np.all(rows == rows[0]))
