"""A switched GPU cluster (fat tree of NVSwitch nodes) behind the ``NetworkModel`` interface.

The same collectives and the same estimator as the Tofu model, on
``topologies.fattree.FatTree``: rank r runs on device r (ranks fill nodes in
order, Megatron-LM's tensor-parallel-first order keeping TP inside a node), and
a phase of flows costs its slowest flow's share of its busiest link.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpcore.caches import cached

from .fabric import PhaseCost
from .fattree import FatTree
from .flownet import FlowNetwork
from .interface import DIM_ORDER, JobShape, group_geometry


@dataclass(frozen=True)
class SwitchedPlacement:
    job: JobShape
    devices_per_node: int

    @property
    def node_of_rank(self) -> np.ndarray:
        return np.arange(self.job.ranks) // self.devices_per_node

    def groups(self, dim: str) -> np.ndarray:
        job = self.job
        ranks = np.arange(job.ranks).reshape(job.pp, job.dp, job.tp)
        axis = {"pp": 0, "dp": 1, "tp": 2}[dim]
        return np.moveaxis(ranks, axis, -1).reshape(-1, job.size(dim))

    @property
    def pieces(self) -> dict:
        """Per dimension: the members sharing a node, then the nodes."""
        out = {}
        for dim in DIM_ORDER:
            g = group_geometry(self.job, dim)
            out[dim] = tuple(p for p in (("node", g.per_node), ("nodes", g.nodes)) if p[1] > 1)
        return out

    def describe(self) -> list[str]:
        return [f"{d.upper()} {self.job.size(d)}: "
                + (" x ".join(f"{a}:{n}" for a, n in self.pieces[d]) or "-") for d in DIM_ORDER]


@dataclass
class SwitchedFabric:
    tree: FatTree
    placement: SwitchedPlacement

    def phase(self, src, dst, dim: str | None = None) -> PhaseCost:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if not len(src):
            return PhaseCost(float("inf"), 0, True)
        ptr, links = self.tree.routes(src, dst)
        loads = np.bincount(links, minlength=self.tree.n_links)
        worst = float(np.max(loads / self.tree.capacity))
        intra = bool(np.all(self.tree.node_of(src) == self.tree.node_of(dst)))
        return PhaseCost(float("inf") if worst == 0 else 1.0 / worst,
                         int(self.tree.hops(src, dst).max()), intra)

    def routes(self, src, dst) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR ``(flow_ptr, flow_links)`` of every flow and each link id's capacity."""
        ptr, links = self.tree.routes(np.asarray(src, dtype=np.int64),
                                      np.asarray(dst, dtype=np.int64))
        return ptr, links, self.tree.capacity

    def best_rate(self, intra: bool) -> float:
        t = self.tree
        return t.switch_bandwidth if intra else min(t.nic_bandwidth, t.switch_bandwidth)

    def rate_bound(self, src, dst, dim: str | None = None) -> tuple[bool, float]:
        cost = self.phase(src, dst)        # routing a fat tree is cheap: the bound is exact
        return cost.intra, cost.rate


@dataclass(frozen=True, eq=False)
class SwitchedNetwork(FlowNetwork):
    tree_template: FatTree             # link speeds and shape; nodes follow the job
    put_latency_s: float               # one collective step between nodes
    mpi_latency_s: float               # one point-to-point message
    intra_node_latency_s: float        # one collective step inside a node
    hop_latency_s: float = 0.0
    reduce_bandwidth: float | None = None   # bytes/s one rank reduces at (STREAM convention)
    algorithms: tuple[str, ...] | None = None   # the library's algorithms (None: any)
    name: str = "fat-tree flow-level"

    def placement(self, job: JobShape) -> SwitchedPlacement:
        per = self.tree_template.devices_per_node
        if job.ranks_per_node != per:
            raise ValueError(f"ppn: a {per}-GPU node runs {per} ranks; got {job.ranks_per_node}")
        return SwitchedPlacement(job, per)

    def fabric(self, job: JobShape) -> SwitchedFabric:
        return _fabric(self, job)


@cached("network", maxsize=256)
def _fabric(net: SwitchedNetwork, job: JobShape) -> SwitchedFabric:
    from dataclasses import replace
    tree = replace(net.tree_template, nodes=job.nodes)
    return SwitchedFabric(tree, net.placement(job))
