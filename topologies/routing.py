"""Dimension-order routing on a torus, vectorised over many flows.

A flow from s to d moves along axis 0 until its coordinate matches, then axis 1,
and so on (Tofu's default routing is dimension-ordered; the order of axes is the
torus's axis order), taking the shorter way round each ring (ties: "+"). The route
of every flow is returned in CSR form: ``flow_ptr`` (F + 1) and ``flow_links``
(link ids, in traversal order), so that many flows are routed by a handful of
numpy operations: one pass per axis and per step along it, never per flow.
"""

from __future__ import annotations

import numpy as np

from .torus import MINUS, PLUS, Torus


def route(torus: Torus, src, dst, disp: np.ndarray | None = None,
          src_coords: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CSR routes (flow_ptr, flow_links) of flows src[i] -> dst[i].

    Callers that have them may pass ``disp`` (``torus.displacement(src, dst)``) and
    the sources' coordinates."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if src_coords is None:
        src_coords = torus.coords(src)
    if disp is None:
        disp = torus.displacement(src, dst, src_coords=src_coords)   # (F, ndim)
    steps = np.abs(disp)
    lengths = steps.sum(axis=1)
    flow_ptr = np.zeros(len(src) + 1, dtype=np.int64)
    np.cumsum(lengths, out=flow_ptr[1:])
    flow_links = np.empty(flow_ptr[-1], dtype=np.int64)
    coords = src_coords.astype(np.int64)                    # current position, updated in place
    done = np.zeros(len(src), dtype=np.int64)               # links written per flow
    strides = np.array([int(np.prod(torus.shape[k + 1:])) for k in range(torus.ndim)],
                       dtype=np.int64)
    node = src.copy()
    for k in range(torus.ndim):
        n = torus.shape[k]
        direction = np.where(disp[:, k] >= 0, PLUS, MINUS)
        step = np.where(disp[:, k] >= 0, 1, -1)
        for j in range(int(steps[:, k].max(initial=0))):
            moving = np.flatnonzero(steps[:, k] > j)
            flow_links[flow_ptr[moving] + done[moving]] = Torus.link_id(
                node[moving], k, direction[moving], torus.ndim)
            done[moving] += 1
            old = coords[moving, k]
            new = (old + step[moving]) % n
            coords[moving, k] = new
            node[moving] += (new - old) * strides[k]
    return flow_ptr, flow_links


def link_loads(torus: Torus, src, dst, nbytes) -> np.ndarray:
    """Bytes carried by every link slot when each flow src[i] -> dst[i] sends nbytes[i]."""
    ptr, links = route(torus, src, dst)
    per_flow = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (len(ptr) - 1,))
    weights = np.repeat(per_flow, np.diff(ptr))
    return np.bincount(links, weights=weights, minlength=torus.n_link_slots)
