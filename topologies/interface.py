"""The narrow interface every network backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

COLLECTIVES = ("allreduce", "allgather", "reduce-scatter", "alltoall", "barrier", "p2p")
# How ranks are placed on a torus (topologies.mapping): TP inside the Tofu unit and PP
# along Z, or plain rank order.
MAPPINGS = ("tofu", "linear")
# The network models a system may ask for, each a NetworkModel backend.
NETWORK_MODELS = {
    "flow": "routed flows sharing links max-min fairly on the job's shape",
    "analytic": "contention-free alpha-beta",
}


def library(options: dict, algorithms: tuple[str, ...] | None) -> dict:
    """The algorithms of ``options`` (name -> anything) a collective library runs:
    those named in ``algorithms``, or every one when it is None (an ideal library that
    picks the cheapest). An operation none of whose algorithms is named keeps them all
    (the library runs it its own way, which the list does not say)."""
    if algorithms is None:
        return options
    return {n: o for n, o in options.items() if n in algorithms} or options


# Rank order inside a job: the first dimension varies fastest (Megatron-LM's
# tensor, then data, then pipeline order).
DIM_ORDER = ("tp", "dp", "pp")


@dataclass(frozen=True)
class JobShape:
    """Sizes of the parallel dimensions of a job and ranks placed per node."""

    tp: int
    pp: int
    dp: int
    ranks_per_node: int = 1

    @property
    def ranks(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def nodes(self) -> int:
        return -(-self.ranks // self.ranks_per_node)

    def size(self, dim: str) -> int:
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp}[dim]

    def stride(self, dim: str) -> int:
        stride = 1
        for d in DIM_ORDER:
            if d == dim:
                return stride
            stride *= self.size(d)
        raise ValueError(f"unknown parallel dimension {dim!r}")


@dataclass(frozen=True)
class GroupGeometry:
    """How one group of a parallel dimension lies on the nodes."""

    size: int                # ranks in the group
    per_node: int            # group members that share a node
    nodes: int               # nodes the group spans
    groups_per_node: int     # groups of this dimension whose members share each node


def group_geometry(job: JobShape, dim: str) -> GroupGeometry:
    """Consecutive ranks fill a node; a group with stride s has ppn // s members per node."""
    size, stride, ppn = job.size(dim), job.stride(dim), job.ranks_per_node
    per_node = max(1, min(size, ppn // stride)) if stride < ppn else 1
    return GroupGeometry(size=size, per_node=per_node, nodes=-(-size // per_node),
                         groups_per_node=max(1, ppn // per_node))


@dataclass(frozen=True)
class CollectiveCost:
    seconds: float
    algorithm: str
    nbytes: float


class NetworkModel(Protocol):
    """What the performance model asks a network backend."""

    name: str

    def collective(self, op: str, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        """Time of one ``op`` among the ranks of dimension ``dim`` (all its groups at once)."""

    def p2p(self, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        """Time to send ``nbytes`` to the neighbour along dimension ``dim``."""
