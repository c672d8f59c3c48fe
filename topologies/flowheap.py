"""Progressive filling over a heap, compiled (Numba, ``cache=True``): the same max-min
rates as topologies.flows.progressive_filling for large sets of flows.

A link fills at the level (capacity - the rates of its frozen flows) / its growing
flows. The lowest is popped from a binary heap (entries a link has outgrown are
skipped when popped), its growing flows freeze at that level, and the links they
cross get new fill levels, pushed anew. Each route entry is touched once and each
push costs O(log entries): O(entries log entries) in all, where the vectorised
filling makes one O(links) pass per distinct rate level.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _heap_push(keys, vals, size, key, val):
    i = size
    keys[i], vals[i] = key, val
    while i > 0:
        parent = (i - 1) // 2
        if keys[parent] <= keys[i]:
            break
        keys[parent], keys[i] = keys[i], keys[parent]
        vals[parent], vals[i] = vals[i], vals[parent]
        i = parent
    return size + 1


@njit(cache=True)
def _heap_pop(keys, vals, size):
    key, val = keys[0], vals[0]
    size -= 1
    keys[0], vals[0] = keys[size], vals[size]
    i = 0
    while True:
        left, smallest = 2 * i + 1, i
        if left < size and keys[left] < keys[smallest]:
            smallest = left
        if left + 1 < size and keys[left + 1] < keys[smallest]:
            smallest = left + 1
        if smallest == i:
            break
        keys[smallest], keys[i] = keys[i], keys[smallest]
        vals[smallest], vals[i] = vals[i], vals[smallest]
        i = smallest
    return key, val, size


@njit(cache=True)
def filling_heap(ptr, links, cap, link_ptr, flows_by_link):
    """Progressive filling one saturated link at a time: a link fills at the level
    (capacity - rates of its frozen flows) / its growing flows; the lowest is popped
    from a heap (stale entries skipped), its growing flows freeze at that level, and
    the links they cross get new fill levels."""
    n_flows, n_links = ptr.size - 1, cap.size
    growing = np.zeros(n_links, np.int64)
    for l in range(n_links):
        if np.isfinite(cap[l]):
            growing[l] = link_ptr[l + 1] - link_ptr[l]
    frozen_sum = np.zeros(n_links)
    fill_at = np.full(n_links, np.inf)
    keys = np.empty(links.size + n_links + 1)
    vals = np.empty(links.size + n_links + 1, np.int64)
    size = 0
    for l in range(n_links):
        if growing[l] > 0:
            fill_at[l] = cap[l] / growing[l]
            size = _heap_push(keys, vals, size, fill_at[l], l)
    rates = np.full(n_flows, np.inf)
    frozen = np.zeros(n_flows, np.bool_)
    levels = 0
    last = -1.0
    while size > 0:
        level, l, size = _heap_pop(keys, vals, size)
        if growing[l] == 0 or level != fill_at[l]:
            continue                                   # stale: the link changed since
        if level > last + 1e-12 * abs(level):          # (levels within rounding: one)
            levels += 1
            last = level
        for e in range(link_ptr[l], link_ptr[l + 1]):
            f = flows_by_link[e]
            if frozen[f]:
                continue
            frozen[f] = True
            rates[f] = level
            for k in range(ptr[f], ptr[f + 1]):
                m = links[k]
                if not np.isfinite(cap[m]):
                    continue
                frozen_sum[m] += level
                growing[m] -= 1
                if growing[m] > 0:
                    fill_at[m] = max(level, (cap[m] - frozen_sum[m]) / growing[m])
                    size = _heap_push(keys, vals, size, fill_at[m], m)
                else:
                    fill_at[m] = np.inf
    return rates, levels


