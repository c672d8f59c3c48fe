"""Small networks the topology tests share: Tofu-D's figures and the flow model on one ring."""

from topologies.fabric import TofuFabric
from topologies.flownet import FlowNetwork
from topologies.mapping import place
from topologies.torus import Torus

LINK, INJ, INTRA = 6.35e9, 38.1e9, 128e9
PUT, MPI, LOCAL = 0.49e-6, 1.05e-6, 0.145e-6


class OneRing(FlowNetwork):
    """The flow model on a plain 1-D ring of n nodes, one rank per node."""

    def __init__(self, n, wrap=True):
        self.torus = Torus((n,), (wrap,), ("x",))
        self.put_latency_s, self.mpi_latency_s, self.intra_node_latency_s = PUT, MPI, LOCAL
        self.hop_latency_s = 0.0

    def placement(self, job):
        return place(job, self.torus, "linear")

    def fabric(self, job):
        return TofuFabric(self.placement(job), LINK, INJ, INTRA)
