"""Collectives as phases of flows, on all groups of a parallel dimension at once.

A collective on groups of n ranks (every group communicating concurrently, so
groups that share links contend) is a list of phases. A phase is a flow pattern
(who sends to whom), the bytes each flow carries as a fraction of the
collective's buffer S, and how many times it repeats (the steps of a ring are
one pattern repeated). Its time is ``latency + fraction * S / rate`` where rate
is the slowest flow's share of its busiest link.

Algorithms (S = the buffer per rank: allreduce's vector, allgather's output,
reduce-scatter's input, all-to-all's send buffer):

* ring: 2 (n-1) steps of S / n (allreduce; n-1 for the halves), Patarasuk & Yuan 2009;
* bidirectional ring: the same steps, half the data each way round;
* torus: one bidirectional ring per piece of the group's placement (fastest
  first), each on the data left by the pieces before it: a reduce-scatter that
  shrinks the data piece by piece, then the mirror all-gather (the
  multi-dimensional algorithm of torus machines);
* recursive halving-doubling: log2 n exchanges of S/2, S/4, ... and back
  (Rabenseifner's algorithm; Thakur, Rabenseifner & Gropp 2005);
* recursive doubling: log2 n exchanges of all of S (small messages);
  when n is not a power of two, both first fold the r = n - 2^floor(log2 n) extra
  ranks into partners and hand them the result at the end (MPICH's scheme);
* binomial tree: reduce then broadcast, ceil(log2 n) steps each, all of S;
* hierarchical (recursive doubling, dissemination): reduce or gather inside the
  group's first piece (on Fugaku with several ranks per node: the node) by a
  binomial tree, run the algorithm among one leader per piece, then broadcast;
* dissemination barrier: ceil(log2 n) zero-byte rounds (Hensgen et al. 1988);
* pairwise exchange all-to-all: n - 1 steps of S / n (a sample of the steps is
  routed and stands for all);
* p2p: each rank sends S to the next rank of its group (the last sends nothing).

Reductions (allreduce, reduce-scatter) also cost arithmetic: a phase's ``reduces``
counts the flows into a rank, over the phase's repeats, whose bytes the rank adds
into its own buffer (a ring's reduce-scatter steps, not its all-gather steps; a
bidirectional step brings two flows). What that costs is the network's
(flownet.FlowNetwork.reduce_bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, log2, prod

import numpy as np

ALLTOALL_SAMPLES = 8


@dataclass(frozen=True)
class Phase:
    key: tuple            # identifies the flow pattern (for caching its rate)
    src: np.ndarray
    dst: np.ndarray
    fraction: float       # bytes per flow / S
    repeat: float
    reduces: float = 0.0  # flows into a rank (over the repeats) that it reduces


def _shift(groups: np.ndarray, k: int, wrap: bool = True):
    """Flows from member i to member i + k of every group (mod n when wrapping)."""
    n = groups.shape[1]
    i = np.arange(n)
    j = (i + k) % n
    if not wrap:
        keep = i + k < n
        i, j = i[keep], j[keep]
    return groups[:, i].ravel(), groups[:, j].ravel()


def _both_ways(groups):
    s1, d1 = _shift(groups, 1)
    s2, d2 = _shift(groups, -1)
    return np.concatenate([s1, s2]), np.concatenate([d1, d2])


def _xor(groups: np.ndarray, distance: int):
    n = groups.shape[1]
    i = np.arange(n)
    return groups[:, i].ravel(), groups[:, i ^ distance].ravel()


def _lines(groups: np.ndarray, pieces: list[int], k: int) -> np.ndarray:
    """Sub-groups that differ only along piece k (the lines a torus ring runs on)."""
    g = groups.reshape(groups.shape[0], *reversed(pieces))      # slowest piece first
    axis = len(pieces) - k                                      # piece k's axis
    return np.moveaxis(g, axis, -1).reshape(-1, pieces[k])


def _fold(groups: np.ndarray):
    """MPICH's fold for n not a power of two: (pre-step flows, survivors' columns).

    Of the first 2r members, the even ones send their data to the odd ones and sit
    out; the survivors (odd ones of the first 2r, then everyone after) are 2^k."""
    n = groups.shape[1]
    p2 = 1 << (n.bit_length() - 1)
    r = n - p2
    evens = np.arange(0, 2 * r, 2)
    survivors = np.concatenate([evens + 1, np.arange(2 * r, n)])
    pre = (groups[:, evens].ravel(), groups[:, evens + 1].ravel())
    return pre, survivors, r


def _doubling(groups: np.ndarray, tag: str, fraction_of, reduce: bool = False) -> list[Phase]:
    """Recursive doubling/halving on any n: fold, log2 2^k exchanges, unfold
    (``reduce``: the fold and one repeat of each exchange reduce)."""
    pre, survivors, r = _fold(groups)
    core = groups[:, survivors]
    m = core.shape[1]
    steps = m.bit_length() - 1
    phases = []
    if r:
        phases.append(Phase((tag, "fold"), *pre, 1.0, 1, float(reduce)))
    for k in range(steps):
        distance = fraction_of(k, m)
        phases.append(Phase((tag, distance[0]), *_xor(core, distance[0]), distance[1],
                            distance[2], float(reduce)))
    if r:
        phases.append(Phase((tag, "unfold"), pre[1], pre[0], 1.0, 1))
    return phases


def _hierarchical(groups: np.ndarray, first: int, inner: list[Phase], fraction: float,
                  tag: str, reduce: bool = False) -> list[Phase]:
    """Reduce over the first piece's lines, ``inner`` among their leaders, broadcast back."""
    lines = groups.reshape(-1, first)
    down = [Phase((tag, "tree", k), *_tree(lines, k), fraction, 2, float(reduce))
            for k in range(ceil(log2(first)))]
    return down + inner


def algorithms(op: str, groups: np.ndarray, pieces: list[int]) -> dict[str, list[Phase]]:
    """Every algorithm that can run ``op`` on these groups, as phases."""
    n = groups.shape[1]
    if n == 1:
        return {"none (group of 1)": []}
    pow2 = n & (n - 1) == 0
    halves = {"allreduce": 2, "reduce-scatter": 1, "allgather": 1}
    out: dict[str, list[Phase]] = {}
    if op in halves:
        h = halves[op]
        red = op != "allgather"          # the reduce-scatter half reduces
        out["ring"] = [Phase(("ring",), *_shift(groups, 1), 1 / n, h * (n - 1),
                             (n - 1) * red)]
        out["bidirectional ring"] = [Phase(("bidir",), *_both_ways(groups), 1 / (2 * n),
                                           h * (n - 1), 2 * (n - 1) * red)]
        real = [p for p in pieces if p > 1]
        if len(real) > 1 and prod(real) == n:
            phases, left = [], 1.0
            for k, f in enumerate(real):
                lines = _lines(groups, real, k)
                phases.append(Phase(("torus", k), *_both_ways(lines), left / (2 * f),
                                    h * (f - 1), 2 * (f - 1) * red))
                left /= f
            out["torus"] = phases
        if pow2 or op == "allreduce":
            out["recursive halving-doubling"] = _doubling(
                groups, "halving", lambda k, m: (m >> (k + 1), 1 / 2 ** (k + 1), h), red)
        if op == "allreduce":
            out["recursive doubling"] = _doubling(groups, "doubling",
                                                  lambda k, m: (1 << k, 1.0, 1), True)
            out["binomial tree"] = [Phase(("tree", k), *_tree(groups, k), 1.0, 2, 1.0)
                                    for k in range(ceil(log2(n)))]
            first = pieces[0] if pieces else 1
            if 1 < first < n and n % first == 0:
                leaders = groups.reshape(groups.shape[0], -1, first)[:, :, 0]
                out["hierarchical recursive doubling"] = _hierarchical(
                    groups, first, _doubling(leaders, "leaders", lambda k, m: (1 << k, 1.0, 1),
                                             True), 1.0, "hier", True)
    elif op == "alltoall":
        ks = sorted(set(np.linspace(1, n - 1, min(ALLTOALL_SAMPLES, n - 1)).round().astype(int)))
        out["pairwise exchange"] = [Phase(("shift", int(k)), *_shift(groups, int(k)), 1 / n,
                                          (n - 1) / len(ks)) for k in ks]
    elif op == "barrier":
        out["dissemination"] = _dissemination(groups)
        first = pieces[0] if pieces else 1
        if 1 < first < n and n % first == 0:
            leaders = groups.reshape(groups.shape[0], -1, first)[:, :, 0]
            out["hierarchical dissemination"] = _hierarchical(
                groups, first, _dissemination(leaders), 0.0, "hier")
    elif op == "p2p":
        out["direct"] = [Phase(("next",), *_shift(groups, 1, wrap=False), 1.0, 1)]
    else:
        raise ValueError(f"unknown collective {op!r}")
    return out


def _dissemination(groups: np.ndarray) -> list[Phase]:
    n = groups.shape[1]
    return [Phase(("shift", 1 << k, n), *_shift(groups, 1 << k), 0.0, 1)
            for k in range(ceil(log2(n)))]


def _tree(groups: np.ndarray, k: int):
    """Binomial-tree reduce step k: member i (i mod 2^(k+1) == 2^k) sends to i - 2^k."""
    n = groups.shape[1]
    i = np.arange(n)
    senders = i[(i % (2 ** (k + 1))) == 2 ** k]
    return groups[:, senders].ravel(), groups[:, senders - 2 ** k].ravel()
