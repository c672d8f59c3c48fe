"""A two-level fat tree of multi-GPU nodes: the comparison fabric for GPU clusters.

Model (NVIDIA DGX A100 nodes on InfiniBand, as in Selene):

* A node holds ``devices_per_node`` GPUs joined by a non-blocking switch
  (NVSwitch); each GPU drives ``switch_bandwidth`` bytes/s per direction into it
  (NVLink 3: 12 links x 25 GB/s = 300 GB/s per direction, NVIDIA A100 datasheet).
* Each node has ``nics_per_node`` NICs of ``nic_bandwidth`` bytes/s per
  direction (Selene: 8 x 200 Gb/s HDR InfiniBand per node, one per GPU;
  Narayanan et al., SC'21, Sec. 5). Rail-optimised: local GPU i uses local NIC
  ``i // (devices_per_node // nics_per_node)`` (GPU i uses NIC i when they are
  equal), and traffic leaves and enters a node on the NIC of the sending and of
  the receiving GPU.
* ``nodes_per_leaf`` consecutive nodes hang off one leaf, treated as a single
  non-blocking switch (in a DGX SuperPOD a scalable unit of 20 nodes whose rail
  switches together form the leaf). A leaf reaches the spines over an aggregate
  uplink of ``nodes_per_leaf * nics_per_node * nic_bandwidth / oversubscription``
  bytes/s per direction (1.0: non-blocking). The spine layer is non-blocking.
* Simplifications: routing inside a leaf and through the spines is ideal (no
  ECMP hash collisions); a cross-rail transfer inside a leaf is charged only its
  two NICs (a real rail-optimised SU sends it through the spines or relays it
  over NVSwitch, PXN); a partly filled last leaf keeps the full uplink.

Link ids (directed; D devices, N = nodes * nics_per_node NICs, S leaves)::

    [0, D)                 device d -> node switch        switch_bandwidth
    [D, 2D)                node switch -> device d        switch_bandwidth
    [2D, 2D+N)             NIC n -> leaf                  nic_bandwidth
    [2D+N, 2D+2N)          leaf -> NIC n                  nic_bandwidth
    [2D+2N, 2D+2N+S)       leaf s -> spines               leaf uplink
    [2D+2N+S, 2D+2N+2S)    spines -> leaf s               leaf uplink

Routes (``routes``) are in the CSR form of ``topologies.flows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check_positive(name: str, value, integer: bool) -> None:
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 \
            or not np.isfinite(value):
        what = "a positive integer" if integer else "a positive finite number"
        raise ValueError(f"`{name}` must be {what}; got {value!r}")


@dataclass(frozen=True)
class FatTree:
    nodes: int
    nic_bandwidth: float               # bytes/s per NIC per direction
    devices_per_node: int = 8
    nics_per_node: int = 8             # rail-optimised: one NIC per GPU
    nodes_per_leaf: int = 20           # DGX SuperPOD scalable unit
    oversubscription: float = 1.0      # leaf down-capacity / up-capacity
    switch_bandwidth: float = 300e9    # bytes/s per device per direction (NVLink 3)
    name: str = "fat-tree"

    def __post_init__(self):
        for field in ("nodes", "devices_per_node", "nics_per_node", "nodes_per_leaf"):
            _check_positive(field, getattr(self, field), integer=True)
        for field in ("nic_bandwidth", "oversubscription", "switch_bandwidth"):
            _check_positive(field, getattr(self, field), integer=False)
        if self.devices_per_node % self.nics_per_node:
            raise ValueError(f"`nics_per_node` ({self.nics_per_node}) must divide "
                             f"`devices_per_node` ({self.devices_per_node})")

    # Sizes ------------------------------------------------------------------

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def nics(self) -> int:
        return self.nodes * self.nics_per_node

    @property
    def leaves(self) -> int:
        return -(-self.nodes // self.nodes_per_leaf)

    @property
    def n_links(self) -> int:
        return 2 * (self.devices + self.nics + self.leaves)

    @property
    def leaf_uplink_bandwidth(self) -> float:
        """Bytes/s per direction between one leaf and the spines."""
        return self.nodes_per_leaf * self.nics_per_node * self.nic_bandwidth / self.oversubscription

    @property
    def capacity(self) -> np.ndarray:
        """(n_links,) bytes/s of each link id, in the layout of the module docstring."""
        return np.repeat([self.switch_bandwidth, self.nic_bandwidth, self.leaf_uplink_bandwidth],
                         [2 * self.devices, 2 * self.nics, 2 * self.leaves]).astype(np.float64)

    # Placement (vectorised over device ids) ----------------------------------

    def node_of(self, device):
        return np.asarray(device) // self.devices_per_node

    def nic_of(self, device):
        """Global NIC id of each device's rail."""
        gpus_per_nic = self.devices_per_node // self.nics_per_node
        local = np.asarray(device) % self.devices_per_node
        return self.node_of(device) * self.nics_per_node + local // gpus_per_nic

    def leaf_of(self, device):
        return self.node_of(device) // self.nodes_per_leaf

    # Link ids ----------------------------------------------------------------

    def switch_up(self, device):
        return np.asarray(device)

    def switch_down(self, device):
        return self.devices + np.asarray(device)

    def nic_up(self, nic):
        return 2 * self.devices + np.asarray(nic)

    def nic_down(self, nic):
        return 2 * self.devices + self.nics + np.asarray(nic)

    def leaf_up(self, leaf):
        return 2 * (self.devices + self.nics) + np.asarray(leaf)

    def leaf_down(self, leaf):
        return 2 * (self.devices + self.nics) + self.leaves + np.asarray(leaf)

    # Routing -----------------------------------------------------------------

    def _pairs(self, src, dst) -> tuple[np.ndarray, np.ndarray]:
        s, d = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
        if s.ndim != 1 or s.shape != d.shape:
            raise ValueError(f"`src` and `dst` must be 1-D of equal length; got {s.shape}, {d.shape}")
        for name, a in (("src", s), ("dst", d)):
            if a.size and (a.min() < 0 or a.max() >= self.devices):
                raise ValueError(f"`{name}` device ids must lie in [0, {self.devices})")
        return s, d

    def _case(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        """0 same device, 1 same node, 2 same leaf, 3 across leaves."""
        return np.select([s == d, self.node_of(s) == self.node_of(d),
                          self.leaf_of(s) == self.leaf_of(d)], [0, 1, 2], default=3)

    def routes(self, src, dst) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(flow_ptr, flow_links)`` of the flows ``src[i] -> dst[i]``.

        Same device: no links. Same node: [src switch up, dst switch down].
        Same leaf: [src NIC up, dst NIC down]. Across leaves: [src NIC up,
        src leaf up, dst leaf down, dst NIC down].
        """
        s, d = self._pairs(src, dst)
        case = self._case(s, d)
        n_hops = np.array([0, 2, 2, 4])[case]                          # (F,)
        nic_down = self.nic_down(self.nic_of(d))
        table = np.stack([self.nic_up(self.nic_of(s)), self.leaf_up(self.leaf_of(s)),
                          self.leaf_down(self.leaf_of(d)), nic_down], axis=1)  # (F, 4)
        leaf = case == 2
        table[leaf, 1] = nic_down[leaf]
        node = case == 1
        table[node, 0], table[node, 1] = self.switch_up(s[node]), self.switch_down(d[node])
        flow_ptr = np.zeros(s.size + 1, dtype=np.int64)
        np.cumsum(n_hops, out=flow_ptr[1:])
        flow_links = table[np.arange(4) < n_hops[:, None]]             # row-major: route order
        return flow_ptr, flow_links.astype(np.int64)

    def hops(self, src, dst) -> np.ndarray:
        """Switches traversed: 0 same device, 1 same node (NVSwitch), 1 same leaf, 3 across."""
        s, d = self._pairs(src, dst)
        return np.array([0, 1, 1, 3])[self._case(s, d)]
