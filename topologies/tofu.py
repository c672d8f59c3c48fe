"""The flow-level Tofu network model: allocation, placement, routed and shared links.

It answers the same questions as the alpha-beta model (``NetworkModel``), on the
job's real shape: the node count is allocated as Fugaku's scheduler would (or a
given shape is used), ranks are placed by a named strategy, and each collective
is run as phases of routed flows on all groups of the dimension at once; the
cheapest algorithm is chosen and named (topologies.flownet).

Latencies: a step inside a collective is an RDMA put (the measured 8-byte put
latency), plus a per-hop latency (not published; zero unless given), or, between
ranks of one node, one memory round trip; a point-to-point message pays the full
MPI send/receive latency (the measured ping-pong latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fpcore.caches import cached

from .allocation import (AXES, TOFU_WRAP, AllocationError, JobAllocation, MachineShape, allocate,
                         wrap_for)
from .fabric import TofuFabric
from .flownet import FlowNetwork
from .interface import JobShape
from .mapping import Placement, place
from .torus import Torus


@dataclass(frozen=True, eq=False)
class TofuNetwork(FlowNetwork):
    link_bandwidth: float            # bytes/s per link direction, sustained
    injection_bandwidth: float       # bytes/s per node over all its TNIs, sustained
    intra_node_bandwidth: float      # bytes/s per rank between CMGs
    put_latency_s: float             # one collective step between nodes
    mpi_latency_s: float             # one point-to-point message
    intra_node_latency_s: float      # one collective step inside a node
    hop_latency_s: float = 0.0
    reduce_bandwidth: float | None = None   # bytes/s one rank reduces at (STREAM convention)
    machine: MachineShape = field(default_factory=MachineShape)
    machine_wrap: tuple[bool, ...] = TOFU_WRAP
    job_torus: bool = True
    strategy: str = "tofu"
    shape: JobAllocation | None = None      # a given job shape instead of the allocator's
    algorithms: tuple[str, ...] | None = None   # the library's algorithms (None: any)
    name: str = "tofu flow-level"

    # ---------------------------------------------------------------- placement
    def allocation(self, nodes: int) -> JobAllocation:
        if self.shape is not None:
            if nodes > self.shape.nodes:
                raise AllocationError("shape", f"{self.shape.describe()} holds fewer nodes "
                                               f"than the job's {nodes:,}")
            return self.shape
        return _allocation(self.machine, nodes)

    def placement(self, job: JobShape) -> Placement:
        return _placement(self, job)

    def fabric(self, job: JobShape) -> TofuFabric:
        return TofuFabric(self.placement(job), self.link_bandwidth, self.injection_bandwidth,
                          self.intra_node_bandwidth)

@cached("network", maxsize=1024)
def _allocation(m: MachineShape, nodes: int) -> JobAllocation:
    """The smallest box the allocator gives that holds ``nodes`` nodes: a whole
    number of allocation units, grown unit by unit while no box of that size fits
    the machine (e.g. 29 Tofu units: 29 is prime and larger than any axis)."""
    n, first_error = nodes, None
    while n <= m.nodes:
        unit = m.unit_nodes if n <= m.large_threshold else m.large_unit_nodes
        n = -(-n // unit) * unit
        try:
            return allocate(n, m)
        except AllocationError as e:
            first_error = first_error or e
            n += unit
    raise first_error or AllocationError("nodes", f"{nodes:,} nodes do not fit the machine")


@cached("network", maxsize=512)
def _placement(net: TofuNetwork, job: JobShape) -> Placement:
    alloc = net.allocation(job.nodes)
    wrap = wrap_for(alloc, net.machine_wrap, net.job_torus, net.machine)
    torus = Torus(alloc.shape, wrap, AXES)
    if job.nodes != torus.nodes:
        # The job uses part of its allocation (its node count is not a whole number
        # of allocation units): ranks go on the first nodes in linear order, and the
        # flows are still routed on the allocated shape.
        return place(job, torus, "linear", note=f"the job uses {job.nodes:,} of the "
                                                f"{torus.nodes:,} allocated nodes")
    return place(job, torus, net.strategy)


