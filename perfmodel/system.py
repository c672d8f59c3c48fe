"""SystemSpec: node, network, how ranks sit on nodes, and the software stack.

Values come from preset TOML files where each carries its source; the spec keeps
those sources (``SystemSpec.sources``) for reports and ``fugakuperf presets``, and
remembers the table it was read from (``origin``, ``file_values``), so what is
reported describes the system in use, whatever its table is called. The parts
(``NodeSpec``, ``NetworkSpec``, ``StackSpec``) and the ranges every value is checked
against are in perfmodel.parts; errors name the field as in the TOML file
(``mysys.toml:mysys.network.allocation_unit_nodes: ...``).

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

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

from fpcore.caches import KeptHash
from fpcore.errors import (SpecError, check_bool, check_float, check_int, check_keys,
                           check_list, check_str, check_table, require)

from .parts import (GB, GIB, MAX_RANKS_PER_NODE, STACK_KEYS, TORUS_AXES, NetworkSpec, NodeSpec,
                    StackSpec, set_field)
from .precisions import PRECISIONS
from .presets import system_table

__all__ = ["GB", "GIB", "PRECISIONS", "NetworkSpec", "NodeSpec", "RankView", "StackSpec",
           "SystemSpec", "load_system", "pick_stack", "system_from_table"]


@dataclass(frozen=True)
class RankView:
    """What one rank (MPI process) owns when ``ranks_per_node`` share a node."""

    peak_flops: Mapping[str, float]   # by precision
    memory_bandwidth: float           # sustained (STREAM) bytes/s
    usable_memory_bytes: float
    intra_node_bandwidth: float       # between ranks of one node (inter-CMG links)


@dataclass(frozen=True)
class SystemSpec(KeptHash):
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
    # the declared ranges of assumed values (perfmodel.uncertainty: [NAME.uncertainty])
    uncertain: tuple = ()
    # a calibration's own measured iterations, as evidence for the bands of this system's
    # predictions (perfmodel.evidence.EvidenceRun; calibration.host.overlay)
    evidence: tuple = field(default=(), compare=False, repr=False)
    # where the system was read ("FILE:TABLE"; "" when built in code) and its table's
    # values keyed as in the file (``node.cores``), in the file's units
    origin: str = field(default="", compare=False)
    file_values: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        set_field(self, "name", check_str("system", self.name, max_len=200))
        set_field(self, "description", check_str("description", self.description))
        allowed = check_list("allowed_ranks_per_node", self.allowed_ranks_per_node, min_len=1,
                             max_len=64)
        set_field(self, "allowed_ranks_per_node", tuple(
            check_int(f"allowed_ranks_per_node[{i}]", p, hi=MAX_RANKS_PER_NODE)
            for i, p in enumerate(allowed)))
        set_field(self, "ranks_per_node", check_int("ppn", self.ranks_per_node,
                                                    hi=MAX_RANKS_PER_NODE))
        if self.ranks_per_node not in self.allowed_ranks_per_node:
            allowed = ", ".join(map(str, self.allowed_ranks_per_node))
            raise SpecError("ppn", f"must be one of {allowed} for {self.name}; got "
                                   f"{self.ranks_per_node}")
        nics = self.network.nics_per_node
        if self.network.kind == "fattree" and any(p % nics for p in self.allowed_ranks_per_node):
            raise SpecError("network.nics_per_node", f"must divide every allowed ranks per node "
                                                     f"({list(self.allowed_ranks_per_node)}): the "
                                                     f"ranks of a node share its NICs evenly; "
                                                     f"got {nics}")
        if self.checkpoint_bandwidth is not None:
            check_float("checkpoint_bandwidth", self.checkpoint_bandwidth)
        set_field(self, "sources", MappingProxyType(dict(self.sources)))
        set_field(self, "file_values", dict(self.file_values))
        if self.job_shape is not None:
            self.job_allocation            # parsed now: a bad shape is refused before any work

    # a system keys many caches: its hash is kept, its nested parts not hashed again
    __hash__ = KeptHash.__hash__

    def __getstate__(self):
        """Pickled as plain data (the read-only views and derived values are rebuilt)."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["sources"] = dict(self.sources)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, sources=MappingProxyType(state["sources"]))

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

    @cached_property
    def job_allocation(self):
        """The given job shape as a box of the torus (topologies.allocation.JobAllocation),
        or None when the allocator model chooses the box."""
        if self.job_shape is None:
            return None
        from topologies.allocation import parse_shape
        net = self.network
        if net.kind != "torus" or len(net.shape) != TORUS_AXES:
            raise SpecError("shape", f"is a torus job shape; {self.name}'s network is a "
                                     f"{len(net.shape)}-axis {net.kind}, which has none")
        return parse_shape(self.job_shape, net.machine)

    def check_nodes(self, nodes: int, given: str = "--nodes") -> int:
        """``nodes`` when a job of that many nodes fits the machine and the given job
        shape; otherwise a SpecError naming ``nodes`` or ``shape`` (``given``: what asked
        for the nodes, for the message)."""
        nodes = check_int("nodes", nodes, hi=self.network.nodes)
        job = self.job_allocation
        if job is not None and nodes > job.nodes:
            raise SpecError("shape", f"{self.job_shape} is {job.describe()}, fewer than the "
                                     f"{nodes:,} nodes the job needs ({given}); give a shape of "
                                     f"at least {nodes:,} nodes or a smaller job")
        return nodes

    def with_options(self, *, clock_ghz: float | None = None, eco: bool | None = None,
                     ppn: int | None = None, network_model: str | None = None,
                     mapping: str | None = None, shape: str | None = None) -> "SystemSpec":
        """The same system at another clock, eco mode, ranks per node or network model."""
        net, sources = self.network, dict(self.sources)
        if network_model is not None or mapping is not None:
            net = dataclasses.replace(net, model=network_model or net.model,
                                      mapping=mapping or net.mapping)
        node = self.node
        if clock_ghz is not None:
            hz = check_float("clock", clock_ghz) * GB
            if all(abs(hz - c) > 1e6 for c in node.allowed_clocks_hz):
                allowed = ", ".join(f"{c / GB:g}" for c in node.allowed_clocks_hz)
                raise SpecError("clock", f"must be one of {allowed} GHz for {node.name}; got "
                                         f"{clock_ghz:g}")
            node = dataclasses.replace(node, clock_hz=hz)
        if eco is not None:
            if eco not in node.eco_modes:
                raise SpecError("eco", f"{node.name} has no eco mode (its preset gives none)"
                                if len(node.eco_modes) == 1 and not node.eco_modes[0] else
                                f"must be {node.eco_modes[0]} on {node.name}")
            node = dataclasses.replace(node, eco_mode=eco)
        for part, key, before, after, option in (
                ("node", "clock_ghz", self.node.clock_hz / GB, node.clock_hz / GB, "clock"),
                ("node", "eco_mode", self.node.eco_mode, node.eco_mode, "eco"),
                ("network", "model", self.network.model, net.model, "network model"),
                ("network", "mapping", self.network.mapping, net.mapping, "mapping")):
            if before != after:            # the value in use is the option's: say so
                old = f"{before:g}" if isinstance(before, float) else str(before)
                was = sources.get(f"{part}.{key}")
                sources[f"{part}.{key}"] = (f"the {option} option (instead of {old}"
                                            + (f": {was})" if was else ")"))
        return dataclasses.replace(self, node=node, network=net, sources=sources,
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
        if stack.optimizer == "host" and not (node.host_memory_bandwidth
                                              and node.host_link_bandwidth):
            raise SpecError(f"stacks.{stack.name}.optimizer",
                            "host needs node.host_memory_bandwidth_gbs and "
                            "node.host_link_bandwidth_gbs (where the offloaded optimizer "
                            "steps, and the link the gradients and weights cross)")
        for key in ("gemm_efficiency", "gemm_half_size"):
            value = getattr(stack, key)
            if value is not None:
                node = dataclasses.replace(node, **{key: value})
                sources[f"node.{key}"] = f"{tag}: {sources.get(f'stacks.{stack.name}.{key}', '')}"
        if stack.collective_efficiency != 1.0:
            c = stack.collective_efficiency
            try:
                net = dataclasses.replace(net, link_efficiency=net.link_efficiency * c,
                                          injection_efficiency=net.injection_efficiency * c)
            except SpecError as e:
                raise SpecError(f"stacks.{stack.name}.collective_efficiency",
                                f"{c:g} x the network's efficiencies ({e.field}: {e.message})"
                                ) from None
            for key in ("link_efficiency", "injection_efficiency"):
                sources[f"network.{key}"] = (f"{sources.get(f'network.{key}', '')}; "
                                             f"{getattr(self.network, key):g} x {c:g} "
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

    def toml_values(self) -> dict:
        """The values of this system keyed as in its TOML file (``node.cores``), in the
        file's units: the file's own, except where the system in use differs (an option
        or the stack changed it)."""
        out = copy.deepcopy(self.file_values)
        for part, keys in (("node", _NODE_KEYS), ("network", _NETWORK_KEYS)):
            spec = getattr(self, part)
            for key, (name, scale, kind) in keys.items():
                here = f"{part}.{key}"
                if here in out and not _same(_convert(here, out[here], scale, kind),
                                             getattr(spec, name)):
                    out[here] = _in_file_units(getattr(spec, name), scale)
        return out

    def to_dict(self) -> dict:
        d = _plain(self)
        d["node"]["flops_per_cycle_per_core"] = dict(self.node.flops_per_cycle_per_core)
        return d


def _plain(value):
    """``value`` with its dataclasses and mappings (read-only views too) as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


# --------------------------------------------------------------------- loading
# toml key: (field, scale to SI, kind of value)
_NODE_KEYS = {
    "name": ("name", None, "str"),
    "cores": ("cores", None, "int"), "numa_domains": ("numa_domains", None, "int"),
    "clock_ghz": ("clock_hz", GB, "float"),
    "allowed_clocks_ghz": ("allowed_clocks_hz", GB, "floats"),
    "flops_per_cycle_per_core": ("flops_per_cycle_per_core", None, "rates"),
    "eco_mode": ("eco_mode", None, "bool"), "eco_modes": ("eco_modes", None, "bools"),
    "memory_gib": ("memory_bytes", GIB, "float"),
    "usable_memory_gb": ("usable_memory_bytes", GB, "float"),
    "memory_bandwidth_gbs": ("memory_bandwidth", GB, "float"),
    "stream_bandwidth_gbs": ("stream_bandwidth", GB, "float"),
    "stream_bandwidth_per_domain_gbs": ("stream_bandwidth_per_domain", GB, "float"),
    "inter_domain_bandwidth_gbs": ("inter_domain_bandwidth", GB, "float"),
    "gemm_efficiency": ("gemm_efficiency", None, "float"), "power_w": ("power_w", None, "float"),
    "gemm_half_size": ("gemm_half_size", None, "float"),
    "reduce_bandwidth_gbs": ("reduce_bandwidth", GB, "float"),
    "host_memory_bandwidth_gbs": ("host_memory_bandwidth", GB, "float"),
    "host_link_bandwidth_gbs": ("host_link_bandwidth", GB, "float"),
    "mtbf_hours": ("mtbf_hours", None, "float"),
}
_NETWORK_KEYS = {
    "kind": ("kind", None, "str"),
    "axes": ("axes", None, "strs"), "shape": ("shape", None, "ints"),
    "wrap": ("wrap", None, "bools"),
    "link_bandwidth_gbs": ("link_bandwidth", GB, "float"),
    "link_efficiency": ("link_efficiency", None, "float"),
    "latency_us": ("latency_s", 1e-6, "float"),
    "injection_bandwidth_gbs": ("injection_bandwidth", GB, "float"),
    "injection_efficiency": ("injection_efficiency", None, "float"),
    "put_latency_us": ("put_latency_s", 1e-6, "float"),
    "intra_node_latency_us": ("intra_node_latency_s", 1e-6, "float"),
    "hop_latency_us": ("hop_latency_s", 1e-6, "float"),
    "model": ("model", None, "str"), "mapping": ("mapping", None, "str"),
    "job_torus": ("job_torus", None, "bool"),
    "allocation_unit_nodes": ("allocation_unit_nodes", None, "int"),
    "large_allocation_unit_nodes": ("large_allocation_unit_nodes", None, "int"),
    "large_allocation_threshold_nodes": ("large_allocation_threshold_nodes", None, "int"),
    "nics_per_node": ("nics_per_node", None, "int"),
    "nodes_per_leaf": ("nodes_per_leaf", None, "int"),
    "oversubscription": ("oversubscription", None, "float"),
}
_DEFAULTED = {"node": ("name", "allowed_clocks_ghz"), "network": ("kind",)}  # by the loader
_IDENTIFIERS = ("name", "kind")
TOP_KEYS = ("description", "default_ranks_per_node", "allowed_ranks_per_node", "default_stack",
            "stacks", "node", "network", "uncertainty")


def _required(cls, keys: dict, defaulted) -> list[str]:
    """The TOML keys of the fields of ``cls`` that have no default."""
    bare = {f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return [k for k, (name, _, _) in keys.items() if name in bare and k not in defaulted]


def _convert(where: str, value, scale, kind: str):
    """A TOML value of ``kind`` checked for its type and given in SI units (ranges are
    checked by the spec it goes into)."""
    scale = scale or 1.0
    if kind == "int":
        return check_int(where, value, lo=None)
    if kind == "float":
        return check_float(where, value, lo=None) * scale
    if kind == "bool":
        return check_bool(where, value)
    if kind == "str":
        return check_str(where, value, max_len=200)
    if kind == "rates":
        table = check_table(where, value)
        return {check_str(where, p, max_len=10): check_float(f"{where}.{p}", v, lo=None)
                for p, v in table.items()}
    items = check_list(where, value, min_len=1, max_len=64)
    one = {"floats": "float", "ints": "int", "bools": "bool", "strs": "str"}[kind]
    return tuple(_convert(f"{where}[{i}]", v, scale, one) for i, v in enumerate(items))


def _same(a, b) -> bool:
    """Whether two values of a spec are equal (floats to rounding after a unit change)."""
    if isinstance(a, dict):
        a = tuple(sorted(a.items()))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300))
    return a == b


def _in_file_units(value, scale):
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):          # (precision, rate) pairs
            return dict(value)
        return [_in_file_units(v, scale) for v in value]
    if isinstance(value, float):
        return float(f"{value / (scale or 1.0):.12g}")      # without the unit change's noise
    return value


def _unwrap(where: str, raw, kind: str, sources: dict, key: str):
    """The value of a plain (``cores = 48``) or sourced (``{ value = 48, source = "..." }``)
    entry, its source recorded under ``key``."""
    if isinstance(raw, dict) and not (kind == "rates" and "value" not in raw):
        check_keys(where, raw, ("value", "source"))
        require(where, raw, ("value",))
        sources[key] = check_str(f"{where}.source", raw.get("source", ""))
        return raw["value"]
    sources[key] = ""
    return raw


def _part(where: str, table, keys: dict, cls, sources: dict, prefix: str) -> dict:
    """The fields of ``cls`` from a [node] or [network] table."""
    check_table(where, table)
    check_keys(where, table, keys)
    require(where, table, _required(cls, keys, _DEFAULTED[prefix]))
    out = {}
    for key, raw in table.items():
        name, scale, kind = keys[key]
        if key in _IDENTIFIERS:                 # names, not measured values: no source
            value = raw
        else:
            value = _unwrap(f"{where}.{key}", raw, kind, sources, f"{prefix}.{key}")
        out[name] = _convert(f"{where}.{key}", value, scale, kind)
    return out


def _top(where: str, table: dict, key: str, sources: dict):
    """A top-level value (plain or sourced; None when absent)."""
    raw = table.get(key)
    if isinstance(raw, dict):
        check_keys(f"{where}.{key}", raw, ("value", "source"))
        require(f"{where}.{key}", raw, ("value",))
        sources[key] = check_str(f"{where}.{key}.source", raw.get("source", ""))
        return raw["value"]
    return raw


def _stacks(where: str, table: dict, sources: dict) -> tuple[StackSpec, ...]:
    raw = table.get("stacks", {})
    if not isinstance(raw, dict):
        raise SpecError(f"{where}.stacks", "must be a table of [stacks.NAME] tables")
    out = []
    for name, body in raw.items():
        here = f"{where}.stacks.{name}"
        check_table(here, body)
        check_keys(here, body, ("description",) + STACK_KEYS)
        fields = {}
        for key in STACK_KEYS:
            if key in body:
                fields[key] = _unwrap(f"{here}.{key}", body[key], "float", sources,
                                      f"stacks.{name}.{key}")
        try:
            out.append(StackSpec(name=name, description=check_str(
                f"{here}.description", body.get("description", "")), **fields))
        except SpecError as e:
            raise e.within(where) from None
    return tuple(out)


def _file_values(table: dict) -> dict:
    """The (checked) table's values keyed as in the TOML file (``node.cores``), in its units."""
    def value(raw):
        return copy.deepcopy(raw["value"] if isinstance(raw, dict) and "value" in raw else raw)
    out = {f"{part}.{key}": value(raw)
           for part in ("node", "network") for key, raw in table[part].items()}
    for key in ("default_ranks_per_node", "allowed_ranks_per_node", "default_stack"):
        out[key] = value(table.get(key))
    for name, body in table.get("stacks", {}).items():
        for key, raw in body.items():
            if key != "description":
                out[f"stacks.{name}.{key}"] = value(raw)
    return out


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
    raise SpecError("stack", f"{system.name} has no stack {str(wanted)[:100]!r}; its stacks: "
                             f"{known}")


def system_from_table(name: str, table: dict, where: str, stack=None) -> SystemSpec:
    """The system a TOML table describes; ``where`` ("FILE:TABLE") prefixes every error's
    field and is kept as the system's ``origin``."""
    check_keys(where, table, TOP_KEYS)
    require(where, table, ("node", "network"))
    sources: dict[str, str] = {}
    try:
        node_fields = _part("node", table["node"], _NODE_KEYS, NodeSpec, sources, "node")
        node_fields.setdefault("name", name)
        node_fields.setdefault("allowed_clocks_hz", (node_fields["clock_hz"],))
        node = NodeSpec(**node_fields)
        net_fields = _part("network", table["network"], _NETWORK_KEYS, NetworkSpec, sources,
                           "network")
        net_fields.setdefault("kind", "torus")
        network = NetworkSpec(**net_fields)
        description = _top(where, table, "description", {})
        description = check_str("description", "" if description is None else description)
        ppn = _top(where, table, "default_ranks_per_node", sources)
        ppn = check_int("default_ranks_per_node", 1 if ppn is None else ppn,
                        hi=MAX_RANKS_PER_NODE)
        allowed = _top(where, table, "allowed_ranks_per_node", sources)
        allowed = check_list("allowed_ranks_per_node", [ppn] if allowed is None else allowed,
                             min_len=1, max_len=64)
        allowed = tuple(check_int(f"allowed_ranks_per_node[{i}]", p, hi=MAX_RANKS_PER_NODE)
                        for i, p in enumerate(allowed))
        if ppn not in allowed:
            raise SpecError("default_ranks_per_node", f"must be one of allowed_ranks_per_node "
                                                      f"({list(allowed)}); got {ppn}")
        stacks = _stacks(where, table, sources)
        default = _top(where, table, "default_stack", sources)
        if default is not None:
            check_str("default_stack", default, max_len=200)
            if default not in {s.name for s in stacks}:
                raise SpecError("default_stack", f"names no [stacks.{default}] table")
        from .uncertainty import read_uncertainty
        uncertain = read_uncertainty("uncertainty", table.get("uncertainty"))
        stack_names = {s.name for s in stacks}
        for u in uncertain:
            if u.stack is not None and u.stack not in stack_names:
                raise SpecError(f"uncertainty.{u.key}", f"names no [stacks.{u.stack}] table")
        system = SystemSpec(name=name, description=description, node=node, network=network,
                            ranks_per_node=ppn, allowed_ranks_per_node=allowed,
                            sources=sources, stacks=stacks, origin=where,
                            file_values=_file_values(table), uncertain=uncertain)
        for described in stacks:              # each stack the file describes applies
            system.with_stack(described)
    except SpecError as e:
        raise e.within(where) from None
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
