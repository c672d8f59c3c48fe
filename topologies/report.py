"""What ``fugakuperf topo`` and ``fugakuperf collective`` show: data, not rendering."""

from __future__ import annotations

import numpy as np

from .collectives import algorithms
from .flows import max_min_rates
from .interface import DIM_ORDER, JobShape
from .routing import route
from .torus import PLUS
from .tofu import TofuNetwork


def collective_report(net: TofuNetwork, op: str, job: JobShape, nbytes: float,
                      dim: str = "dp") -> dict:
    """One collective on every group of ``dim``: the chosen algorithm and all others."""
    best = net.collective(op, dim, job, nbytes)
    options = {} if op == "p2p" else {
        name: lin.time(nbytes) for name, lin in net.options(op, dim, job).items()}
    group = job.size(dim)
    return {
        "collective": op, "bytes": nbytes, "ranks": group, "groups": job.ranks // group,
        "nodes": job.nodes, "ranks_per_node": job.ranks_per_node,
        "time_s": best.seconds, "algorithm": best.algorithm,
        "bandwidth_bytes_per_s": nbytes / best.seconds if best.seconds > 0 else None,
        "algorithms_s": dict(sorted(options.items(), key=lambda kv: kv[1])),
        "allocation": (net.allocation(job.nodes).describe() if hasattr(net, "allocation")
                       else f"{job.nodes} nodes"),
        "placement": net.placement(job).describe(),
        "network_model": net.name,
    }


def fitted_collective_report(net, op: str, job: JobShape, nbytes: float,
                             calibration: str | None) -> dict:
    """One collective over every rank of ``job`` by a calibration's fitted alpha-beta
    costs (topologies.fitted): what was measured has one algorithm, the library's."""
    cost = net.collective(op, "dp", job, nbytes)
    return {"collective": op, "bytes": nbytes, "ranks": job.ranks, "groups": 1,
            "nodes": job.nodes, "ranks_per_node": job.ranks_per_node,
            "time_s": cost.seconds, "algorithm": cost.algorithm,
            "bandwidth_bytes_per_s": nbytes / cost.seconds if cost.seconds > 0 else None,
            "algorithms_s": {cost.algorithm: cost.seconds}, "network_model": net.name,
            "calibration": calibration}


def topology_report(net: TofuNetwork, job: JobShape, hottest: int = 5) -> dict:
    """Shape, placement, and for each parallel dimension the hops and link loads of
    one ring step of all its groups at once (flows per directed link)."""
    placement = net.placement(job)
    torus = placement.torus
    nodes = placement.node_of_rank
    dims = {}
    for dim in DIM_ORDER:
        if job.size(dim) == 1:
            continue
        groups = placement.groups(dim)
        pieces = [n for _, n in placement.pieces[dim]]
        step = algorithms("allreduce", groups, pieces)["ring"][0]
        src, dst = nodes[step.src], nodes[step.dst]
        inter = src != dst
        hops = torus.hops(src[inter], dst[inter]) if inter.any() else np.zeros(1, dtype=int)
        ptr, links = route(torus, src[inter], dst[inter])
        loads = np.bincount(links, minlength=torus.n_link_slots)
        rates = ring_step_rates(net, torus, src[inter], ptr, links)
        used = np.flatnonzero(loads)
        top = used[np.argsort(-loads[used], kind="stable")][:hottest]
        dims[dim] = {
            "size": job.size(dim), "groups": len(groups),
            "pieces": [list(p) for p in placement.pieces[dim]],
            "ring_step_flows": int(len(src)), "inside_nodes": int((~inter).sum()),
            "hops_mean": float(hops.mean()), "hops_max": int(hops.max()),
            "links_used": int(len(used)),
            "max_flows_per_link": int(loads.max(initial=0)),
            "mean_flows_per_used_link": float(loads[used].mean()) if len(used) else 0.0,
            "hottest_links": [_link(torus, int(l), int(loads[l])) for l in top],
            "max_min_rate_bytes_per_s": None if rates is None else {
                "min": float(rates.min()), "median": float(np.median(rates)),
                "max": float(rates.max())},
        }
    alloc = net.allocation(job.nodes)
    return {
        "nodes": job.nodes, "ranks": job.ranks, "ranks_per_node": job.ranks_per_node,
        "layout": {"tp": job.tp, "pp": job.pp, "dp": job.dp},
        "allocation": alloc.describe(), "shape": list(alloc.shape),
        "virtual_shape": list(alloc.virtual),
        "wrap": dict(zip(torus.names, torus.wrap)),
        "diameter_hops": torus.diameter, "bisection_links": torus.bisection_links(),
        "placement": placement.describe(), "strategy": placement.strategy,
        "dimensions": dims,
    }


def ring_step_rates(net: TofuNetwork, torus, src_nodes, ptr, links):
    """Max-min fair rates (progressive filling) of inter-node flows, each also crossing
    its source node's injection port (one extra link per node)."""
    if len(src_nodes) == 0:
        return None
    n = len(src_nodes)
    with_inj = np.empty(len(links) + n, dtype=np.int64)
    first = ptr[:-1] + np.arange(n)                       # where each flow now starts
    with_inj[first] = torus.n_link_slots + src_nodes      # the injection link goes first
    rest = np.ones(len(with_inj), dtype=bool)
    rest[first] = False
    with_inj[rest] = links
    new_ptr = ptr + np.arange(n + 1)
    capacity = np.concatenate([np.full(torus.n_link_slots, net.link_bandwidth),
                               np.full(torus.nodes, net.injection_bandwidth)])
    return max_min_rates(new_ptr, with_inj, capacity)


def _link(torus, link_id: int, load: int) -> dict:
    node, rest = divmod(link_id, torus.ndim * 2)
    axis, direction = divmod(rest, 2)
    coords = torus.coords([node])[0]
    return {"from": dict(zip(torus.names, map(int, coords))),
            "axis": torus.names[axis], "direction": "+" if direction == PLUS else "-",
            "flows": load}


def node_load_map(net: TofuNetwork, job: JobShape, dim: str,
                  axes: tuple[str, str] = ("X", "Z")) -> list[list[float]]:
    """Flows leaving each node in one ring step of every ``dim`` group at once,
    summed over the other axes: a 2-D map over ``axes`` of the job's torus."""
    placement = net.placement(job)
    torus = placement.torus
    nodes = placement.node_of_rank
    groups = placement.groups(dim)
    step = algorithms("allreduce", groups, [n for _, n in placement.pieces[dim]])["ring"][0]
    src, dst = nodes[step.src], nodes[step.dst]
    inter = src != dst
    ptr, links = route(torus, src[inter], dst[inter])
    loads = np.bincount(links, minlength=torus.n_link_slots).reshape(torus.nodes, -1).sum(axis=1)
    grid = loads.reshape(torus.shape)
    keep = [torus.names.index(a) for a in axes]
    other = tuple(k for k in range(torus.ndim) if k not in keep)
    return np.transpose(grid.sum(axis=other) if other else grid,
                        axes=np.argsort(np.argsort(keep))).tolist()
