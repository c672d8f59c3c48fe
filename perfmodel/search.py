"""The layout search: enumerate valid layouts, reject those that do not fit, rank the rest.

For a job of N nodes (R = N x ranks-per-node ranks) the search varies, unless the
user pins them: tp over the divisors of heads that also divide kv_heads and ffn,
pp over the divisors of layers (and, where the software stack places layers
unevenly, every depth that leaves each stage a layer, with each distinct split of
its partition methods: perfmodel.partitions), dp = R / (tp pp), micro-batch over
powers of two that divide the global batch share, schedule (1F1B, and interleaved 1F1B with 2-8
virtual stages where Megatron-LM allows it: on more than two stages, or on two where
the stack overlaps its pipeline sends, as Megatron-Core allows), sequence parallelism
(when tp > 1), ZeRO stage and activation recomputation. Only layouts a framework runs
are proposed, and pins no framework runs are refused (perfmodel.layout.check_runnable:
e.g. no ZeRO-2/3 with a pipeline, no interleaving on two stages without overlapped
sends). GPipe is only
evaluated when asked for: it runs the same bubble as 1F1B with more activations in
flight, so it never wins.

Two rules keep the search small without losing the best layout:

* Recomputation only adds work, so for each layout the search takes the least
  recomputation that fits: none, then selective, then full on the first k stages
  (smallest k; earlier 1F1B stages hold more micro-batches), then full everywhere.
* ZeRO-2 and -3 only add communication over ZeRO-1, so they are tried only when
  the stage below needed recomputation to fit. ZeRO-0 and -1 are both tried.

Over several node counts, layouts are visited in order of a lower bound on their
iteration time (compute at peak GEMM efficiency plus the unavoidable bubble) and
the search stops once the bound exceeds the k-th best time found: the result is
the same as evaluating everything.

Ranked by an objective on each layout's error band (perfmodel.evidence: the p90
time, or the median), the search screens by that objective, not by the model's own
time, with bounds that hold for it: a shape's or layout's time bound times the
least its regimes' evidence can make of it, and (for p90) the same bound priced at
each end of the preset's declared ranges, which widens the band's slow side.

Two tiers of network model. Routing every candidate's collectives on the torus
would cost seconds, so layouts are ranked with the contention-free alpha-beta
model, and a shortlist (the best ``shapes`` (tp, pp, dp) shapes, with up to
``variants`` layouts of each, so that one shape cannot crowd out the rest) is
re-estimated with the system's own network model (the flow-level torus by default)
and re-ranked. What comes back is always priced by the system's model.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from fpcore.errors import SpecError
from topologies.interface import group_geometry

from .compute import ComputeModel
from .estimator import Estimate, estimate, layout_lower_bound, network_for, screening_network
from . import partitions, schedules
from .layout import (PINNABLE, PIPELINE_MAX_ZERO, Layout, check_runnable, cp_error, divisors,
                     ep_error, schedule_depth_error, tensor_parallel_sizes, tp_error,
                     virtual_schedules, zero_with_pipeline_error)
from .memory import peak_memory
from .model import ModelSpec
from .ops import model_flops_per_iteration
from .sharding import hybrid_error
from .system import SystemSpec

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
MIN_SHAPES = 5           # shapes re-priced on the torus, even when one answer is wanted
MAX_VIRTUAL_STAGES = 8


@dataclass
class SearchStats:
    candidates_evaluated: int = 0        # layouts whose iteration time was estimated
    confirmed: int = 0                   # of those, re-estimated with the system's network
    memory_checked: int = 0              # layout variants whose memory was checked
    rejected_memory: int = 0             # layouts that fit with no recompute/ZeRO choice
    pruned: int = 0                      # shapes and layouts skipped by a lower bound
    node_counts: set = field(default_factory=set)

    def add(self, other: "SearchStats") -> None:
        """Count ``other``'s work in these statistics too."""
        self.candidates_evaluated += other.candidates_evaluated
        self.confirmed += other.confirmed
        self.memory_checked += other.memory_checked
        self.rejected_memory += other.rejected_memory
        self.pruned += other.pruned
        self.node_counts |= other.node_counts


def _expert_ways(system: SystemSpec, pins: dict) -> tuple[bool, ...]:
    """How the search may lay a mixture of experts' experts over the TP ranks: as pinned,
    or every way the system's software stack runs (StackSpec.expert_tp)."""
    return (pins["expert_tp"],) if pins.get("expert_tp") is not None \
        else system.stack.expert_tp


def _tp_options(model: ModelSpec, pins: dict, system: SystemSpec) -> list[int]:
    """Tensor-parallel degrees the model, the pins and the stack allow."""
    if pins.get("tp") is not None:
        return [pins["tp"]]
    out = tensor_parallel_sizes(model, _expert_ways(system, pins))
    if pins.get("sequence_parallel"):
        out = [t for t in out if t > 1 and model.seq % t == 0]
    return out


# Context parallelism is tried from this sequence length on ("Empirically, use CP when
# sequence length >= 8K": NVIDIA/Megatron-LM megatron/core/transformer/moe/README.md
# @022bcb5afe888664d3fb61adacea6e6c887a97f8), in powers of two up to MAX_CP.
CP_MIN_SEQ = 8192
MAX_CP = 32


def _cp_options(model: ModelSpec, pins: dict) -> list[int]:
    """Context-parallel sizes to try: the pinned one; for sequences of CP_MIN_SEQ tokens
    or more every power of two up to MAX_CP that splits them into 2 cp chunks; else 1."""
    if pins.get("cp") is not None:
        return [pins["cp"]]
    if model.seq < CP_MIN_SEQ:
        return [1]
    return [c for c in (1 << i for i in range(MAX_CP.bit_length()))
            if model.seq % (2 * c) == 0]


def _schedule_options(pins: dict) -> list[schedules.ScheduleSpec]:
    """The schedules the pins allow: the pinned one; with virtual stages pinned, those
    that run them (or, pinned to 1, those that do not); else every searched one."""
    if pins.get("schedule") is not None:
        return [schedules.get(pins["schedule"])]
    searched = [s for s in schedules.SCHEDULES.values() if s.searched]
    v = pins.get("virtual_stages")
    if v is None:
        return searched
    return [s for s in searched if s.virtual == (v > 1)]


def _needs_virtual(pins: dict) -> bool:
    """Whether the pins ask for virtual stages (a virtual schedule or v > 1)."""
    sched = pins.get("schedule")
    return (sched is not None and schedules.get(sched).virtual) or \
        (pins.get("virtual_stages") or 1) > 1


def _min_pp(pins: dict, overlap_p2p: bool = False) -> int:
    """The least pipeline depth any schedule the pins allow runs on (``overlap_p2p``: on a
    stack that overlaps its pipeline sends)."""
    return min((s.least_pp(overlap_p2p) for s in _schedule_options(pins)), default=1)


def allowed_partitions(system: SystemSpec, pins: dict) -> tuple[str, ...]:
    """The partition methods (perfmodel.partitions) a search tries: the pinned one, or
    every one the system's software stack runs (even always)."""
    if pins.get("partition") is not None:
        return (pins["partition"],)
    return system.stack.pipeline_partitions


def _places(model: ModelSpec, pp: int, v: int, methods: Iterable[str]) -> bool:
    """Whether one of ``methods`` places the model's layers on ``pp`` stages of ``v``
    virtual stages each."""
    return any(partitions.partition_error(model.layers, pp, v, m) is None for m in methods)


def _pp_options(model: ModelSpec, pins: dict, methods: tuple[str, ...] = ("even",),
                overlap_p2p: bool = False) -> list[int]:
    """Pipeline depths the model and the pins allow: one of the partition ``methods``
    places the layers on pp stages (the even one: pp divides the layers, times the
    pinned virtual stages; an uneven one: every stage keeps a layer), pp is deep
    enough for the pinned recompute stages and for the pinned schedule, and is 1
    under a pinned ZeRO-2/3 (perfmodel.layout.framework_error)."""
    uneven = any(partitions.PARTITIONS[m].balanced for m in methods)
    depths = range(1, model.layers + 1) if uneven else divisors(model.layers)
    out = _pinned(pins, "pp", depths)
    v = pins.get("virtual_stages") or 1
    mirrored = False
    if pins.get("schedule") is not None:          # (DualPipe's chunks are whole stages,
        spec = schedules.get(pins["schedule"])    # its directions over an even pp)
        v, mirrored = spec.layer_chunks(v), spec.mirrored
    least = _min_pp(pins, overlap_p2p)
    return [p for p in out
            if _places(model, p, v, methods) and not (mirrored and p % 2)
            and p >= (pins.get("recompute_stages") or 1)
            and p >= least
            and (pins.get("zero") is None or pins["zero"] <= PIPELINE_MAX_ZERO or p == 1)]


def check_pins(model: ModelSpec, system: SystemSpec, global_batch: int, pins: dict) -> None:
    """Reject pins no runnable layout can satisfy, naming the flag and the rule."""
    unknown = set(pins) - set(PINNABLE)
    if unknown:
        raise SpecError(sorted(unknown)[0], f"cannot be pinned; pinnable: {', '.join(PINNABLE)}")
    tp, pp, dp, mb = (pins.get(k) for k in ("tp", "pp", "dp", "micro_batch"))
    zero, v, sched = pins.get("zero"), pins.get("virtual_stages"), pins.get("schedule")
    ways = _expert_ways(system, pins)
    errors = [tp_error(model, tp, x) for x in ways] if tp is not None else [None]
    if None not in errors:
        raise SpecError("tp", f"{errors[0].message} ({model.name}: heads "
                              f"{model.heads}, kv_heads {model.kv_heads}, ffn {model.ffn}); "
                              f"allowed: " + ", ".join(map(str, tensor_parallel_sizes(model,
                                                                                      ways))))
    methods = allowed_partitions(system, pins)
    if pins.get("partition") is not None:
        err = stack_partition_error(system, pins["partition"])
        if err is None and _needs_virtual(pins) and partitions.get(pins["partition"]).balanced:
            err = partitions.partition_error(model.layers, pp or 1, max(v or 2, 2),
                                             pins["partition"])     # no virtual stages
        if err is not None:
            raise err
    if pp is not None and not _places(model, pp, 1, methods):
        if methods == ("even",):
            raise SpecError("pp", f"must divide the number of layers ({model.layers}); allowed: "
                                  + ", ".join(map(str, divisors(model.layers))) + f"; got {pp}"
                                  + _uneven_hint(system))
        raise partitions.partition_error(model.layers, pp, 1, methods[-1])
    if dp is not None and global_batch % dp:
        raise SpecError("dp", f"must divide the global batch ({global_batch}); got {dp}")
    if mb is not None and global_batch % mb:
        raise SpecError("micro_batch", f"must divide the global batch ({global_batch}); got {mb}")
    if dp is not None and mb is not None and global_batch % (dp * mb):
        raise SpecError("micro_batch", f"dp x micro_batch ({dp} x {mb}) must divide the global "
                                       f"batch ({global_batch})")
    if zero is not None:
        err = stack_zero_error(system, zero)
        if err is not None:
            raise err
    if zero is not None and zero > 0 and dp == 1:
        raise SpecError("zero", f"ZeRO-{zero} shards over data parallelism, and dp 1 leaves "
                                f"nothing to shard: pin --zero 0 or leave --dp free")
    shard = pins.get("shard_ranks")
    if shard:                       # some stage must shard in groups of it (of any dp free)
        stages = [zero] if zero is not None else list(system.stack.zero_stages)
        errors = [hybrid_error(system.stack.sharding, z, shard, dp or 2 * shard)
                  for z in stages]
        if all(e is not None for e in errors):
            raise errors[-1]
    if v is not None and v > 1 and sched is not None and not schedules.get(sched).virtual:
        raise SpecError("virtual_stages", f"needs the {' or '.join(virtual_schedules())} "
                                          f"schedule, not {sched}")
    virtual = _needs_virtual(pins)
    if pins.get("recompute_stages") is not None:
        if pins.get("recompute", "full") != "full":
            raise SpecError("recompute_stages", "needs --recompute full")
        pins.setdefault("recompute", "full")
        if pp is not None and pins["recompute_stages"] > pp:
            raise SpecError("recompute_stages", f"must be at most pp ({pp})")
    if pins.get("sequence_parallel"):
        if tp == 1:
            raise SpecError("sequence_parallel", "needs tp > 1")
        if not _tp_options(model, pins, system):
            raise SpecError("sequence_parallel", f"needs a tp > 1 that divides seq ({model.seq})"
                                                 + (f"; tp {tp} does not" if tp else ""))
    allowed = _schedule_options(pins)
    if zero is not None and zero > PIPELINE_MAX_ZERO and (
            (pp or 1) > 1 or virtual or (pins.get("recompute_stages") or 1) > 1):
        raise zero_with_pipeline_error(zero, f"pp {pp}" if (pp or 1) > 1 else
                                       f"the {allowed[0].name} schedule" if virtual else
                                       f"recompute on the first {pins['recompute_stages']} "
                                       f"of several stages")
    overlap = system.stack.overlap_p2p
    if pp is not None and allowed and pp < _min_pp(pins, overlap):
        raise schedule_depth_error(min(allowed, key=lambda s: s.least_pp(overlap)), pp, overlap)
    if pp is not None and sched is not None and schedules.get(sched).mirrored and pp % 2:
        raise SpecError("pp", f"{sched} runs its two directions over an even number of ranks "
                              f"(deepseek-ai/DualPipe dualpipe.py asserts num_ranks % 2 == 0); "
                              f"got {pp}")
    if not _pp_options(model, pins, methods, overlap):
        field = "virtual_stages" if (v or 1) > 1 else "pp"
        deepest = max(allowed, key=lambda s: s.least_pp(overlap)) if allowed else None
        raise SpecError(field, f"no pipeline depth fits the pins: pp must divide the layers "
                               f"({model.layers})" + (f", pp x virtual_stages ({v}) too"
                                                      if (v or 1) > 1 else "")
                        + (f", and {deepest.name} needs pp >= {deepest.least_pp(overlap)}"
                           if deepest is not None and _min_pp(pins, overlap) > 1 else ""))
    for err in (cp_error(model, pins["cp"]) if pins.get("cp") is not None else None,
                ep_error(model, pins["ep"]) if pins.get("ep") is not None else None):
        if err is not None:
            raise err
    if pins.get("ep") and global_batch % pins["ep"]:
        raise SpecError("ep", f"must divide the global batch ({global_batch}): dp is a multiple "
                              f"of ep and divides it; got {pins['ep']}")
    load = pins.get("moe_load")
    if load not in (None, 1.0) and not model.experts:
        raise SpecError("moe_load", f"needs a mixture of experts ({model.name} is dense)")
    if load is not None and load > (pins.get("ep") or model.experts or 1):
        raise SpecError("moe_load", f"must be at most ep ({pins['ep']}), as the busiest rank "
                                    f"takes at most every token; got {load:g}"
                        if pins.get("ep") else
                        f"must be at most the experts ({model.experts}), the most ep can be "
                        f"(the busiest rank takes at most every token); got {load:g}")
    err = stack_expert_tp_error(system, model, pins.get("expert_tp"))
    if err is not None:
        raise err
    if pins.get("precision") is not None and not system.node.supports(pins["precision"]):
        raise SpecError("precision", f"{pins['precision']} is not supported by {system.node.name}")


def _uneven_hint(system: SystemSpec) -> str:
    """Where uneven partitions are to be had, for an error about an even one."""
    names = [s.name for s in system.stacks if len(s.pipeline_partitions) > 1]
    if not names:
        return ""
    return (f" (or an uneven partition, with a stack that runs one: --stack "
            f"{' or '.join(names)})")


def stack_partition_error(system: SystemSpec, partition: str) -> SpecError | None:
    """Why ``system``'s software stack does not place layers by ``partition``, or None."""
    stack = system.stack
    if partition in stack.pipeline_partitions:
        return None
    source = system.sources.get(f"stacks.{stack.name}.pipeline_partitions") or \
        "its framework places l / p layers on every stage"
    return SpecError("partition", f"stack {stack.name} of {system.name} places layers by "
                                  f"{', '.join(stack.pipeline_partitions)} ({source}); got "
                                  f"{partition}" + _uneven_hint(system))


def stack_expert_tp_error(system: SystemSpec, model: ModelSpec,
                          expert_tp: bool | None) -> SpecError | None:
    """Why ``system``'s software stack does not lay ``model``'s experts over the TP ranks
    as ``expert_tp`` says (None: as the search likes), or None."""
    if expert_tp is None:
        return None
    if not expert_tp and not model.experts:
        return SpecError("expert_tp", f"needs a mixture of experts ({model.name} is dense)")
    if expert_tp in system.stack.expert_tp:
        return None
    how = {True: "split over the TP ranks", False: "whole on every TP rank"}
    source = system.sources.get(f"stacks.{system.stack.name}.expert_tp") or (
        "Megatron-Core splits them as the dense MLP unless --expert-tensor-parallel-size "
        "says otherwise; its folded expert layout is not modelled")
    return SpecError("expert_tp", f"stack {system.stack.name} of {system.name} runs the "
                                  f"experts {how[not expert_tp]} ({source}); got them "
                                  f"{how[expert_tp]}")


def stack_zero_error(system: SystemSpec, zero: int) -> SpecError | None:
    """Why ``system``'s software stack does not run ZeRO stage ``zero``, or None."""
    stack = system.stack
    if zero in stack.zero_stages:
        return None
    source = system.sources.get(f"stacks.{stack.name}.zero_stages") or "the preset"
    return SpecError("zero", f"stack {stack.name} of {system.name} runs ZeRO stage(s) "
                             f"{', '.join(map(str, stack.zero_stages))} ({source}); got {zero}")


def _pinned(pins: dict, name: str, options: Iterable):
    return [pins[name]] if pins.get(name) is not None else list(options)


def job_shapes(model: ModelSpec, system: SystemSpec, global_batch: int, pins: dict,
               accept_nodes: Callable[[int], bool]) -> Iterator[tuple[int, int, int, int]]:
    """(nodes, tp, pp, dp) the model, batch and pins allow, for node counts accepted.

    dp must divide the global batch, so the shapes are few (a few thousand at most)
    and are enumerated directly rather than node count by node count.
    """
    ppn = system.ranks_per_node
    zero, mb = pins.get("zero"), pins.get("micro_batch") or 1
    shard, ep = pins.get("shard_ranks") or 0, pins.get("ep") or 1
    dps = [d for d in _pinned(pins, "dp", divisors(global_batch))
           if global_batch % (d * mb) == 0 and (not zero or d > 1)   # ZeRO shards over dp
           and (not shard or (d % shard == 0 and d > shard))         # ... or its groups
           and d % ep == 0]                       # expert parallelism is carved out of dp
    methods = allowed_partitions(system, pins)
    cp = pins.get("cp") or 1                  # context parallelism: pinned, not searched
    for tp in _tp_options(model, pins, system):
        for pp in _pp_options(model, pins, methods, system.stack.overlap_p2p):
            for dp in dps:
                ranks = tp * cp * pp * dp
                if ranks % ppn:
                    continue
                nodes = ranks // ppn
                if accept_nodes(nodes):
                    yield nodes, tp, pp, dp


def batches_for_nodes(model: ModelSpec, system: SystemSpec, nodes: int, global_batch: int,
                      pins: dict, k: int = 3) -> list[int]:
    """Up to ``k`` global batches nearest ``global_batch`` (from half to twice it) with
    which some layout runs on exactly ``nodes`` nodes (a shape whose dp divides the
    batch, and a layout of it that fits in memory)."""
    ranks, cp = nodes * system.ranks_per_node, pins.get("cp") or 1
    if ranks % cp:
        return []                          # no replica of cp ranks fills them
    ranks //= cp
    step = pins.get("micro_batch") or 1
    near = set()
    for tp in _tp_options(model, pins, system):
        for pp in _pp_options(model, pins, allowed_partitions(system, pins),
                              system.stack.overlap_p2p):
            if ranks % (tp * pp):
                continue
            unit = ranks // (tp * pp) * step          # batches dp x micro-batch divides
            if pins.get("dp") not in (None, ranks // (tp * pp)):
                continue
            below = global_batch // unit * unit
            near.update(b for b in (below, below + unit)
                        if global_batch / 2 <= b <= 2 * global_batch and b > 0)
    out = []
    for batch in sorted(near, key=lambda b: (abs(b - global_batch), b)):
        try:
            found, _ = screen(model, system, batch, nodes=[nodes], pins=pins, top=1)
        except SpecError:
            continue
        if found:
            out.append(batch)
            if len(out) == k:
                break
    return out


def allocatable(system: SystemSpec, nodes: int) -> bool:
    """Whether a job of exactly ``nodes`` nodes is a whole number of allocation units."""
    net = system.network
    return nodes <= net.nodes and nodes % net.allocation_unit(nodes) == 0


def _virtual_stages(model: ModelSpec, pp: int, pins: dict,
                    spec: schedules.ScheduleSpec | None = None) -> list[int]:
    """The chunks per stage a virtual schedule (``spec``: its fixed count) may run."""
    even = [] if model.layers % pp else divisors(model.layers // pp)
    if spec is not None and spec.mirrored:        # (each chunk a whole stage: DualPipe)
        return _pinned(pins, "virtual_stages", [spec.chunks] if even else [])
    options = [v for v in even if 2 <= v <= MAX_VIRTUAL_STAGES]
    if spec is not None and spec.chunks:
        options = [v for v in options if v == spec.chunks]
    return _pinned(pins, "virtual_stages", options)


def _schedules(model: ModelSpec, pp: int, micro_batches: int, pins: dict,
               overlap_p2p: bool = False):
    """(schedule, virtual stages) to try: each schedule the pins allow
    (perfmodel.schedules), a virtual one with every virtual-stage count, where a
    framework runs it (its least pp, ``overlap_p2p``: on a stack that overlaps its
    pipeline sends; micro-batches a multiple of pp where it needs)."""
    if pins.get("schedule") is not None:
        spec = schedules.get(pins["schedule"])
        return [(spec.name, v) for v in _virtual_stages(model, pp, pins, spec)] \
            if spec.virtual else [(spec.name, 1)]
    out = []
    for spec in _schedule_options(pins):
        if not spec.virtual:
            out.append((spec.name, 1))
        elif pp >= spec.least_pp(overlap_p2p) and (not spec.groups_of_pp
                                                   or micro_batches % pp == 0):
            out += [(spec.name, v) for v in _virtual_stages(model, pp, pins, spec)]
    return out


def base_layouts(model: ModelSpec, tp: int, pp: int, dp: int, global_batch: int, pins: dict,
                 settings: dict | None = None, methods: tuple[str, ...] = ("even",),
                 expert_tps: tuple[bool, ...] = (True,)) -> Iterator[Layout]:
    """Layouts of one (tp, pp, dp) shape before ZeRO and recomputation are chosen
    (``settings``: the software stack's Layout settings, StackSpec.layout_settings;
    ``methods``: the partition methods to try, each distinct split once;
    ``expert_tps``: how the stack's framework may lay a mixture of experts' experts
    over the TP ranks, StackSpec.expert_tp)."""
    splits = partitions.distinct_splits(model.layers, pp, methods)
    precisions = _pinned(pins, "precision", ["fp32"])
    # a mixture of experts' expert parallelism: every ep that divides the experts and dp,
    # its experts split over the TP ranks or whole on each, as the framework runs them
    eps = _pinned(pins, "ep", divisors(math.gcd(model.experts, dp)) if model.experts else [1])
    eps = [e for e in eps if e >= (pins.get("moe_load") or 1)]   # (the busiest takes <= all)
    splits_tp = _pinned(pins, "expert_tp", expert_tps if model.experts and tp > 1 else [True])
    moe = {"moe_load": pins["moe_load"]} if pins.get("moe_load") is not None else {}
    cp = pins.get("cp") or 1
    overlap = bool((settings or {}).get("overlap_p2p"))
    sps = _pinned(pins, "sequence_parallel",
                  [False, True] if tp > 1 and model.seq % tp == 0 else [False])
    for mb in _pinned(pins, "micro_batch", MICRO_BATCHES):
        if global_batch % (dp * mb):
            continue
        m = global_batch // (dp * mb)
        for sched, v in _schedules(model, pp, m, pins, overlap):
            spec = schedules.SCHEDULES[sched]
            if pp < spec.least_pp(overlap) or (spec.groups_of_pp and m % pp) or \
                    (spec.mirrored and (pp % 2 or m % 2)):
                continue
            for split in splits:
                if partitions.partition_error(model.layers, pp, spec.layer_chunks(v),
                                              split) is not None or \
                        (spec.mirrored and split != "even"):   # (its stages alike)
                    continue
                for sp in sps:
                    if sp and tp == 1:
                        continue
                    for prec in precisions:
                        for ep in eps:
                            if dp % ep:
                                continue
                            for whole in splits_tp:
                                yield Layout(tp=tp, pp=pp, dp=dp, micro_batch=mb,
                                             global_batch=global_batch, schedule=sched,
                                             virtual_stages=v, sequence_parallel=sp,
                                             precision=prec, partition=split, ep=ep, cp=cp,
                                             expert_tp=whole, **moe, **(settings or {}))


def least_recompute_that_fits(model: ModelSpec, system: SystemSpec, layout: Layout, pins: dict,
                              stats: SearchStats) -> Layout | None:
    """The cheapest recomputation with which ``layout`` fits (pinned: only that one).

    Recomputation only adds work, so the order is: none, selective, full on the
    first k stages for the smallest k (memory falls as k grows, so k is bisected),
    full on every stage.
    """
    limit = system.rank.usable_memory_bytes

    def fits(candidate: Layout) -> bool:
        stats.memory_checked += 1
        return peak_memory(model, candidate).total <= limit

    if pins.get("recompute") is not None:
        k = pins.get("recompute_stages")
        if k is not None and k > layout.pp:     # a pipeline shorter than k cannot take the pin
            return None
        pinned = layout.with_recompute(pins["recompute"], k)
        return pinned if fits(pinned) else None
    for mode in ("none", "selective"):
        candidate = layout.with_recompute(mode)
        if fits(candidate):
            return candidate

    def full(k: int) -> Layout:
        return layout.with_recompute("full", None if k == layout.pp else k)

    if not fits(full(layout.pp)):
        return None
    if layout.schedule_spec.mirrored:          # (two stages a rank: all of them or none)
        return full(layout.pp)
    lo, hi = 1, layout.pp
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(full(mid)):
            hi = mid
        else:
            lo = mid + 1
    return full(lo)


def fitting_variants(model: ModelSpec, system: SystemSpec, layout: Layout, pins: dict,
                     stats: SearchStats) -> list[Layout]:
    """The ZeRO / recompute variants of a base layout worth estimating (ZeRO-2/3 only
    without a pipeline: perfmodel.layout.framework_error)."""
    zeros = [pins["zero"]] if pins.get("zero") is not None else list(system.stack.zero_stages)
    out = []
    for z in zeros:
        if (layout.dp == 1 and z > 0) or (layout.pp > 1 and z > PIPELINE_MAX_ZERO):
            break
        for shard in shard_options(system, layout, z, pins):
            variant = least_recompute_that_fits(model, system,
                                                layout.replace(zero=z, shard_ranks=shard),
                                                pins, stats)
            if variant is not None:
                out.append(variant)
        chosen = next((v for v in out if v.zero == z), None)
        if pins.get("zero") is None and z >= 1 and chosen is not None and chosen.recompute == "none":
            break                     # a higher ZeRO stage would only add communication
    if not out:
        stats.rejected_memory += 1
    return out


def shard_options(system: SystemSpec, layout: Layout, zero: int, pins: dict) -> list[int]:
    """The sharding groups to try for ZeRO stage ``zero``: all of dp, and where the
    stack shards per node (HYBRID_SHARD) the data-parallel ranks of one node."""
    if pins.get("shard_ranks") is not None:
        err = hybrid_error(layout.sharding, zero, pins["shard_ranks"], layout.replicas)
        return [] if err is not None else [pins["shard_ranks"]]
    out = [0]
    if "node" in system.stack.shard_groups and zero >= 1:
        job = layout.job(system.ranks_per_node)
        node = group_geometry(job, "dp").per_node
        if hybrid_error(layout.sharding, zero, node, layout.replicas) is None:
            out.append(node)
    return out


def lower_bound_s(model: ModelSpec, system: SystemSpec, tp: int, pp: int, dp: int,
                  global_batch: int, precision: str, max_v: int, cp: int = 1) -> float:
    """A bound no layout of this shape can beat: its share of the model FLOPs at the
    best GEMM efficiency, stretched by the smallest possible pipeline bubble."""
    compute = ComputeModel.for_system(system, precision)
    per_sample = model_flops_per_iteration(model, 1) / (tp * pp * cp)
    w1 = per_sample / (compute.peak_flops * compute.max_gemm_efficiency)
    return w1 * (global_batch / dp + (pp - 1) / max_v)


def _max_virtual(model: ModelSpec, pp: int, pins: dict, overlap_p2p: bool = False) -> int:
    if pins.get("virtual_stages") is not None:
        return pins["virtual_stages"]
    if model.layers % pp or not any(s.virtual and pp >= s.least_pp(overlap_p2p)
                                    for s in _schedule_options(pins)):
        return 1
    return max(v for v in divisors(model.layers // pp) if v <= MAX_VIRTUAL_STAGES)


@dataclass
class Shortlist:
    """The best ``shapes`` (tp, pp, dp) shapes by the screening model, with up to
    ``variants`` of each (micro-batch, schedule, ZeRO, recompute...). The screening
    model misjudges whole shapes (how TP and DP groups load the torus) far more than
    variants of one shape, and the flow model prices a shape once for all its
    variants, so the shortlist is diverse in shapes. Layouts are kept by a value:
    their time, or the plan's objective on their band (perfmodel.evidence.Ranker)."""

    shapes: int
    variants: int
    by_shape: dict = field(default_factory=dict)     # shape -> [(value, Estimate)], best first

    def add(self, est: Estimate, value: float | None = None) -> None:
        key = (est.layout.tp, est.layout.pp, est.layout.dp)
        kept = self.by_shape.setdefault(key, [])
        kept.append((est.iteration_s if value is None else value, est))
        kept.sort(key=lambda c: c[0])
        del kept[self.variants:]
        if len(self.by_shape) > self.shapes:
            worst = max(self.by_shape, key=lambda k: self.by_shape[k][0][0])
            del self.by_shape[worst]

    def threshold(self) -> float:
        """A layout whose value is more than this cannot enter the shortlist."""
        if len(self.by_shape) < self.shapes:
            return float("inf")
        return max(v[0][0] for v in self.by_shape.values())

    def estimates(self) -> list[Estimate]:
        return [e for kept in self.by_shape.values() for _, e in kept]


def screen(model: ModelSpec, system: SystemSpec, global_batch: int, *,
           nodes: Iterable[int] | None = None, max_nodes: int | None = None,
           min_nodes: int = 1, pins: dict | None = None, top: int = 5,
           shapes: int | None = None, variants: int = 3, ranker=None,
           seeds: Iterable[Layout] = ()) -> tuple[list[Estimate], SearchStats]:
    """Fitting layouts ranked by the contention-free model: the ``top`` fastest if the
    system's own network model is that one, else a shortlist of ``shapes`` shapes
    (default: top, at least MIN_SHAPES) for ``confirm`` to re-price. With a ``ranker``
    (perfmodel.evidence.Ranker) they are ranked by its objective on their bands, and
    its lower bound (``screening_floor``) skips the layouts that cannot enter.

    ``seeds``: layouts priced first, as a neighbouring question's answers: a good
    layout found early lets the bounds skip the rest sooner. A seed counts only where
    the search would make it itself (its node count accepted, and the ZeRO and
    recomputation variant its base gets here), so seeds change the answer only where
    two layouts tie exactly."""
    pins = {k: v for k, v in (pins or {}).items() if v is not None}
    check_pins(model, system, global_batch, pins)
    stats = SearchStats()
    precision = pins.get("precision", "fp32")
    ComputeModel.for_system(system, precision)   # unsupported precision: fail early
    if nodes is not None:
        wanted = set(nodes)
        accept = wanted.__contains__
    else:
        hi = system.network.nodes if max_nodes is None else max_nodes
        accept = lambda n: min_nodes <= n <= hi and allocatable(system, n)   # noqa: E731
    found = []           # (bound, nodes, tp, pp, dp, most virtual stages, cp), by bound
    for cp in _cp_options(model, pins):
        for n, tp, pp, dp in job_shapes(model, system, global_batch, {**pins, "cp": cp},
                                        accept):
            max_v = _max_virtual(model, pp, pins, system.stack.overlap_p2p)
            found.append((lower_bound_s(model, system, tp, pp, dp, global_batch, precision,
                                        max_v, cp), n, tp, pp, dp, max_v, cp))
    found.sort()
    methods = allowed_partitions(system, pins)
    screening = screening_network(system)
    final = network_for(system) is screening
    heap: list[tuple[float, int, Estimate]] = []     # max-heap on value via negation
    short = Shortlist(shapes or max(top, MIN_SHAPES), variants)
    if ranker is not None and ranker.objective == "model":
        ranker = None

    def threshold() -> float:
        if final:
            return -heap[0][0] if len(heap) >= top else float("inf")
        return short.threshold()

    def beaten(bound_at, evidence=()) -> bool:
        """Whether no layout whose time on a system s is at least ``bound_at(s)`` (on
        this one; with a ranker, also at each end of its ranges) can enter."""
        limit = threshold()
        if ranker is None:
            return bound_at(system) >= limit
        return ranker.least_value(system, bound_at, evidence, limit) >= limit

    listed: set = set()               # layouts in the answer (a seed may be found again)

    def consider(est: Estimate) -> None:
        stats.candidates_evaluated += 1
        if est.layout in listed:
            return
        value = est.iteration_s
        if ranker is not None:
            limit = threshold()
            if ranker.screening_floor(est) >= limit:
                return
            value = ranker.screening_value(est, limit)
            if value >= limit:
                return
        if not final:
            short.add(est, value)
            return
        if len(heap) < top:
            heapq.heappush(heap, (-value, -stats.candidates_evaluated, est))
        elif value < -heap[0][0]:
            listed.discard(heapq.heapreplace(heap, (-value, -stats.candidates_evaluated,
                                                    est))[2].layout)
        else:
            return
        listed.add(est.layout)

    for seed in seeds if final else ():
        ppn = system.ranks_per_node
        if seed.ranks % ppn or not accept(seed.ranks // ppn) or seed.precision != precision:
            continue
        # a candidate here only as the search would make it: the ZeRO and recomputation
        # variant its base gets on this system (more memory may need less recomputation)
        base = seed.replace(zero=0, shard_ranks=0, recompute="none", recompute_stages=None)
        if seed in fitting_variants(model, system, base, pins, SearchStats()):
            consider(estimate(model, system, seed, screening, validate=False))

    for _, n, tp, pp, dp, max_v, cp in found:
        evidence = () if ranker is None else ranker.shape_evidence(model, system, tp, pp, dp,
                                                                   precision, cp)
        if beaten(lambda s: lower_bound_s(model, s, tp, pp, dp, global_batch, precision, max_v,
                                          cp), evidence):
            stats.pruned += 1
            continue
        stats.node_counts.add(n)
        for base in base_layouts(model, tp, pp, dp, global_batch, {**pins, "cp": cp},
                                 system.stack.layout_settings(), methods,
                                 system.stack.expert_tp):
            try:
                check_runnable(base, model)
            except SpecError:
                continue
            if beaten(lambda s: layout_lower_bound(model, s, base, screening_network(s)),
                      evidence):
                stats.pruned += 1
                continue
            for layout in fitting_variants(model, system, base, pins, stats):
                consider(estimate(model, system, layout, screening, validate=False))
    out = [e for _, _, e in heap] if final else short.estimates()
    return sorted(out, key=lambda e: (e.iteration_s, e.nodes)), stats


def confirm(model: ModelSpec, system: SystemSpec, screened: list[Estimate],
            stats: SearchStats | None = None, simulated: dict | None = None) -> list[Estimate]:
    """Re-price screened layouts with the system's own network model, sorted.

    The network model prices a job shape once (placement, routed patterns) for
    all its variants, so layouts are grouped by (tp, pp, dp) and the groups run on
    the machine's cores (perfmodel.parallel). With ``simulated`` (a dict), every
    layout also gets what the discrete-event simulator needs while its costs are
    at hand: its per-stage cost table is stored under its layout, for
    perfmodel.des.simulate(costs=...)."""
    network = network_for(system)
    if network is screening_network(system):
        return sorted(screened, key=lambda e: (e.iteration_s, e.nodes))
    groups: dict[tuple, list[Layout]] = {}
    for e in screened:
        groups.setdefault((e.layout.tp, e.layout.cp, e.layout.pp, e.layout.dp),
                          []).append(e.layout)
    work = sorted(groups.values(), key=lambda g: -g[0].ranks)       # biggest first
    from .parallel import map_items
    priced = map_items(_price_group, work, context=(model, system, simulated is not None))
    out = []
    for group in priced:
        for est, sim in group:
            # workers send estimates whole; the caller's model and system stand in for
            # their unpickled copies (equal, and one copy of each is kept)
            out.append(dataclasses.replace(est, model=model, system=system))
            if simulated is not None:
                simulated[est.layout] = sim
    if stats is not None:
        stats.confirmed += len(out)
    return sorted(out, key=lambda e: (e.iteration_s, e.nodes))


def _price_group(context, layouts: list[Layout]) -> list[tuple[Estimate, object]]:
    """One (tp, pp, dp) group's layouts priced by the system's network model (with
    their simulation cost tables, if asked)."""
    from .des import cost_table
    model, system, with_des = context
    network = network_for(system)
    out = []
    for lay in layouts:
        est = estimate(model, system, lay, network, validate=False)
        table = cost_table(model, system, lay, network) if with_des else None
        out.append((est, table))
    return out


def search(model: ModelSpec, system: SystemSpec, global_batch: int, *,
           nodes: Iterable[int] | None = None, max_nodes: int | None = None,
           min_nodes: int = 1, pins: dict | None = None, top: int = 5,
           shapes: int | None = None, objective: str = "model"
           ) -> tuple[list[Estimate], SearchStats]:
    """The ``top`` best fitting layouts, priced by the system's network model: the
    fastest, or the best by another ``objective`` on their bands
    (perfmodel.evidence.OBJECTIVES).

    ``nodes`` lists exact node counts; otherwise every allocatable node count in
    [min_nodes, max_nodes] is searched (default: up to the whole machine).
    """
    from .evidence import Ranker
    ranker = Ranker(objective)
    screened, stats = screen(model, system, global_batch, nodes=nodes, max_nodes=max_nodes,
                             min_nodes=min_nodes, pins=pins, top=top, shapes=shapes,
                             ranker=ranker)
    return ranker.best(confirm(model, system, screened, stats), top), stats
