"""``fugakuperf flows``: a set of flows on a torus, each one's finish time.

Nodes are numbered in C order over the shape: the last axis varies fastest, so on
``4x4x2`` node ``n`` has coordinates ``(n // 8, n // 2 % 4, n % 2)``. A flow is routed
in dimension order (axis 0 first, then 1, ...), the shorter way round each ring; a
tie, half-way round an even ring, goes in the "+" direction (topologies.torus).
Every directed link carries ``--link-gbs``; with ``--injection-gbs`` each node also
has one injection and one ejection link of that bandwidth, which its outgoing and
incoming flows share. Flows share links max-min fairly, and when a flow finishes
its bandwidth goes to the others (topologies.flows.flow_completions).

FLOWS.json is a list of ``[src, dst, bytes]`` or ``[src, dst, bytes, start_s]``.

``--convention simgrid`` reads the node ids and breaks the ties as SimGrid's torus
(TorusZone) does, to compare with it flow by flow: ids numbered with the first axis
fastest, and a tie "+" except from coordinate n/2, which goes "-" (toward 0). SimGrid
also routes axis 0 first, so the same --shape describes the same torus.
"""

from __future__ import annotations

import math

import numpy as np

from fpcore.errors import SpecError, shown
from fpcore.readers import read_json

from .flows import flow_completions
from .routing import route
from .torus import Torus

MAX_FLOWS = 2_000_000
# How node ids are numbered and ties broken: ours, or SimGrid's torus (TorusZone, 4.x),
# so that the same flows can be compared flow by flow.
CONVENTIONS = {
    "native": {"numbering": "C order: the last axis varies fastest",
               "routing": "dimension order (axis 0 first), the shorter way round each "
                          "ring; ties half-way round an even ring go '+'"},
    "simgrid": {"numbering": "SimGrid's: the first axis varies fastest",
                "routing": "dimension order (axis 0 first), the shorter way round each "
                           "ring; ties half-way round an even ring go '+', but from "
                           "coordinate n/2, which goes '-' (toward 0), as SimGrid's torus"},
}
MAX_NODES = 10_000_000
MAX_AXES = 16                 # a torus of more dimensions than any machine (Tofu has 6)
# the most bytes (1 EB) or seconds a flow may give: with links of at least 1 byte/s
# shared by at most MAX_FLOWS flows, every finish time stays a finite float
MAX_VALUE = 1e18


def torus_from_text(text: str, wrap: str | None = None) -> Torus:
    """``24x2x24`` (every axis a ring), ``24x2x24:mesh`` (none), or ``--wrap 1,0,1``."""
    body, _, kind = str(text).partition(":")
    try:
        shape = tuple(int(p) for p in body.lower().split("x"))
    except ValueError:
        raise SpecError("shape", f"must be sizes joined by x, e.g. 24x2x24x2x3x2 (with "
                                 f":torus or :mesh); got {str(text)[:60]!r}") from None
    if len(shape) > MAX_AXES:
        raise SpecError("shape", f"has {len(shape)} axes; at most {MAX_AXES}")
    if not shape or any(n < 1 for n in shape) or math.prod(shape) > MAX_NODES:
        raise SpecError("shape", f"needs axes of at least 1 node and at most {MAX_NODES:,} "
                                 f"nodes in all; got {str(text)[:60]!r}")
    if kind not in ("", "torus", "mesh"):
        raise SpecError("shape", f"the part after ':' is torus or mesh; got {kind[:20]!r}")
    flags = [kind != "mesh"] * len(shape)
    if wrap is not None:
        if kind:
            raise SpecError("wrap", "give the shape's :torus/:mesh or --wrap, not both")
        parts = str(wrap).split(",")
        if len(parts) != len(shape) or any(p not in ("0", "1") for p in parts):
            raise SpecError("wrap", f"one 0 or 1 per axis ({len(shape)}), comma-separated; "
                                    f"got {str(wrap)[:60]!r}")
        flags = [p == "1" for p in parts]
    return Torus(shape, tuple(flags))


def read_flows(path: str, nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, bytes, start) of FLOWS.json, every entry checked."""
    data = read_json(path, "flows")
    if not isinstance(data, list) or not data or len(data) > MAX_FLOWS:
        raise SpecError("flows", f"{path}: must be a list of 1 to {MAX_FLOWS:,} "
                                 f"[src, dst, bytes] (or [src, dst, bytes, start_s])")
    src, dst, nbytes, start = [], [], [], []
    for i, f in enumerate(data):
        where = f"{path}: flow {i}"
        if not isinstance(f, list) or len(f) not in (3, 4):
            raise SpecError("flows", f"{where}: must be [src, dst, bytes] or "
                                     f"[src, dst, bytes, start_s]; got {str(f)[:60]}")
        for value, name in zip(f[:2], ("src", "dst")):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < nodes:
                raise SpecError("flows", f"{where}: {name} must be a node id in [0, {nodes}); "
                                         f"got {str(value)[:30]}")
        for value, name in zip(f[2:], ("bytes", "start_s")):
            # (compared before any conversion: a JSON int may be too big for a float)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= MAX_VALUE:
                raise SpecError("flows", f"{where}: {name} must be a number from 0 to "
                                         f"{MAX_VALUE:g}; got {shown(value, 30)}")
        src.append(f[0])
        dst.append(f[1])
        nbytes.append(float(f[2]))
        start.append(float(f[3]) if len(f) == 4 else 0.0)
    return (np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64),
            np.array(nbytes), np.array(start))


def simulate_flows(torus: Torus, src, dst, nbytes, start, link_bandwidth: float,
                   injection_bandwidth: float | None = None, progress=None,
                   convention: str = "native") -> dict:
    """Every flow routed on ``torus`` and shared max-min with completions: its finish
    time, its hops, and the makespan. ``convention`` (CONVENTIONS) says how the
    flows' node ids are numbered and how ties are broken."""
    if convention not in CONVENTIONS:
        raise SpecError("convention", f"must be one of {', '.join(CONVENTIONS)}; got "
                                      f"{str(convention)[:30]!r}")
    ties = "plus"
    if convention == "simgrid":     # first axis fastest: the same node in C order
        src, dst = (np.ravel_multi_index(np.unravel_index(ids, torus.shape, order="F"),
                                         torus.shape) for ids in (src, dst))
        ties = "simgrid"
    ptr, links = route(torus, src, dst, torus.displacement(src, dst, ties=ties))
    capacity = np.where(torus.link_exists, link_bandwidth, 0.0)
    if injection_bandwidth is not None:       # each node: an injection and an ejection link
        n, base = torus.nodes, torus.n_link_slots
        lens = np.diff(ptr) + 2
        new_ptr = np.concatenate(([0], np.cumsum(lens)))
        new_links = np.empty(new_ptr[-1], dtype=np.int64)
        new_links[new_ptr[:-1]] = base + src                    # out of the source
        new_links[new_ptr[1:] - 1] = base + n + dst             # into the destination
        inner = np.ones(new_ptr[-1], dtype=bool)
        inner[new_ptr[:-1]] = inner[new_ptr[1:] - 1] = False
        new_links[inner] = links
        ptr, links = new_ptr, new_links
        capacity = np.concatenate((capacity, np.full(2 * n, injection_bandwidth)))
    local = src == dst                                          # no link: no time
    finish, solves = flow_completions(ptr, links, capacity, nbytes, start, progress)
    finish = np.where(local, start, finish)
    return {"shape": list(torus.shape), "wrap": list(torus.wrap), "flows": int(len(src)),
            "link_bandwidth_bytes_per_s": link_bandwidth,
            "injection_bandwidth_bytes_per_s": injection_bandwidth,
            "makespan_s": float(finish.max()), "solves": solves,
            "finish_s": finish.tolist(), "hops": torus.hops(src, dst).tolist(),
            "convention": convention, **CONVENTIONS[convention]}
