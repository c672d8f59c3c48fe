"""An N-dimensional torus/mesh: coordinates, links, distances (vectorised numpy).

Links are directed and explicit. Node ``n`` has, on axis ``k``, a "+" link to the
node one step up and a "-" link to the node one step down; link id
``(n * ndim + k) * 2 + d`` with d = 0 for "+" and 1 for "-". A mesh axis has no
"+" link at its top end and no "-" link at its bottom end; an axis of size 1 has
no links. A ring of size 2 therefore has *two* cables between its two nodes (each
node's "+" and "-" link), unlike a simple graph's single edge; a mesh of size 2
has one (node 0's "+" and node 1's "-" are the two directions of one cable).
Tofu-D's a and c axes are 2-long meshes and b is a 3-ring, which gives each node
the 10 ports of the Fujitsu guide (X+-, Y+-, Z+-, a, b+-, c).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

PLUS, MINUS = 0, 1
# how a route half-way round an even ring is sent (Torus.displacement)
TIES = ("plus", "simgrid")


@dataclass(frozen=True)
class Torus:
    shape: tuple[int, ...]
    wrap: tuple[bool, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"shape: every axis needs at least one node; got {self.shape}")
        if len(self.wrap) != len(shape):
            raise ValueError(f"wrap: needs one flag per axis ({len(shape)}); got {self.wrap}")
        names = tuple(self.names) or tuple(f"d{k}" for k in range(len(shape)))
        if len(names) != len(shape):
            raise ValueError(f"names: needs one name per axis ({len(shape)}); got {names}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "wrap", tuple(bool(w) for w in self.wrap))
        object.__setattr__(self, "names", names)

    # ------------------------------------------------------------ nodes
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nodes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_link_slots(self) -> int:
        """Size of the link id space (some slots, at mesh ends, hold no link)."""
        return self.nodes * self.ndim * 2

    def coords(self, ids) -> np.ndarray:
        """(n, ndim) coordinates of node ids (C order: the last axis varies fastest)."""
        return self._coord_table.take(np.asarray(ids, dtype=np.int64), axis=0)

    @cached_property
    def _coord_table(self) -> np.ndarray:
        table = np.stack(np.unravel_index(np.arange(self.nodes), self.shape), axis=-1)
        table = table.astype(np.int16 if max(self.shape) < 2**15 else np.int64)
        table.flags.writeable = False
        return table

    def ids(self, coords) -> np.ndarray:
        c = np.asarray(coords).astype(np.int64, copy=False)
        return np.ravel_multi_index(tuple(c[..., k] for k in range(self.ndim)), self.shape)

    # ------------------------------------------------------------ links
    @staticmethod
    def link_id(node, axis, direction, ndim: int):
        return (np.asarray(node, dtype=np.int64) * ndim + axis) * 2 + direction

    @cached_property
    def link_exists(self) -> np.ndarray:
        """Boolean over link slots: which (node, axis, direction) links are cables."""
        c = self.coords(np.arange(self.nodes))
        exists = np.zeros((self.nodes, self.ndim, 2), dtype=bool)
        for k, (n, w) in enumerate(zip(self.shape, self.wrap)):
            if n == 1:
                continue
            if w:
                exists[:, k, :] = True
            else:
                exists[:, k, PLUS] = c[:, k] < n - 1
                exists[:, k, MINUS] = c[:, k] > 0
        return exists.reshape(-1)

    def neighbour(self, ids, axis: int, direction: int) -> np.ndarray:
        """The node at the far end of each node's (axis, direction) link (-1: none)."""
        c = self.coords(ids).astype(np.int64)
        n, w = self.shape[axis], self.wrap[axis]
        step = 1 if direction == PLUS else -1
        x = c[:, axis] + step
        ok = np.ones(len(x), dtype=bool) if w else (x >= 0) & (x < n)
        ok &= n > 1
        c[:, axis] = x % n
        out = self.ids(c)
        return np.where(ok, out, -1)

    def link_endpoints(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(link ids, from-node, to-node) of every existing directed link."""
        links = np.flatnonzero(self.link_exists)
        node, rest = np.divmod(links, self.ndim * 2)
        axis, direction = np.divmod(rest, 2)
        to = np.empty_like(node)
        for k in range(self.ndim):
            for d in (PLUS, MINUS):
                sel = (axis == k) & (direction == d)
                to[sel] = self.neighbour(node[sel], k, d)
        return links, node, to

    def degree(self) -> np.ndarray:
        """Outgoing links per node."""
        return self.link_exists.reshape(self.nodes, -1).sum(axis=1)

    # ------------------------------------------------------------ distances
    def displacement(self, src, dst, *, src_coords=None, dst_coords=None,
                     ties: str = "plus") -> np.ndarray:
        """(n, ndim) signed steps of the shortest dimension-order route.

        On a ring the shorter way round is taken; a tie (half-way round an even
        ring) goes in the "+" direction, or with ``ties="simgrid"`` as SimGrid's
        torus sends it: "+" but from coordinate n/2, which goes "-" (toward 0).
        Callers that have the coordinates of the nodes already may pass them.
        """
        if ties not in TIES:
            raise ValueError(f"ties must be one of {', '.join(TIES)}; got {ties!r}")
        cs = self.coords(src) if src_coords is None else src_coords
        cd = self.coords(dst) if dst_coords is None else dst_coords
        d = cd.astype(np.int64) - cs
        for k, (n, w) in enumerate(zip(self.shape, self.wrap)):
            if w and n > 1:
                dk = d[:, k] % n
                d[:, k] = np.where(dk > n // 2, dk - n, dk)
                if ties == "simgrid" and n % 2 == 0:
                    d[:, k] = np.where((dk == n // 2) & (cs[:, k] == n // 2), -(n // 2),
                                       d[:, k])
        return d

    def hops(self, src, dst) -> np.ndarray:
        return np.abs(self.displacement(src, dst)).sum(axis=1)

    @property
    def diameter(self) -> int:
        return int(sum(n // 2 if w else n - 1 for n, w in zip(self.shape, self.wrap)))

    def bisection_links(self) -> int:
        """Cables crossing the narrowest cut into two equal halves, along one axis.

        Cutting axis k (of even size n) in half crosses N / n cables per cut
        position; a ring is cut in two places, a mesh in one. The result is the
        minimum over axes that can be halved (even size).
        """
        best = None
        for n, w in zip(self.shape, self.wrap):
            if n < 2 or n % 2:
                continue
            cables = (self.nodes // n) * (2 if w else 1)
            best = cables if best is None else min(best, cables)
        return 0 if best is None else best

    # ------------------------------------------------------------ export
    def to_networkx(self, max_nodes: int = 100_000):
        """A networkx MultiGraph with one edge per cable (for analysis and tests)."""
        import networkx as nx
        if self.nodes > max_nodes:
            raise ValueError(f"shape: {self.nodes:,} nodes is too many to export "
                             f"(limit {max_nodes:,})")
        g = nx.MultiGraph()
        g.add_nodes_from(range(self.nodes))
        links, frm, to = self.link_endpoints()
        _, rest = np.divmod(links, self.ndim * 2)
        axis, direction = np.divmod(rest, 2)
        # every cable is exactly one node's "+" link (its "-" twin is the cable's other
        # direction); a 2-ring has two, 0+ -> 1 and the wrap-around 1+ -> 0.
        for lid, a, b, k, d in zip(links, frm, to, axis, direction):
            if d == PLUS:
                g.add_edge(int(a), int(b), axis=self.names[k], link=int(lid))
        return g
