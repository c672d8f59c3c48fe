"""SystemSpec: node, network, how ranks sit on nodes, and the software stack.

Values come from preset TOML files where each carries its source; the spec keeps
those sources (``SystemSpec.sources``) for reports and ``fugakuperf presets``.

A *software stack* (``StackSpec``) is what the framework and its libraries make of
the hardware: the same A64FX node trained GPT at 0.4-1.0 TFLOP/s under the early
PyTorch port of 2023 and far faster under Fugaku-LLM's tuned stack. A preset may
name several (``[system.stacks.NAME]``); one is its default, ``--stack`` picks
another. A stack can override the GEMM efficiency, cap memory-bound kernels at a
rate per clock cycle (unvectorised kernels run at the core's speed, not the
memory's), scale collective bandwidth by the library's efficiency, and say
whether the framework overlaps the data-parallel reduction with the backward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

from fpcore.errors import SpecError, check_bool, check_choice, check_float, check_int, check_keys

from .presets import system_table

PRECISIONS = ("fp32", "fp16", "bf16")
GB = 1e9
GIB = 2**30


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

    def __post_init__(self):
        check_int("node.cores", self.cores, hi=100_000)
        check_int("node.numa_domains", self.numa_domains, hi=self.cores)
        check_float("node.clock_ghz", self.clock_hz / GB, hi=100)
        check_bool("node.eco_mode", self.eco_mode)
        fpc = self.flops_per_cycle_per_core
        if isinstance(fpc, Mapping):
            fpc = tuple(sorted(fpc.items()))
            object.__setattr__(self, "flops_per_cycle_per_core", fpc)
        for p, v in fpc:
            check_choice("node.flops_per_cycle_per_core", p, ("fp64", "fp32", "fp16", "bf16"))
            check_float(f"node.flops_per_cycle_per_core.{p}", v)
        for name in ("memory_bytes", "usable_memory_bytes", "memory_bandwidth",
                     "stream_bandwidth", "stream_bandwidth_per_domain",
                     "inter_domain_bandwidth"):
            check_float(f"node.{name}", getattr(self, name))
        check_float("node.power_w", self.power_w, lo_open=False)     # 0: not known
        check_float("node.gemm_efficiency", self.gemm_efficiency, hi=1.0)
        check_float("node.gemm_half_size", self.gemm_half_size, lo_open=False)
        check_float("node.reduce_bandwidth_gbs", self.reduce_bandwidth / GB, lo_open=False)
        if self.mtbf_hours is not None:
            check_float("node.mtbf_hours", self.mtbf_hours)
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

    def __post_init__(self):
        where = f"stacks.{self.name}"
        if self.gemm_efficiency is not None:
            check_float(f"{where}.gemm_efficiency", self.gemm_efficiency, hi=1.0)
        if self.gemm_half_size is not None:
            check_float(f"{where}.gemm_half_size", self.gemm_half_size, lo_open=False)
        if self.kernel_bytes_per_cycle is not None:
            check_float(f"{where}.kernel_bytes_per_cycle", self.kernel_bytes_per_cycle)
        check_float(f"{where}.collective_efficiency", self.collective_efficiency, hi=1.0)
        check_bool(f"{where}.overlap_dp", self.overlap_dp)

    def replace(self, **changes) -> "StackSpec":
        return dataclasses.replace(self, **changes)


STACK_KEYS = ("gemm_efficiency", "gemm_half_size", "kernel_bytes_per_cycle",
              "collective_efficiency", "overlap_dp")


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
        check_int("network.nics_per_node", self.nics_per_node, hi=1024)
        check_int("network.nodes_per_leaf", self.nodes_per_leaf, hi=1_000_000)
        check_float("network.oversubscription", self.oversubscription)
        check_choice("network.model", self.model, ("flow", "analytic"))
        check_choice("network.mapping", self.mapping, ("tofu", "linear"))
        check_bool("network.job_torus", self.job_torus)
        for name in ("put_latency_s", "intra_node_latency_s"):
            v = getattr(self, name)
            if v is None:
                object.__setattr__(self, name, self.latency_s)
            else:
                check_float(f"network.{name.replace('_s', '_us')}", v * 1e6, lo=0.0, lo_open=False)
        check_float("network.hop_latency_us", self.hop_latency_s * 1e6, lo=0.0, lo_open=False)
        if not (len(self.axes) == len(self.shape) == len(self.wrap)) or not self.axes:
            raise SpecError("network.shape", "axes, shape and wrap must have the same length")
        for ax, n in zip(self.axes, self.shape):
            check_int(f"network.shape[{ax}]", n, hi=1_000_000)
        check_float("network.link_bandwidth_gbs", self.link_bandwidth / GB)
        check_float("network.link_efficiency", self.link_efficiency, hi=1.0)
        check_float("network.latency_us", self.latency_s * 1e6, lo=0.0, lo_open=False)
        check_float("network.injection_bandwidth_gbs", self.injection_bandwidth / GB)
        check_float("network.injection_efficiency", self.injection_efficiency, hi=1.0)

    @property
    def nodes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

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


@dataclass(frozen=True)
class RankView:
    """What one rank (MPI process) owns when ``ranks_per_node`` share a node."""

    peak_flops: Mapping[str, float]   # by precision
    memory_bandwidth: float           # sustained (STREAM) bytes/s
    usable_memory_bytes: float
    intra_node_bandwidth: float       # between ranks of one node (inter-CMG links)


@dataclass(frozen=True)
class SystemSpec:
    name: str
    description: str
    node: NodeSpec
    network: NetworkSpec
    ranks_per_node: int
    allowed_ranks_per_node: tuple[int, ...]
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    job_shape: str | None = None     # a given torus job shape (e.g. "48x6x48:torus")
    # From a calibration file (calibration/): measured FP32 compute rates
    # (compute.ComputeFit) and per-collective alpha-beta fits ((op, alpha_s, bytes/s), ...)
    compute_fit: object | None = None
    collective_fits: tuple | None = None
    checkpoint_bandwidth: float | None = None   # bytes/s one node writes a checkpoint
    calibration: str | None = None   # where the fits came from
    # the software stack in use (already applied to node and network, see with_stack)
    stack: StackSpec = StackSpec()
    stacks: tuple[StackSpec, ...] = ()           # the stacks the preset describes

    def __post_init__(self):
        if self.ranks_per_node not in self.allowed_ranks_per_node:
            raise SpecError("ppn", f"must be one of {', '.join(map(str, self.allowed_ranks_per_node))} "
                                   f"for {self.name}; got {self.ranks_per_node}")
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    @cached_property
    def rank(self) -> RankView:
        """The share of the node one rank gets.

        One rank per node spans all NUMA domains and gets the node's one-process
        STREAM bandwidth; one rank per domain gets that domain's cores, memory and
        STREAM bandwidth, and talks to its neighbours over the inter-domain links.
        """
        node, ppn = self.node, self.ranks_per_node
        if ppn == 1:
            bw = node.stream_bandwidth
        elif ppn == node.numa_domains:
            bw = node.stream_bandwidth_per_domain
        else:
            bw = node.stream_bandwidth / ppn
        if self.stack.kernel_bytes_per_cycle is not None:    # kernels bound by the cores
            bw = min(bw, self.stack.kernel_bytes_per_cycle * node.clock_hz / ppn)
        return RankView(
            peak_flops=MappingProxyType({p: node.peak_flops(p) / ppn for p in PRECISIONS
                                         if node.supports(p)}),
            memory_bandwidth=bw,
            usable_memory_bytes=node.usable_memory_bytes / ppn,
            intra_node_bandwidth=node.inter_domain_bandwidth,
        )

    def with_options(self, *, clock_ghz: float | None = None, eco: bool | None = None,
                     ppn: int | None = None, network_model: str | None = None,
                     mapping: str | None = None, shape: str | None = None) -> "SystemSpec":
        """The same system at another clock, eco mode, ranks per node or network model."""
        net = self.network
        if network_model is not None or mapping is not None:
            net = dataclasses.replace(net, model=network_model or net.model,
                                      mapping=mapping or net.mapping)
        node = self.node
        if clock_ghz is not None:
            hz = check_float("clock", clock_ghz) * GB
            if all(abs(hz - c) > 1e6 for c in node.allowed_clocks_hz):
                allowed = ", ".join(f"{c / GB:g}" for c in node.allowed_clocks_hz)
                raise SpecError("clock", f"must be one of {allowed} GHz for {node.name}; got {clock_ghz:g}")
            node = dataclasses.replace(node, clock_hz=hz)
        if eco is not None:
            node = dataclasses.replace(node, eco_mode=eco)
        return dataclasses.replace(self, node=node, network=net,
                                   ranks_per_node=self.ranks_per_node if ppn is None else ppn,
                                   job_shape=self.job_shape if shape is None else shape)

    def with_calibration(self, compute_fit=None, collective_fits=None,
                         checkpoint_bandwidth: float | None = None,
                         source: str = "") -> "SystemSpec":
        """This system with measured rates overlaid: FP32 op times from ``compute_fit``,
        collectives from ``collective_fits``, checkpoint writes at ``checkpoint_bandwidth``
        (each only when given)."""
        sources = dict(self.sources)
        if compute_fit is not None:
            sources["compute (fp32)"] = f"calibration {source}"
        if collective_fits:
            sources["collectives"] = f"calibration {source}"
        if checkpoint_bandwidth:
            sources["checkpoint_bandwidth"] = f"calibration {source}"
        return dataclasses.replace(
            self, compute_fit=compute_fit if compute_fit is not None else self.compute_fit,
            collective_fits=tuple(collective_fits) if collective_fits else self.collective_fits,
            checkpoint_bandwidth=checkpoint_bandwidth or self.checkpoint_bandwidth,
            calibration=source or self.calibration, sources=sources)

    def with_stack(self, stack: StackSpec) -> "SystemSpec":
        """This system under ``stack``: its GEMM overrides go to the node and its
        collective efficiency to the link and injection efficiencies (so every network
        model sees them); its kernel rate and DP overlap are read where they apply.
        Apply to a system with the default stack only (preset loading does)."""
        node, net, sources = self.node, self.network, dict(self.sources)
        tag = f"stack {stack.name}"
        for key in ("gemm_efficiency", "gemm_half_size"):
            value = getattr(stack, key)
            if value is not None:
                node = dataclasses.replace(node, **{key: value})
                sources[f"node.{key}"] = f"{tag}: {sources.get(f'stacks.{stack.name}.{key}', '')}"
        if stack.collective_efficiency != 1.0:
            c = stack.collective_efficiency
            net = dataclasses.replace(net, link_efficiency=net.link_efficiency * c,
                                      injection_efficiency=net.injection_efficiency * c)
            for key in ("link_efficiency", "injection_efficiency"):
                sources[f"network.{key}"] = (f"{sources.get(f'network.{key}', '')}; x {c:g} "
                                             f"collective efficiency of {tag}")
        return dataclasses.replace(self, node=node, network=net, stack=stack, sources=sources)

    def settings(self) -> dict:
        """The options a result should echo."""
        out = {"name": self.name, "clock_ghz": self.node.clock_hz / GB,
               "eco_mode": self.node.eco_mode, "ranks_per_node": self.ranks_per_node,
               "max_nodes": self.network.nodes, "stack": self.stack.name}
        if self.calibration:
            out["calibration"] = self.calibration
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sources"] = dict(self.sources)
        d["node"]["flops_per_cycle_per_core"] = dict(self.node.flops_per_cycle_per_core)
        d.pop("rank", None)
        return d


# --------------------------------------------------------------------- loading
_NODE_KEYS = {
    # toml key: (field, scale to SI)
    "cores": ("cores", None), "numa_domains": ("numa_domains", None),
    "clock_ghz": ("clock_hz", GB), "allowed_clocks_ghz": ("allowed_clocks_hz", GB),
    "flops_per_cycle_per_core": ("flops_per_cycle_per_core", None),
    "eco_mode": ("eco_mode", None), "memory_gib": ("memory_bytes", GIB),
    "usable_memory_gb": ("usable_memory_bytes", GB),
    "memory_bandwidth_gbs": ("memory_bandwidth", GB),
    "stream_bandwidth_gbs": ("stream_bandwidth", GB),
    "stream_bandwidth_per_domain_gbs": ("stream_bandwidth_per_domain", GB),
    "inter_domain_bandwidth_gbs": ("inter_domain_bandwidth", GB),
    "gemm_efficiency": ("gemm_efficiency", None), "power_w": ("power_w", None),
    "gemm_half_size": ("gemm_half_size", None),
    "reduce_bandwidth_gbs": ("reduce_bandwidth", GB),
    "mtbf_hours": ("mtbf_hours", None),
}
_NETWORK_KEYS = {
    "axes": ("axes", None), "shape": ("shape", None), "wrap": ("wrap", None),
    "link_bandwidth_gbs": ("link_bandwidth", GB), "link_efficiency": ("link_efficiency", None),
    "latency_us": ("latency_s", 1e-6),
    "injection_bandwidth_gbs": ("injection_bandwidth", GB),
    "injection_efficiency": ("injection_efficiency", None),
    "put_latency_us": ("put_latency_s", 1e-6),
    "intra_node_latency_us": ("intra_node_latency_s", 1e-6),
    "hop_latency_us": ("hop_latency_s", 1e-6),
    "model": ("model", None), "mapping": ("mapping", None), "job_torus": ("job_torus", None),
    "allocation_unit_nodes": ("allocation_unit_nodes", None),
    "large_allocation_unit_nodes": ("large_allocation_unit_nodes", None),
    "large_allocation_threshold_nodes": ("large_allocation_threshold_nodes", None),
    "nics_per_node": ("nics_per_node", None), "nodes_per_leaf": ("nodes_per_leaf", None),
    "oversubscription": ("oversubscription", None),
}


def _unpack(where: str, table: dict, keys: dict, sources: dict, prefix: str) -> dict:
    check_keys(where, table, set(keys) | {"name", "kind"})
    out = {}
    for key, raw in table.items():
        if key in ("name", "kind"):
            out[key] = raw
            continue
        if isinstance(raw, dict) and "value" in raw:
            check_keys(f"{where}.{key}", raw, ("value", "source"))
            value = raw["value"]
            sources[f"{prefix}.{key}"] = raw.get("source", "")
        else:
            value = raw
            sources[f"{prefix}.{key}"] = ""
        fname, scale = keys[key]
        if scale is not None:
            if isinstance(value, list):
                value = tuple(float(v) * scale for v in value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value) * scale
            else:
                raise SpecError(f"{where}.{key}", f"must be a number, got {value!r}")
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            value = MappingProxyType(dict(value))
        out[fname] = value
    return out


def _value(where: str, table: dict, key: str, sources: dict, default=None):
    raw = table.get(key, default)
    if isinstance(raw, dict) and "value" in raw:
        sources[key] = raw.get("source", "")
        return raw["value"]
    return raw


def _stacks(where: str, table: dict, sources: dict) -> tuple[StackSpec, ...]:
    raw = table.get("stacks", {})
    if not isinstance(raw, dict):
        raise SpecError(f"{where}.stacks", "must be a table of [stacks.NAME] tables")
    out = []
    for name, body in raw.items():
        here = f"{where}.stacks.{name}"
        if not isinstance(body, dict):
            raise SpecError(here, "must be a table")
        check_keys(here, body, ("description",) + STACK_KEYS)
        fields = {}
        for key in STACK_KEYS:
            if key in body:
                raw_key = body[key]
                if isinstance(raw_key, dict):
                    check_keys(f"{here}.{key}", raw_key, ("value", "source"))
                    raw_key, source = raw_key.get("value"), raw_key.get("source", "")
                else:
                    source = ""
                fields[key] = raw_key
                sources[f"stacks.{name}.{key}"] = source
        try:
            out.append(StackSpec(name=name, description=str(body.get("description", "")),
                                 **fields))
        except SpecError as e:
            raise SpecError(f"{where}.{e.field}", e.message) from None
    return tuple(out)


def pick_stack(system: SystemSpec, name, default: str | None) -> SystemSpec:
    """``system`` under the stack called ``name`` (or the preset's default); a
    StackSpec instead of a name applies as given (stack fitting tries values)."""
    if isinstance(name, StackSpec):
        return system.with_stack(name)
    wanted = name or default
    if wanted is None:
        return system
    for stack in system.stacks:
        if stack.name == wanted:
            return system.with_stack(stack)
    known = ", ".join(s.name for s in system.stacks) or "none (the preset describes no stacks)"
    raise SpecError("stack", f"{system.name} has no stack {wanted!r}; its stacks: {known}")


def system_from_table(name: str, table: dict, where: str, stack=None) -> SystemSpec:
    check_keys(where, table, ("description", "default_ranks_per_node",
                              "allowed_ranks_per_node", "default_stack", "stacks", "node",
                              "network"))
    for part in ("node", "network"):
        if not isinstance(table.get(part), dict):
            raise SpecError(f"{where}.{part}", "missing table")
    sources: dict[str, str] = {}
    try:
        node_fields = _unpack(f"{where}.node", table["node"], _NODE_KEYS, sources, "node")
        node_fields.setdefault("name", name)
        node_fields.setdefault("allowed_clocks_hz", (node_fields.get("clock_hz", 0.0),))
        node = NodeSpec(**node_fields)
        net_fields = _unpack(f"{where}.network", table["network"], _NETWORK_KEYS, sources, "network")
        net_fields.setdefault("kind", "torus")
        network = NetworkSpec(**net_fields)
    except TypeError as e:   # a required key is missing
        missing = str(e).split("argument", 1)[-1].strip(": '")
        raise SpecError(where, f"missing required key: {missing}") from None
    except SpecError as e:
        field = e.field if e.field.startswith(where) else f"{where}.{e.field}"
        raise SpecError(field, e.message) from None
    ppn = _value(where, table, "default_ranks_per_node", sources, 1)
    allowed = _value(where, table, "allowed_ranks_per_node", sources, [ppn])
    ppn = check_int(f"{where}.default_ranks_per_node", ppn, hi=10_000)
    if not isinstance(allowed, list) or not allowed or ppn not in allowed:
        raise SpecError(f"{where}.default_ranks_per_node",
                        f"must be one of allowed_ranks_per_node ({allowed}); got {ppn}")
    stacks = _stacks(where, table, sources)
    default = _value(where, table, "default_stack", sources, None)
    if default is not None and default not in {s.name for s in stacks}:
        raise SpecError(f"{where}.default_stack", f"names no [stacks.{default}] table")
    system = SystemSpec(name=name, description=table.get("description", ""), node=node,
                        network=network, ranks_per_node=ppn,
                        allowed_ranks_per_node=tuple(allowed), sources=sources, stacks=stacks)
    return pick_stack(system, stack, default)


def load_system(name_or_path: str = "fugaku", *, clock_ghz: float | None = None,
                eco: bool | None = None, ppn: int | None = None,
                network_model: str | None = None, mapping: str | None = None,
                shape: str | None = None, stack=None, allow_files: bool = True) -> SystemSpec:
    """A preset (or, with ``allow_files``, a TOML file) with options; ``stack``: a stack
    name or a StackSpec."""
    name, table, where = system_table(name_or_path, allow_files)
    return system_from_table(name, table, where, stack=stack).with_options(
        clock_ghz=clock_ghz, eco=eco, ppn=ppn, network_model=network_model, mapping=mapping,
        shape=shape)
