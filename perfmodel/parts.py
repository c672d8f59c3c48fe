"""The parts of a system (perfmodel.system.SystemSpec): the node, the network and the
software stack, each a frozen dataclass checked on construction.

Every value is checked with the field named as in the TOML file (``network.latency_us``;
the loader prefixes the file and table): of the right type, finite and in a range.
The ranges are bounds, not defaults: far outside any real machine (Fugaku's values
are in docs/facts.md), so a value past one is a typo, and within them every derived time,
rate and energy stays finite. Fields are kept in SI units (bytes, byte/s, Hz, s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

from fpcore.errors import (SpecError, check_bool, check_choice, check_float, check_int,
                           check_list, check_str)
from topologies.allocation import MAX_MACHINE_NODES
from topologies.interface import MAPPINGS, NETWORK_MODELS

from .ops import ATTENTIONS
from .partitions import PARTITIONS
from .sharding import FAMILIES, GATHER_UNITS, OPTIMIZER_PLACES, family_error
from .precisions import PRECISIONS

# A node's peaks: the training precisions (perfmodel.precisions) and fp64, which the
# presets give for the record (HPL) although no layout trains in it.
NODE_PRECISIONS = ("fp64",) + PRECISIONS

GB = 1e9
GIB = 2**30

# Ranges, in the TOML file's units (see the module docstring).
CLOCK_GHZ = dict(lo=1e-3, hi=100.0, lo_open=False)
FLOPS_PER_CYCLE = dict(lo=1e-3, hi=1e7, lo_open=False)    # per core (a GPU "core": 312,000)
MEMORY_GB = dict(lo=0.0, hi=1e7)
BANDWIDTH_GBS = dict(lo=1e-6, hi=1e9, lo_open=False)
EFFICIENCY = dict(lo=1e-6, hi=1.0, lo_open=False)         # of a peak (a stack's scales a link's)
LATENCY_US = dict(lo=0.0, hi=1e6, lo_open=False)
SIZE = dict(lo=0.0, hi=1e9, lo_open=False)                # GEMM dimensions, bytes per cycle
MAX_RANKS_PER_NODE = 10_000
TORUS_AXES = 6         # the flow-level torus model's X, Y, Z, a, b, c (topologies.allocation)


def set_field(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)          # frozen dataclasses normalise their fields


def _quantity(field_name: str, value, scale: float = 1.0, **bounds) -> float:
    """``value`` (in SI units) as a finite float, its range checked in the unit the field
    is written in (``value / scale``: GHz, GB/s, us)."""
    value = check_float(field_name, value, lo=None)
    check_float(field_name, value / scale, **bounds)
    return value


@dataclass(frozen=True)
class NodeSpec:
    """One compute node. Bandwidths in byte/s, clock in Hz, memory in bytes."""

    name: str
    cores: int
    numa_domains: int
    clock_hz: float
    allowed_clocks_hz: tuple[float, ...]
    flops_per_cycle_per_core: tuple[tuple[str, float], ...]   # (precision, FLOP/cycle/core)
    eco_mode: bool
    memory_bytes: float
    usable_memory_bytes: float
    memory_bandwidth: float
    stream_bandwidth: float
    stream_bandwidth_per_domain: float
    inter_domain_bandwidth: float
    gemm_efficiency: float
    power_w: float
    mtbf_hours: float | None = None      # mean time between failures of one node
    # GEMM efficiency over shape: gemm_efficiency / (1 + h/m + h/n + h/k); 0: flat
    gemm_half_size: float = 0.0
    # bytes/s (STREAM convention) at which one rank's MPI reduction runs; 0: free
    # (GPU collective libraries reduce in kernels pipelined with the transfers)
    reduce_bandwidth: float = 0.0
    # an accelerator node's host: its CPU memory bandwidth and the link from each
    # rank's device to it (PCIe), both bytes/s of the whole node and per rank; 0: no
    # host figure (a stack cannot offload its optimizer there)
    host_memory_bandwidth: float = 0.0
    host_link_bandwidth: float = 0.0
    # the eco modes the node runs (A64FX: one FP pipe off, or both on); empty: only
    # eco_mode's own value (a node without an eco mode)
    eco_modes: tuple[bool, ...] = ()

    def __post_init__(self):
        set_field(self, "name", check_str("node.name", self.name, max_len=200))
        set_field(self, "cores", check_int("node.cores", self.cores, hi=100_000))
        set_field(self, "numa_domains", check_int("node.numa_domains", self.numa_domains,
                                                  hi=self.cores))
        set_field(self, "clock_hz", _quantity("node.clock_ghz", self.clock_hz, GB, **CLOCK_GHZ))
        clocks = check_list("node.allowed_clocks_ghz", self.allowed_clocks_hz, min_len=1,
                            max_len=64)
        clocks = tuple(_quantity(f"node.allowed_clocks_ghz[{i}]", c, GB, **CLOCK_GHZ)
                       for i, c in enumerate(clocks))
        set_field(self, "allowed_clocks_hz", clocks)
        if all(abs(self.clock_hz - c) > 1e6 for c in clocks):
            raise SpecError("node.clock_ghz", f"must be one of allowed_clocks_ghz "
                                              f"({', '.join(f'{c / GB:g}' for c in clocks)}); "
                                              f"got {self.clock_hz / GB:g}")
        set_field(self, "eco_mode", check_bool("node.eco_mode", self.eco_mode))
        modes = tuple(check_bool(f"node.eco_modes[{i}]", m) for i, m in enumerate(
            check_list("node.eco_modes", self.eco_modes, max_len=2)))
        if modes and self.eco_mode not in modes:
            raise SpecError("node.eco_mode", f"must be one of eco_modes "
                                             f"({', '.join(map(str, modes))}); got {self.eco_mode}")
        set_field(self, "eco_modes", modes or (self.eco_mode,))
        fpc = self.flops_per_cycle_per_core
        if isinstance(fpc, Mapping):
            fpc = tuple(fpc.items())
        where = "node.flops_per_cycle_per_core"
        if not isinstance(fpc, (tuple, list)) or not all(
                isinstance(p, (tuple, list)) and len(p) == 2 for p in fpc):
            raise SpecError(where, f"must be a table of precision = FLOP per cycle, got {fpc!r}")
        check_list(where, fpc, min_len=1, max_len=4)
        rates = {}
        for p, v in fpc:
            check_choice(where, p, NODE_PRECISIONS)
            rates[p] = _quantity(f"{where}.{p}", v, **FLOPS_PER_CYCLE)
        set_field(self, "flops_per_cycle_per_core", tuple(sorted(rates.items())))
        for name, key, scale in (("memory_bytes", "memory_gib", GIB),
                                 ("usable_memory_bytes", "usable_memory_gb", GB)):
            set_field(self, name, _quantity(f"node.{key}", getattr(self, name), scale,
                                            **MEMORY_GB))
        for name in ("memory_bandwidth", "stream_bandwidth", "stream_bandwidth_per_domain",
                     "inter_domain_bandwidth"):
            set_field(self, name, _quantity(f"node.{name}_gbs", getattr(self, name), GB,
                                            **BANDWIDTH_GBS))
        reduce = _quantity("node.reduce_bandwidth_gbs", self.reduce_bandwidth, GB, lo=0.0,
                           lo_open=False)                      # 0: reductions are free
        if reduce:
            _quantity("node.reduce_bandwidth_gbs", reduce, GB, **BANDWIDTH_GBS)
        set_field(self, "reduce_bandwidth", reduce)
        for name in ("host_memory_bandwidth", "host_link_bandwidth"):
            value = _quantity(f"node.{name}_gbs", getattr(self, name), GB, lo=0.0,
                              lo_open=False)                   # 0: no host figure
            if value:
                _quantity(f"node.{name}_gbs", value, GB, **BANDWIDTH_GBS)
            set_field(self, name, value)
        set_field(self, "power_w", _quantity("node.power_w", self.power_w, lo=0.0,
                                             lo_open=False, hi=1e7))     # 0: not known
        set_field(self, "gemm_efficiency", _quantity("node.gemm_efficiency",
                                                     self.gemm_efficiency, **EFFICIENCY))
        set_field(self, "gemm_half_size", _quantity("node.gemm_half_size", self.gemm_half_size,
                                                    **SIZE))
        if self.mtbf_hours is not None:
            set_field(self, "mtbf_hours", _quantity("node.mtbf_hours", self.mtbf_hours,
                                                    lo=1e-3, lo_open=False, hi=1e12))
        if self.usable_memory_bytes > self.memory_bytes:
            raise SpecError("node.usable_memory_gb", "must not exceed memory_gib")
        if self.stream_bandwidth > self.memory_bandwidth:
            raise SpecError("node.stream_bandwidth_gbs", "must not exceed memory_bandwidth_gbs")

    def peak_flops(self, precision: str) -> float:
        """Peak FLOP/s of the whole node; eco mode uses one of the two FP pipes."""
        per_cycle = dict(self.flops_per_cycle_per_core)
        if precision not in per_cycle:
            raise SpecError("precision", f"{precision} is not supported by {self.name}; "
                                         f"supported: {', '.join(sorted(per_cycle))}")
        eco = 0.5 if self.eco_mode else 1.0
        return self.cores * self.clock_hz * per_cycle[precision] * eco

    def supports(self, precision: str) -> bool:
        return precision in dict(self.flops_per_cycle_per_core)


@dataclass(frozen=True)
class StackSpec:
    """A software stack on a system: what its framework and libraries reach."""

    name: str = "default"
    description: str = "the preset's own efficiencies"
    gemm_efficiency: float | None = None      # overrides node.gemm_efficiency
    gemm_half_size: float | None = None       # overrides node.gemm_half_size
    # memory-bound kernels run at min(STREAM, this x clock) bytes/s per node; None:
    # STREAM-bound (vectorised kernels)
    kernel_bytes_per_cycle: float | None = None
    collective_efficiency: float = 1.0        # of the network model's bandwidth
    overlap_dp: bool = True                   # DP reduction overlaps the backward
    # the ZeRO stages the framework runs as this stack uses it (the planner proposes no
    # other), and the collective algorithms its library runs ("any": the cheapest the
    # network model knows, an ideal library; e.g. ["ring", "bidirectional ring"]: flat
    # rings over the whole group, as NCCL runs all-gather and reduce-scatter)
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    collective_algorithms: tuple[str, ...] = ("any",)
    attention: str = "materialized"           # perfmodel.ops.ATTENTIONS: its attention kernel
    op_overhead_us: float = 0.0               # per kernel the framework launches (eager mode)
    attention_efficiency: float | None = None  # its fused attention kernel's share of peak
    # how its pipeline may place layers on stages (perfmodel.partitions): the even split
    # always, and the uneven fills its framework runs (DeepSpeed's type:...)
    pipeline_partitions: tuple[str, ...] = ("even",)
    # the framework's family of data-parallel modes (perfmodel.sharding: deepspeed,
    # megatron or fsdp): what each ZeRO stage it runs moves, and when
    sharding: str = "deepspeed"
    # how it cuts that traffic: gradient buckets ("layer": one per transformer layer;
    # "flat": one buffer of the stage's gradients; or a size in MB), the unit its weight
    # gathers fetch (perfmodel.sharding.GATHER_UNITS) and how many layers ahead of the
    # one computing it gathers (0: each layer waits for its own gather), and where its
    # optimizer steps (perfmodel.sharding.OPTIMIZER_PLACES)
    reduce_bucket_mb: str | float = "layer"
    gather_granularity: str = "layer"
    prefetch_layers: int = 1
    optimizer: str = "device"
    # the groups its sharded states may be split over: "dp" (all data-parallel ranks)
    # and "node" (the ranks of one node, a replica per node: FSDP HYBRID_SHARD), which
    # the planner then proposes too
    shard_groups: tuple[str, ...] = ("dp",)
    # whether its pipeline overlaps its sends with compute (Megatron-Core's
    # --overlap-p2p-communication), which lets it interleave a pipeline of two stages
    overlap_p2p: bool = False
    # how its framework may lay a mixture of experts' routed experts over the TP ranks,
    # its default first: True, split as the dense MLP is; False, whole on every TP rank,
    # each running 1/tp of their tokens (perfmodel.layout.Layout.expert_tp); the
    # planner proposes each
    expert_tp: tuple[bool, ...] = (True,)

    def __post_init__(self):
        set_field(self, "name", check_str("stacks", self.name, max_len=200))
        where = f"stacks.{self.name}"
        set_field(self, "description", check_str(f"{where}.description", self.description))
        for key, bounds in (("gemm_efficiency", EFFICIENCY), ("gemm_half_size", SIZE),
                            ("kernel_bytes_per_cycle", dict(SIZE, lo=1e-6))):
            if getattr(self, key) is not None:
                set_field(self, key, _quantity(f"{where}.{key}", getattr(self, key), **bounds))
        set_field(self, "collective_efficiency", _quantity(
            f"{where}.collective_efficiency", self.collective_efficiency, **EFFICIENCY))
        check_bool(f"{where}.overlap_dp", self.overlap_dp)
        check_bool(f"{where}.overlap_p2p", self.overlap_p2p)
        stages = check_list(f"{where}.zero_stages", self.zero_stages, min_len=1, max_len=4)
        set_field(self, "zero_stages", tuple(sorted({
            check_int(f"{where}.zero_stages[{i}]", z, lo=0, hi=3) for i, z in enumerate(stages)})))
        names = check_list(f"{where}.collective_algorithms", self.collective_algorithms,
                           min_len=1, max_len=32)
        set_field(self, "collective_algorithms", tuple(
            check_str(f"{where}.collective_algorithms[{i}]", n, max_len=100)
            for i, n in enumerate(names)))
        check_choice(f"{where}.attention", self.attention, ATTENTIONS)
        set_field(self, "op_overhead_us", _quantity(f"{where}.op_overhead_us",
                                                    self.op_overhead_us, **LATENCY_US))
        if self.attention_efficiency is not None:
            set_field(self, "attention_efficiency", _quantity(
                f"{where}.attention_efficiency", self.attention_efficiency, **EFFICIENCY))
        methods = check_list(f"{where}.pipeline_partitions", self.pipeline_partitions,
                             min_len=1, max_len=len(PARTITIONS))
        set_field(self, "pipeline_partitions", tuple(dict.fromkeys(
            ["even"] + [check_choice(f"{where}.pipeline_partitions[{i}]", m, tuple(PARTITIONS))
                        for i, m in enumerate(methods)])))
        check_choice(f"{where}.sharding", self.sharding, tuple(FAMILIES))
        for z in self.zero_stages:
            err = family_error(self.sharding, z)
            if err is not None:
                raise SpecError(f"{where}.zero_stages", err.message)
        bucket = self.reduce_bucket_mb
        if isinstance(bucket, str):
            check_choice(f"{where}.reduce_bucket_mb", bucket, ("layer", "flat"))
        else:
            set_field(self, "reduce_bucket_mb", _quantity(
                f"{where}.reduce_bucket_mb", bucket, lo=1e-6, lo_open=False, hi=1e9))
        check_choice(f"{where}.gather_granularity", self.gather_granularity,
                     tuple(GATHER_UNITS))
        set_field(self, "prefetch_layers", check_int(f"{where}.prefetch_layers",
                                                     self.prefetch_layers, lo=0, hi=1000))
        check_choice(f"{where}.optimizer", self.optimizer, tuple(OPTIMIZER_PLACES))
        groups = check_list(f"{where}.shard_groups", self.shard_groups, min_len=1, max_len=2)
        set_field(self, "shard_groups", tuple(dict.fromkeys(
            ["dp"] + [check_choice(f"{where}.shard_groups[{i}]", g, ("dp", "node"))
                      for i, g in enumerate(groups)])))
        if "node" in self.shard_groups and not any(
                FAMILIES[self.sharding][z].hybrid for z in self.zero_stages):
            raise SpecError(f"{where}.shard_groups", "\"node\" needs a mode that shards "
                                                     "inside groups (fsdp's FULL_SHARD or "
                                                     "SHARD_GRAD_OP) among zero_stages")
        splits = check_list(f"{where}.expert_tp", self.expert_tp, min_len=1, max_len=2)
        set_field(self, "expert_tp", tuple(dict.fromkeys(
            check_bool(f"{where}.expert_tp[{i}]", x) for i, x in enumerate(splits))))
        if "any" in self.collective_algorithms and len(self.collective_algorithms) > 1:
            raise SpecError(f"{where}.collective_algorithms", "is either [\"any\"] or a list "
                                                              "of algorithm names")

    @property
    def algorithms(self) -> tuple[str, ...] | None:
        """The collective algorithms the library runs, or None for any (the cheapest)."""
        return None if self.collective_algorithms == ("any",) else self.collective_algorithms

    def layout_settings(self) -> dict:
        """The Layout fields this stack sets for every layout it runs (not searched)."""
        return {"overlap_dp": self.overlap_dp, "attention": self.attention,
                "sharding": self.sharding, "gather": self.gather_granularity,
                "prefetch": self.prefetch_layers, "optimizer": self.optimizer,
                "overlap_p2p": self.overlap_p2p}

    def reduce_buckets(self, layers: int, grad_bytes: float) -> int:
        """Gradient buckets a stage of ``layers`` layers and ``grad_bytes`` of gradients
        reduces in (each pays the collective's latency)."""
        if self.reduce_bucket_mb == "layer":
            return max(1, layers)
        if self.reduce_bucket_mb == "flat":
            return 1
        return max(1, math.ceil(grad_bytes / (self.reduce_bucket_mb * 1e6)))

    def replace(self, **changes) -> "StackSpec":
        return dataclasses.replace(self, **changes)


STACK_KEYS = ("gemm_efficiency", "gemm_half_size", "kernel_bytes_per_cycle",
              "collective_efficiency", "overlap_dp", "zero_stages", "collective_algorithms",
              "attention", "op_overhead_us", "attention_efficiency", "pipeline_partitions",
              "sharding", "reduce_bucket_mb", "gather_granularity", "prefetch_layers",
              "optimizer", "shard_groups", "overlap_p2p", "expert_tp")


@dataclass(frozen=True)
class NetworkSpec:
    """The interconnect: an N-D torus/mesh (per-axis size and wrap) with its links."""

    kind: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    wrap: tuple[bool, ...]
    link_bandwidth: float
    link_efficiency: float
    latency_s: float
    injection_bandwidth: float
    injection_efficiency: float
    allocation_unit_nodes: int = 1
    large_allocation_unit_nodes: int = 1
    large_allocation_threshold_nodes: int = 0
    put_latency_s: float | None = None        # a collective step (default: latency_s)
    intra_node_latency_s: float | None = None  # a step between ranks of one node
    hop_latency_s: float = 0.0
    model: str = "flow"                        # "flow" or "analytic"
    mapping: str = "tofu"                      # rank placement strategy
    job_torus: bool = True
    # kind "fattree" (GPU clusters): shape (nodes,); the link is one NIC, injection all
    nics_per_node: int = 1
    nodes_per_leaf: int = 1
    oversubscription: float = 1.0

    def __post_init__(self):
        check_choice("network.kind", self.kind, ("torus", "fattree"))
        set_field(self, "nics_per_node", check_int("network.nics_per_node",
                                                   self.nics_per_node, hi=1024))
        set_field(self, "nodes_per_leaf", check_int("network.nodes_per_leaf",
                                                    self.nodes_per_leaf, hi=MAX_MACHINE_NODES))
        set_field(self, "oversubscription", _quantity("network.oversubscription",
                                                      self.oversubscription, lo=1e-3,
                                                      lo_open=False, hi=1e3))
        check_choice("network.model", self.model, NETWORK_MODELS)
        check_choice("network.mapping", self.mapping, MAPPINGS)
        check_bool("network.job_torus", self.job_torus)
        self._check_axes()
        for name in ("link_bandwidth", "injection_bandwidth"):
            set_field(self, name, _quantity(f"network.{name}_gbs", getattr(self, name), GB,
                                            **BANDWIDTH_GBS))
        for name in ("link_efficiency", "injection_efficiency"):
            set_field(self, name, _quantity(f"network.{name}", getattr(self, name),
                                            **EFFICIENCY))
        set_field(self, "latency_s", _quantity("network.latency_us", self.latency_s, 1e-6,
                                               **LATENCY_US))
        for name in ("put_latency_s", "intra_node_latency_s", "hop_latency_s"):
            value = getattr(self, name)
            set_field(self, name, self.latency_s if value is None else _quantity(
                f"network.{name[:-2]}_us", value, 1e-6, **LATENCY_US))
        self._check_allocation()

    def _check_axes(self) -> None:
        axes = check_list("network.axes", self.axes, min_len=1, max_len=16)
        set_field(self, "axes", tuple(check_str(f"network.axes[{i}]", a, max_len=32)
                                      for i, a in enumerate(axes)))
        if len(set(self.axes)) != len(self.axes):
            raise SpecError("network.axes", f"must be distinct names, got {list(self.axes)}")
        shape = check_list("network.shape", self.shape, min_len=1, max_len=16)
        wrap = check_list("network.wrap", self.wrap, min_len=1, max_len=16)
        if not len(self.axes) == len(shape) == len(wrap):
            raise SpecError("network.shape", f"axes, shape and wrap must have the same length; "
                                             f"got {len(self.axes)}, {len(shape)} and {len(wrap)}")
        set_field(self, "shape", tuple(check_int(f"network.shape[{ax}]", n,
                                                 hi=MAX_MACHINE_NODES)
                                       for ax, n in zip(self.axes, shape)))
        set_field(self, "wrap", tuple(check_bool(f"network.wrap[{ax}]", w)
                                      for ax, w in zip(self.axes, wrap)))
        if math.prod(self.shape) > MAX_MACHINE_NODES:
            raise SpecError("network.shape", f"{'x'.join(map(str, self.shape))} is "
                                             f"{math.prod(self.shape):,} nodes; at most "
                                             f"{MAX_MACHINE_NODES:,} are modelled")
        if self.kind == "torus" and self.model == "flow" and len(self.axes) != TORUS_AXES:
            raise SpecError("network.axes", f"the flow-level torus model needs {TORUS_AXES} "
                                            f"axes (X, Y, Z, a, b, c); got {len(self.axes)}: "
                                            f"give model = \"analytic\" (or --network analytic)")

    def _check_allocation(self) -> None:
        for name, lo in (("allocation_unit_nodes", 1), ("large_allocation_unit_nodes", 1),
                         ("large_allocation_threshold_nodes", 0)):
            set_field(self, name, check_int(f"network.{name}", getattr(self, name), lo=lo,
                                            hi=MAX_MACHINE_NODES))
        if self.kind != "torus" or len(self.shape) != TORUS_AXES:
            return
        # a 6D torus is allocated in boxes of its last three axes (the Tofu unit)
        a, b, c = self.shape[3:]
        unit = self.allocation_unit_nodes
        if unit != a * b * c:
            raise SpecError("network.allocation_unit_nodes",
                            f"must be a x b x c = {a * b * c} (the box of the last three axes "
                            f"a torus job is allocated in); got {unit}")
        for name in ("large_allocation_unit_nodes", "large_allocation_threshold_nodes"):
            if getattr(self, name) % unit:
                raise SpecError(f"network.{name}", f"must be a multiple of "
                                                   f"allocation_unit_nodes ({unit}); got "
                                                   f"{getattr(self, name)}")

    @property
    def nodes(self) -> int:
        return math.prod(self.shape)

    @cached_property
    def machine(self):
        """The torus and its allocation rules in the terms topologies/ uses
        (topologies.allocation.MachineShape); only a 6-axis torus has them."""
        from topologies.allocation import MachineShape
        if self.kind != "torus" or len(self.shape) != TORUS_AXES:
            raise SpecError("network.axes", f"the torus job model needs {TORUS_AXES} axes "
                                            f"(X, Y, Z, a, b, c); this {self.kind} has "
                                            f"{len(self.shape)}")
        return MachineShape(shape=self.shape, unit=self.shape[3:],
                            unit_nodes=self.allocation_unit_nodes,
                            large_threshold=self.large_allocation_threshold_nodes,
                            large_unit_z=self.large_allocation_unit_nodes
                            // self.allocation_unit_nodes)

    @property
    def effective_link_bandwidth(self) -> float:
        return self.link_bandwidth * self.link_efficiency

    @property
    def effective_injection_bandwidth(self) -> float:
        return self.injection_bandwidth * self.injection_efficiency

    def allocation_unit(self, nodes: int) -> int:
        """Granularity of a job of ``nodes`` nodes (12, or 48 above 384 on Fugaku)."""
        if nodes > self.large_allocation_threshold_nodes:
            return self.large_allocation_unit_nodes
        return self.allocation_unit_nodes
