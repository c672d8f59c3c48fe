"""Rank placement: which node (and which slot on it) runs each rank of a (tp, pp, dp) job.

Ranks are numbered tp fastest, then dp, then pp (Megatron-LM's order). A
placement decides which physical axes each parallel dimension runs along:

* ``linear``: rank r runs on node r // ppn, nodes in id order (the last torus
  axis, c on Tofu, varies fastest). What a job gets when nobody maps it.
* ``tofu``: each dimension takes whole factors of physical axes, greedily, in
  its preference order: TP first, on the node's own slots and then c, b, a (the
  12-node Tofu unit) and then Z, Y, X; PP next, along Z, Y, X (neighbouring
  stages one hop apart); DP gets what is left, in any order. A factor taken from
  an axis is the innermost part still free, so the first dimension to take from an
  axis has physical neighbours there; a later one strides over it (after TP takes
  Z:2, PP's stages along Z are 2 hops apart).
  When the sizes do not factor over the axes, or the job fills only part of its
  allocated box, the placement falls back to ``linear`` and says so.

A placement records, per dimension, the (axis, size) pieces it spans, fastest
first; collectives use them to run one ring per piece (the torus algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

import numpy as np

from .interface import DIM_ORDER, MAPPINGS, JobShape
from .torus import Torus

LOCAL = "slot"                     # the axis of ranks sharing one node
PREFERENCE = {                     # physical axes each dimension draws from, in order
    "tp": (LOCAL, "c", "b", "a", "Z", "Y", "X"),
    "pp": ("Z", "Y", "X", "a", "b", "c", LOCAL),
    "dp": (LOCAL, "c", "b", "a", "Z", "Y", "X"),
}


@dataclass(frozen=True)
class Placement:
    job: JobShape
    torus: Torus
    strategy: str
    node_of_rank: np.ndarray = field(repr=False, compare=False)
    pieces: dict = field(compare=False)     # dim -> ((axis name, size), ...) fastest first
    note: str = ""

    def groups(self, dim: str) -> np.ndarray:
        """(groups, size) ranks of every group of ``dim``, in the group's own rank order."""
        job = self.job
        sizes = {d: job.size(d) for d in DIM_ORDER}
        ranks = np.arange(job.ranks).reshape(sizes["pp"], sizes["dp"], sizes["tp"])
        axis = {"pp": 0, "dp": 1, "tp": 2}[dim]
        return np.moveaxis(ranks, axis, -1).reshape(-1, sizes[dim])

    def describe(self) -> list[str]:
        out = []
        for d in DIM_ORDER:
            parts = " x ".join(f"{a}:{n}" for a, n in self.pieces[d]) or "-"
            out.append(f"{d.upper()} {self.job.size(d)}: {parts}")
        if self.note:
            out.append(self.note)
        return out

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "note": self.note,
                "shape": dict(zip(self.torus.names, self.torus.shape)),
                "wrap": dict(zip(self.torus.names, self.torus.wrap)),
                "pieces": {d: [list(p) for p in self.pieces[d]] for d in DIM_ORDER}}


def place(job: JobShape, torus: Torus, strategy: str = "tofu", note: str = "") -> Placement:
    if strategy not in MAPPINGS:
        raise ValueError(f"strategy: must be one of {', '.join(MAPPINGS)}; got {strategy!r}")
    if job.nodes > torus.nodes:
        raise ValueError(f"job: {job.nodes:,} nodes do not fit the {torus.nodes:,}-node shape")
    if job.ranks != job.nodes * job.ranks_per_node:
        raise ValueError("job: ranks must fill whole nodes")
    if strategy == "tofu" and job.nodes == torus.nodes:
        placed = _tofu(job, torus)
        if placed is not None:
            return placed
        note = (f"tofu placement impossible (tp {job.tp}, pp {job.pp}, dp {job.dp} do not "
                f"factor over the axes); linear order used")
    elif strategy == "tofu":
        note = note or f"the job fills {job.nodes:,} of {torus.nodes:,} nodes; linear order used"
    return _linear(job, torus, note)


def _linear(job: JobShape, torus: Torus, note: str) -> Placement:
    nodes = np.arange(job.ranks) // job.ranks_per_node
    pieces = {d: (("rank order", job.size(d)),) if job.size(d) > 1 else () for d in DIM_ORDER}
    return Placement(job, torus, "linear", nodes, pieces, note)


def _tofu(job: JobShape, torus: Torus) -> Placement | None:
    axes = [LOCAL, *torus.names]
    sizes = {LOCAL: job.ranks_per_node, **dict(zip(torus.names, torus.shape))}
    left = dict(sizes)                    # what each axis still has to give
    taken: dict[str, list[tuple[str, int]]] = {a: [] for a in axes}   # axis -> (dim, factor)
    pieces: dict[str, list[tuple[str, int]]] = {d: [] for d in DIM_ORDER}
    for dim in ("tp", "pp", "dp"):
        need = job.size(dim)
        for a in PREFERENCE[dim]:
            if a not in left or need == 1:
                continue
            g = gcd(need, left[a])
            if g > 1:
                taken[a].append((dim, g))
                pieces[dim].append((a, g))
                left[a] //= g
                need //= g
        if need != 1:
            return None
    # Each rank's index along each dimension, split over its pieces (fastest first).
    r = np.arange(job.ranks)
    index = {"tp": r % job.tp, "dp": (r // job.tp) % job.dp, "pp": r // (job.tp * job.dp)}
    digit = {}
    for dim in DIM_ORDER:
        rest = index[dim]
        for a, n in pieces[dim]:
            digit[(dim, a)] = rest % n
            rest = rest // n
    coord = {}
    for a in axes:
        c, scale = np.zeros(job.ranks, dtype=np.int64), 1
        for dim, n in taken[a]:
            c += digit[(dim, a)] * scale
            scale *= n
        coord[a] = c
    node_coords = np.stack([coord[a] for a in torus.names], axis=1)
    nodes = torus.ids(node_coords)
    return Placement(job, torus, "tofu", nodes,
                     {d: tuple(p) for d, p in pieces.items()}, "")
