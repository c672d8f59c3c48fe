"""Flow-level bandwidth sharing: max-min fair rates by progressive filling.

Model. A phase of communication is a set of flows; each flow crosses a fixed set
of directed links (its route) and every link divides its capacity among the
flows that cross it. The rates are the max-min fair allocation: no flow can get
more without taking bandwidth from a flow that has no more than it. They are
computed by progressive filling (Bertsekas & Gallager, *Data Networks*, 2nd ed.,
Sec. 6.5.2): all unfrozen flows grow at the same rate; when a link saturates,
the flows that cross it freeze at their current rate; repeat until every flow is
frozen. TCP/IB congestion control approaches this allocation for long flows.

Data layout (CSR, as ``scipy.sparse``)::

    flow_ptr    (F+1,) int64  flow f uses flow_links[flow_ptr[f]:flow_ptr[f+1]]
    flow_links  (nnz,) int64  link ids, each at most once per flow
    capacity    (L,)   float  bytes/s of each link id (np.inf: never a bottleneck)
    flow_bytes  (F,)   float  bytes each flow carries

Each filling iteration is a handful of vectorised passes (``np.bincount`` over
the entries of the flows it freezes, O(L) over links); no Python loop runs over
flows. Large sets (a whole machine's permutation has thousands of rate levels) run
the same filling in a compiled loop over a heap of the links' fill levels instead.

``phase_time`` keeps each flow at its first rate (exact for equal flows that start
together, as in the steps of ring collectives); ``flow_completions`` re-solves the
rates as flows finish and start (only those of the flows a finish can speed up), so
the bandwidth a finished flow frees goes to the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SATURATION_RTOL = 1e-12  # a link with remaining <= this * capacity is saturated


def csr_from_lists(link_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(flow_ptr, flow_links)`` for flows given as lists of link ids (small cases, tests)."""
    lens = np.fromiter((len(links) for links in link_lists), dtype=np.int64, count=len(link_lists))
    flow_ptr = np.zeros(len(link_lists) + 1, dtype=np.int64)
    np.cumsum(lens, out=flow_ptr[1:])
    flow_links = np.fromiter((l for links in link_lists for l in links), dtype=np.int64,
                             count=int(flow_ptr[-1]))
    return flow_ptr, flow_links


def _check_csr(flow_ptr, flow_links, n_links: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 copies of the CSR arrays; errors name the offending argument."""
    ptr = np.asarray(flow_ptr, dtype=np.int64)
    links = np.asarray(flow_links, dtype=np.int64)
    if ptr.ndim != 1 or ptr.size < 1 or ptr[0] != 0:
        raise ValueError("`flow_ptr` must be a 1-D array of F+1 offsets starting at 0")
    if np.any(np.diff(ptr) < 0):
        raise ValueError("`flow_ptr` must be non-decreasing")
    if links.ndim != 1 or links.size != ptr[-1]:
        raise ValueError(f"`flow_links` must have flow_ptr[-1] = {ptr[-1]} entries; got {links.size}")
    if links.size and (links.min() < 0 or links.max() >= n_links):
        raise ValueError(f"`flow_links` ids must lie in [0, {n_links}); "
                         f"got [{links.min()}, {links.max()}]")
    return ptr, links


def _flow_of_entry(flow_ptr: np.ndarray) -> np.ndarray:
    """(nnz,) the flow each CSR entry belongs to."""
    n_flows = flow_ptr.size - 1
    return np.repeat(np.arange(n_flows, dtype=np.int64), np.diff(flow_ptr))


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    out_start = np.cumsum(lens) - lens
    return np.repeat(starts - out_start, lens) + np.arange(lens.sum(), dtype=np.int64)


# Above this many route entries the filling runs as a compiled loop over a heap of the
# links' fill levels (topologies.flowheap, imported only then: Numba loads in 0.3 s):
# O(entries log links) rather than one O(links) pass per rate level, which a whole
# machine's random permutation has thousands of.
HEAP_ENTRIES = 200_000
# flow_completions solves again at every event: there Numba's load is paid once for
# thousands of solves, and the heap wins from a few thousand entries on (measured on
# mixed-size permutations of 2,000 flows on a 13,824-node torus: 1.5x)
COMPLETIONS_HEAP_ENTRIES = 2_000


def progressive_filling(flow_ptr, flow_links, capacity,
                        heap_above: int = HEAP_ENTRIES) -> tuple[np.ndarray, int]:
    """Max-min fair rates (F,) and the number of filling iterations.

    All growing flows share one rate, the level. At growing count ``g_l`` and
    remaining capacity ``r_l``, link l fills when the level has risen by
    ``r_l / g_l``; the next level is the least such. The links then full
    (remaining <= ``SATURATION_RTOL`` * capacity; always the one that set the
    level) freeze their flows at the level. Each iteration freezes at least one
    flow and ends at a new rate level, so iterations <= distinct rate levels.
    Flows with no links, or whose links all have infinite capacity, get
    ``np.inf``; a zero-capacity link gives its flows rate 0.

    Cost: each link keeps ``fill_at``, the level at which it fills while its
    count is unchanged, updated only for the links of newly frozen flows; so
    each CSR entry is touched O(1) times overall, plus O(L) elementwise work
    (a min and a compare) per iteration.
    """
    cap = np.asarray(capacity, dtype=np.float64)
    if cap.ndim != 1 or np.any(np.isnan(cap)) or np.any(cap < 0):
        raise ValueError("`capacity` must be a 1-D array of non-negative bytes/s (inf allowed)")
    ptr, links = _check_csr(flow_ptr, flow_links, cap.size)
    n_flows, n_links = ptr.size - 1, cap.size
    finite = np.isfinite(cap)
    # Transpose (flows by link) to find the flows of the links that fill.
    flows_by_link = _flow_of_entry(ptr)[np.argsort(links)]
    per_link = np.bincount(links, minlength=n_links)                  # (L,) flows per link
    link_ptr = np.concatenate(([0], np.cumsum(per_link)))             # (L+1,)
    if links.size > heap_above:
        from .flowheap import filling_heap
        return filling_heap(ptr, links, cap, link_ptr, flows_by_link)
    growing = np.where(finite, per_link, 0)                           # (L,) growing flows
    fill_at = np.full(n_links, np.inf)                                # (L,) level when full
    slack = np.zeros(n_links)                     # (L,) level gap that counts as full
    on = growing > 0
    fill_at[on] = cap[on] / growing[on]
    slack[on] = SATURATION_RTOL * fill_at[on]
    frozen = np.zeros(n_flows, dtype=bool)
    rates = np.full(n_flows, np.inf)   # overwritten when a flow freezes at a finite link
    iterations = 0
    while True:
        level = fill_at.min()
        if level == np.inf:
            return rates, iterations
        iterations += 1
        full = np.flatnonzero(fill_at <= level + slack)
        on_full = flows_by_link[_ranges(link_ptr[full], per_link[full])]
        newly = np.unique(on_full[~frozen[on_full]])
        frozen[newly] = True
        rates[newly] = level
        their_links = links[_ranges(ptr[newly], ptr[newly + 1] - ptr[newly])]
        touched, lost = np.unique(their_links[finite[their_links]], return_counts=True)
        left = (fill_at[touched] - level) * growing[touched]           # remaining bytes/s
        growing[touched] -= lost
        g = growing[touched]
        fill_at[touched] = np.where(g > 0, level + left / np.maximum(g, 1), np.inf)
        slack[touched] = SATURATION_RTOL * cap[touched] / np.maximum(g, 1)


def max_min_rates(flow_ptr, flow_links, capacity) -> np.ndarray:
    """(F,) max-min fair rate of each flow in bytes/s (Bertsekas & Gallager Sec. 6.5.2).

    See ``progressive_filling`` for the algorithm and the edge cases.
    """
    return progressive_filling(flow_ptr, flow_links, capacity)[0]


def phase_time(flow_ptr, flow_links, capacity, flow_bytes) -> float:
    """Seconds until every flow has delivered its bytes at its max-min rate.

    ``max_f bytes_f / rate_f`` (0 with no flows; a flow of 0 bytes takes 0 s).
    Each flow keeps its initial max-min rate to the end: the bandwidth freed
    when a flow finishes early is not redistributed, so this is an upper bound
    (conservative), exact when all flows are equal and symmetric (every flow
    finishes at once), as in the steps of ring and pairwise collectives.
    """
    nbytes = np.asarray(flow_bytes, dtype=np.float64)
    if nbytes.shape != (np.asarray(flow_ptr).size - 1,) or np.any(nbytes < 0):
        raise ValueError("`flow_bytes` must be F non-negative byte counts, one per flow")
    if nbytes.size == 0:
        return 0.0
    rates = max_min_rates(flow_ptr, flow_links, capacity)
    busy = nbytes > 0
    times = np.zeros_like(nbytes)
    with np.errstate(divide="ignore"):
        times[busy] = nbytes[busy] / rates[busy]
    return float(times.max())


def link_loads(flow_ptr, flow_links, flow_bytes, n_links: int) -> np.ndarray:
    """(n_links,) total bytes crossing each link: the sum of the bytes of its flows."""
    ptr, links = _check_csr(flow_ptr, flow_links, n_links)
    nbytes = np.asarray(flow_bytes, dtype=np.float64)
    if nbytes.shape != (ptr.size - 1,):
        raise ValueError(f"`flow_bytes` must have one entry per flow ({ptr.size - 1}); "
                         f"got shape {nbytes.shape}")
    return np.bincount(links, weights=np.repeat(nbytes, np.diff(ptr)), minlength=n_links)


def flow_completions(flow_ptr, flow_links, capacity, flow_bytes, start=None,
                     progress=None, reuse: bool = True) -> tuple[np.ndarray, int]:
    """(F,) when each flow delivers its last byte, and how many max-min solves it took.

    Progressive filling with completions: the active flows (started, not finished)
    share the links max-min fairly; the rates hold until the next event, the first
    finish (remaining bytes / rate) or start (``start``, seconds; default all at 0);
    then the finished flows leave, the started ones join and the rates are solved
    again for the new set, so the bandwidth a finished flow frees goes to the others.
    Between events nothing changes, and an event that leaves no flow active needs no
    solve: flows of equal size that start together finish together after one solve.
    A flow of 0 bytes finishes when it starts; a flow with no finite link (or only
    links of infinite capacity) finishes at its start too (it is never the
    bottleneck); a flow that can never move (a zero-capacity link) finishes at inf.

    Reuse. When flows only finish (none starts), the flows whose rate is below the
    least rate of those that finished keep it: the filling reaches their levels
    before any link of a finished flow fills (a link a finished flow crosses cannot
    have filled below that flow's rate: the flow would have frozen there), so
    removing the finished flows changes nothing below that level. Only the other
    flows are solved again, on the capacity the kept ones leave (``reuse=False``
    solves them all: the same times, for checking). Each solve runs on the links its
    flows use, numbered afresh.

    Cost: one solve per event, so flows of many different sizes (each its own finish)
    cost up to one (partial) solve per flow. ``progress(finished, total)`` is called
    after each solve.
    """
    cap = np.asarray(capacity, dtype=np.float64)
    ptr, links = _check_csr(flow_ptr, flow_links, cap.size)
    n = ptr.size - 1
    remaining = np.asarray(flow_bytes, dtype=np.float64).copy()
    if remaining.shape != (n,) or np.any(~np.isfinite(remaining)) or np.any(remaining < 0):
        raise ValueError("`flow_bytes` must be F finite non-negative byte counts, one per flow")
    begin = np.zeros(n) if start is None else np.asarray(start, dtype=np.float64)
    if begin.shape != (n,) or np.any(~np.isfinite(begin)) or np.any(begin < 0):
        raise ValueError("`start` must be F finite non-negative times, one per flow")
    finish = np.full(n, np.inf)
    lens = np.diff(ptr)
    order = np.argsort(begin, kind="stable")
    joined = 0                            # flows of ``order`` that have started
    active = np.zeros(0, dtype=np.int64)
    rate = np.zeros(n)                    # each active flow's rate since the last solve
    now, solves = 0.0, 0
    keep_below = None                     # reuse the rates below this level (only finishes)
    slot = np.full(cap.size, -1, dtype=np.int64)    # scratch: a link's number in a solve
    while True:
        if active.size == 0:
            if joined == n:
                return finish, solves
            now = max(now, begin[order[joined]])
        while joined < n and begin[order[joined]] <= now:
            active = np.append(active, order[joined])
            joined += 1
            keep_below = None             # a flow started: solve them all
        done = remaining[active] <= 0.0
        finish[active[done]] = now
        active = active[~done]
        if active.size == 0:
            continue
        again = np.ones(active.size, dtype=bool) if keep_below is None else \
            rate[active] >= keep_below
        resolve, kept = active[again], active[~again]
        rate[resolve] = _rates_on_residual(ptr, links, lens, cap, resolve, kept, rate, slot)
        solves += 1
        if progress is not None:
            progress(int(np.isfinite(finish).sum()), n)
        rates = rate[active]
        free = np.isinf(rates)                      # never the bottleneck: done at once
        finish[active[free]] = now
        moving = rates > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            until = np.where(moving & ~free, remaining[active] / rates, np.inf)
        step = until.min(initial=np.inf)
        if joined < n:
            step = min(step, begin[order[joined]] - now)
        if step == np.inf:                          # only flows that cannot move are left
            return finish, solves
        sent = np.where(free, 0.0, rates * step)
        remaining[active] = np.where(until <= step * (1 + 1e-12), 0.0,
                                     remaining[active] - np.nan_to_num(sent))
        remaining[active[free]] = 0.0
        now += step
        finished = remaining[active] <= 0.0
        finish[active[finished]] = now
        keep_below = rates[finished].min() if reuse and finished.any() else None
        active = active[~finished]


def _rates_on_residual(ptr, links, lens, cap, flows, fixed, rate, slot) -> np.ndarray:
    """Max-min rates of ``flows`` on the capacity that the ``fixed`` flows (at their
    ``rate``) leave, solved on the links they use only (``slot``: all -1, a scratch
    array of one entry per link, left all -1)."""
    sub_ptr = np.concatenate(([0], np.cumsum(lens[flows])))
    entries = links[_ranges(ptr[flows], lens[flows])]
    if entries.size == 0:                   # no links: never the bottleneck
        return np.full(flows.size, np.inf)
    slot[entries] = 0                       # the links used, numbered in id order
    used = np.flatnonzero(slot >= 0)
    slot[used] = np.arange(used.size)
    room = cap[used]
    if fixed.size:
        at = slot[links[_ranges(ptr[fixed], lens[fixed])]]
        mine = at >= 0
        load = np.bincount(at[mine], weights=np.repeat(rate[fixed], lens[fixed])[mine],
                           minlength=used.size)
        room = np.maximum(room - load, 0.0)
    local = slot[entries]
    slot[used] = -1
    return progressive_filling(sub_ptr, local, room, COMPLETIONS_HEAP_ENTRIES)[0]
