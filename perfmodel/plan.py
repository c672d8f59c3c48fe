"""``plan``: the best layouts for a model on a system, and what a run would cost.

Node counts searched by default (docs/planning.md points here):

* A ladder of job sizes that are whole Fugaku racks and 48-node units:
  384 (1 rack), 768, 1,536, 3,072, 6,912 and 13,824 (Fugaku-LLM's jobs), extended
  by doubling up to ``max_nodes`` when a larger budget is given. Each rung is the
  best layout on *at most* that many nodes and more than the previous rung: a
  model/batch combination may not divide a rung exactly (13,824 = 2^9 3^3 nodes
  needs a factor 27 that tp, pp and dp may not supply), so the rung reports the
  node count it actually uses.
* The budget answer: the fastest layout on any allocatable node count up to
  ``max_nodes`` (default 13,824, Fugaku-LLM's allocation). The rungs partition
  (0, max_nodes], so it is the best of the rungs' best.

Tokens to train default to 20 per parameter (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models"). The global batch defaults to
Fugaku-LLM's 2,016 sequences of 2,048 tokens (4.13 M tokens), kept at the same
number of tokens for other sequence lengths.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fpcore.errors import SpecError, check_float, check_int

from .estimator import Estimate
from .evidence import MIN_EVIDENCE, Ranker
from .explain import differences, explain
from .layout import pins_text
from .model import ModelSpec
from .search import SearchStats, check_pins, confirm, job_shapes, screen, search
from .system import SystemSpec

DEFAULT_LADDER = (384, 768, 1536, 3072, 6912, 13824)
DEFAULT_MAX_NODES = 13824
TOKENS_PER_PARAM = 20            # Hoffmann et al. 2022
REFERENCE_BATCH_TOKENS = 2016 * 2048   # Fugaku-LLM: global batch 2016 x seq 2048


def default_global_batch(model: ModelSpec) -> int:
    return max(1, round(REFERENCE_BATCH_TOKENS / model.seq))


def ladder(max_nodes: int) -> list[int]:
    rungs = [n for n in DEFAULT_LADDER if n <= max_nodes]
    top = rungs[-1] if rungs else 0
    while top and top * 2 <= max_nodes:
        top *= 2
        rungs.append(top)
    if not rungs or rungs[-1] != max_nodes:
        rungs.append(max_nodes)
    return rungs


@dataclass
class Rung:
    max_nodes: int
    min_nodes: int
    best: Estimate | None


@dataclass
class Comparison:
    """How the best layout with the user's pins compares with the best without them
    (at the same node count and training precision)."""

    pinned: Estimate
    best: Estimate
    rank: int                  # 1-based rank of the pinned layout among all fitting layouts
    of: int                    # fitting layouts at that node count, the pinned one included
    reasons: list[str]         # explain(pinned, best)
    differences: list[str]     # differences(pinned.layout, best.layout)


@dataclass
class PlanResult:
    model: ModelSpec
    system: SystemSpec
    global_batch: int
    tokens: float
    node_counts: list[int]
    exact_nodes: bool
    best: list[Estimate]
    rungs: list[Rung]
    stats: SearchStats
    pins: dict
    comparison: Comparison | None = None
    price_per_node_hour: float | None = None
    simulated: dict | None = None      # Layout -> SimResult of the discrete-event simulation
    objective: str = "model"           # what the layouts are ranked by (evidence.OBJECTIVES)
    bands: dict | None = None          # Layout -> evidence.Band of every layout shown
    # how many of the best layouts (from the first) the best's band cannot tell apart
    indistinguishable: int = 1
    preferred_for_evidence: bool = False   # the first was moved up for its evidence


def feasible_node_counts(model: ModelSpec, system: SystemSpec, global_batch: int, pins: dict,
                         limit: int) -> list[int]:
    counts = {n for n, *_ in job_shapes(model, system, global_batch, pins,
                                        lambda n: n <= limit)}
    return sorted(counts)


def _nearest(counts: list[int], n: int, k: int = 4) -> list[int]:
    return sorted(sorted(counts, key=lambda c: (abs(c - n), c))[:k])


# The most tokens a plan trains to: a thousand trillion, fifty times the largest
# published runs (tens of trillions); past it the days and costs mean nothing. The
# most a node-hour may cost, in any currency.
MAX_TOKENS = 1e15
MAX_PRICE = 1e9
MAX_GLOBAL_BATCH = 100_000_000      # sequences (the largest published are thousands)


def check_tokens(tokens) -> float:
    """``tokens`` to train, a count from 1 to MAX_TOKENS."""
    return check_float("tokens", tokens, lo=1.0, lo_open=False, hi=MAX_TOKENS)


def plan(model: ModelSpec, system: SystemSpec, *, global_batch: int | None = None,
         tokens: float | None = None, nodes: list[int] | None = None,
         max_nodes: int | None = None, pins: dict | None = None, top: int = 5,
         price_per_node_hour: float | None = None, confirm_shapes: int | None = None,
         objective: str = "p90", compare: bool = True) -> PlanResult:
    pins = {k: v for k, v in (pins or {}).items() if v is not None}
    gb = default_global_batch(model) if global_batch is None else check_int(
        "global_batch", global_batch, hi=MAX_GLOBAL_BATCH)
    tok = TOKENS_PER_PARAM * model.params if tokens is None else check_tokens(tokens)
    top = check_int("top", top, hi=1000)
    if confirm_shapes is not None:
        check_int("confirm", confirm_shapes, hi=100_000)
        if confirm_shapes < top:
            raise SpecError("confirm", f"must be at least --top ({top}): the layouts listed are "
                                       f"the fastest of the re-priced shapes, so fewer shapes "
                                       f"would list slower layouts as the fastest; got "
                                       f"{confirm_shapes}")
    if price_per_node_hour is not None:
        check_float("price_per_node_hour", price_per_node_hour, hi=MAX_PRICE)
    machine = system.network.nodes
    budget = DEFAULT_MAX_NODES if max_nodes is None else check_int("max_nodes", max_nodes)
    budget = min(budget, machine) if max_nodes is None else budget
    if budget > machine:
        raise SpecError("max_nodes", f"must be at most the {system.name} machine size "
                                     f"({machine:,} nodes); got {budget:,}")
    check_pins(model, system, gb, pins)
    stats = SearchStats()
    rungs: list[Rung] = []

    if nodes:
        for n in nodes:
            system.check_nodes(n)         # the machine and a given --shape hold it
        nodes = sorted(set(nodes))        # each count once: a repeat would list its layouts twice
        if max_nodes is not None and nodes[-1] > budget:
            raise SpecError("nodes", f"{nodes[-1]:,} is above the node budget --max-nodes "
                                     f"({budget:,}); give one or the other")
        ranges = [(n, n) for n in nodes]
        counts = list(nodes)
    else:
        system.check_nodes(budget, "the plan's largest job; --max-nodes lowers it")
        counts = ladder(budget)
        ranges = list(zip([1] + [c + 1 for c in counts[:-1]], counts))
    # Each range of node counts is screened with the fast model and its shortlist
    # re-priced, one range per core (perfmodel.parallel).
    from .parallel import map_items
    tables: dict = {}         # layout -> per-stage costs for the simulator
    priced = []
    done = map_items(_range_task, ranges, context=(model, system, gb, pins, top, confirm_shapes,
                                                   objective))
    ranker = Ranker(objective)
    for (lo, hi), (found, found_tables, s, found_bands) in zip(ranges, done):
        ranker.bands.update(found_bands)
        stats.add(s)
        if nodes and not found:
            _no_layout(model, system, gb, pins, lo, s, machine)
        # workers send estimates whole; the caller's model and system stand in for
        # their unpickled copies (equal, and one copy of each is kept)
        priced += [dataclasses.replace(e, model=model, system=system) for e in found]
        tables.update(found_tables)
    priced.sort(key=lambda e: (e.iteration_s, e.nodes))
    # ranked by the objective on each layout's band (perfmodel.evidence), not the argmin
    # of the model's own numbers, unless asked
    for lo, hi in ranges:
        mine = ranker.best([e for e in priced if lo <= e.nodes <= hi], 1)
        rungs.append(Rung(hi, lo, mine[0] if mine else None))
    best = ranker.best(priced, top)
    if not best:
        raise no_layout_within(model, system, gb, pins, budget, stats)
    best, alike, moved = _prefer_evidence(best, ranker)
    comparison = None
    if compare and set(pins) - {"precision"}:     # a layout was pinned, not only the numerics
        comparison = compare_with_unpinned(model, system, gb, best[0], stats, tables)
    # The layouts shown are confirmed with the discrete-event simulator (on the
    # machine's cores, each from the cost table its pricing kept).
    shown = best + [r.best for r in rungs if r.best]
    if comparison is not None:
        shown += [comparison.pinned, comparison.best]
    # the longest simulations first (steps: pp x micro-batches x chunks), so that none
    # starts last on a core the others have left idle
    # (a layout of more steps than a plan simulates is answered by the estimate alone)
    from .des import PLAN_STEPS, simulated_steps
    layouts = sorted((lay for lay in dict.fromkeys(e.layout for e in shown)
                      if simulated_steps(lay) <= PLAN_STEPS), key=simulated_steps, reverse=True)
    simulated = dict(zip(layouts, map_items(_simulate_task, layouts,
                                            context=(model, system, tables))))
    bands = {e.layout: ranker.band(e) for e in shown}
    return PlanResult(model=model, system=system, global_batch=gb, tokens=tok,
                      node_counts=counts, exact_nodes=bool(nodes), best=best, rungs=rungs,
                      stats=stats, pins=pins, comparison=comparison,
                      price_per_node_hour=price_per_node_hour, simulated=simulated,
                      objective=objective, bands=bands, indistinguishable=alike,
                      preferred_for_evidence=moved)


def _prefer_evidence(best: list[Estimate], ranker: Ranker) -> tuple[list[Estimate], int, bool]:
    """The best layouts with, first, the one with evidence among those the first's band
    cannot tell apart from it (their bands overlap); how many those are; whether the
    first changed."""
    bands = [ranker.band(e) for e in best]
    alike = [i for i, b in enumerate(bands) if b.low_s <= bands[0].high_s
             and bands[0].low_s <= b.high_s]
    count = 1
    while count < len(best) and count in alike:
        count += 1
    backed = [i for i in alike if bands[i].evidence >= MIN_EVIDENCE]
    if bands[0].evidence >= MIN_EVIDENCE or not backed:
        return best, count, False
    first = backed[0]
    return [best[first]] + best[:first] + best[first + 1:], count, True


def _simulate_task(context, layout):
    """One shown layout simulated event by event (in a worker)."""
    from .des import simulate
    model, system, tables = context
    table = tables.get(layout)
    return simulate(model, system, layout, validate=False,
                    costs=None if table is None else table.__getitem__)


def _range_task(context, bounds):
    """Screen one range of node counts, re-price its shortlist and band its best (in a
    worker; the estimates come back whole, their model and system pickled once per
    result)."""
    model, system, gb, pins, top, shapes, objective = context
    lo, hi = bounds
    # the shortlist is the best by the objective (on contention-free estimates), so
    # the layouts re-priced are those the ranking below can choose
    ranker = Ranker(objective)
    found, stats = screen(model, system, gb, min_nodes=lo, max_nodes=hi, pins=pins, top=top,
                          shapes=shapes, ranker=ranker)
    tables: dict = {}
    priced = confirm(model, system, found, stats, tables)
    # the bands the ranking may need, priced here on this range's core (the best of
    # the range by the objective: the ranker computes a whole band only where needed)
    ranker.best(priced, top)
    return priced, tables, stats, ranker.bands


def _no_layout(model, system, gb, pins, n, s, machine) -> None:
    """Say why no layout runs on exactly ``n`` nodes."""
    why = (f"no layout of {model.name} with global batch {gb}"
           + (f" and {pins_text(pins)}" if pins else "")
           + f" runs on exactly {n:,} nodes ({n * system.ranks_per_node:,} ranks)")
    from .search import allocatable
    counts = [c for c in feasible_node_counts(model, system, gb, pins, machine)
              if allocatable(system, c)]
    if not allocatable(system, n):
        near = ", ".join(f"{c:,}" for c in _nearest(counts, n)) or "none"
        unit = system.network.allocation_unit(n)
        raise SpecError("nodes", f"{why}: jobs of this size come in units of {unit} nodes on "
                                 f"{system.name}; nearest node counts that can run: {near}")
    if n not in counts:
        near = ", ".join(f"{c:,}" for c in _nearest(counts, n)) or "none"
        from .search import batches_for_nodes
        batches = batches_for_nodes(model, system, n, gb, pins)
        raise SpecError("nodes", f"{why}: {_product(pins)} cannot equal it "
                                 f"({_shape_rule(model, system, pins)}); nearest node counts that "
                                 f"can: {near}"
                        + (f"; or keep {n:,} nodes with a global batch of "
                           f"{' or '.join(f'{b:,}' for b in batches)} (--global-batch)"
                           if batches else ""))
    if s.memory_checked == 0:
        raise SpecError("nodes", f"{why}: every (tp, pp, dp) that multiplies out to it breaks "
                                 f"{_schedule_rule(pins, model)}")
    raise SpecError("nodes", f"{why} {_memory_reason(system)}")


# What the errors below say of the rules a job shape must follow.
SCHEDULE_RULE = ("a schedule rule (interleaving needs pp x virtual stages to divide the layers "
                 "and the micro-batches per pipeline to be a multiple of pp)")


def _schedule_rule(pins: dict, model: ModelSpec | None = None) -> str:
    """The schedule rule a pinned schedule breaks (``SCHEDULE_RULE`` unless it has its
    own): with a pinned pp that its fixed chunks cannot cut the layers into, that one."""
    from . import schedules
    spec = schedules.SCHEDULES.get(pins.get("schedule"))
    if spec is None or not spec.micro_batch_rule:
        return SCHEDULE_RULE
    cut = ""
    if spec.chunks:                    # each stage cut into chunks of whole layers
        per = spec.layer_chunks(spec.chunks)
        cut = f"pp x {per} chunks" if per > 1 else "pp"
        pp, layers = pins.get("pp"), (model.layers if model is not None else None)
        if pp and layers and layers % (pp * per):
            return (f"a schedule rule ({spec.name} places whole layers evenly, "
                    f"{per if per > 1 else 'one'} chunk{'s' if per > 1 else ''} a stage: "
                    f"{cut} ({pp} x {per}) must divide the layers ({layers}))")
        cut = f"{cut} to divide the layers evenly and "
    return (f"a schedule rule ({spec.name} needs {cut}at least {spec.min_micro_batches(2)} "
            f"micro-batches per pipeline at pp 2 and "
            f"{spec.min_micro_batches(8)} at pp 8: {spec.micro_batch_rule})")


def _product(pins: dict) -> str:
    """The parallel sizes whose product a job's ranks are (cp among them when pinned)."""
    return "tp x cp x pp x dp" if (pins.get("cp") or 1) > 1 else "tp x pp x dp"


def _shape_rule(model, system, pins: dict | None = None) -> str:
    """The divisibility rules of tp, pp and dp, as the stack places layers (and as a
    pinned sharding group needs)."""
    places = "placing" if len(system.stack.pipeline_partitions) > 1 else "dividing"
    shard, ep = (pins or {}).get("shard_ranks"), (pins or {}).get("ep") or 1
    return (f"tp dividing heads ({model.heads}), kv_heads and ffn, pp {places} the layers "
            f"({model.layers}), dp dividing the global batch"
            + (f" and a multiple of shard_ranks ({shard}) above it" if shard else "")
            + (f" and a multiple of ep ({ep})" if ep > 1 else ""))


def _memory_reason(system) -> str:
    return (f"within the memory of a rank ({system.rank.usable_memory_bytes / 1e9:.1f} GB), "
            f"even with full recompute and the highest ZeRO stage allowed; try more nodes")


def no_layout_within(model, system, gb, pins, budget, stats) -> SpecError:
    """Why no layout runs on up to ``budget`` nodes: no job shape is a whole number of
    allocation units there, a schedule rule removes every shape, or memory."""
    from .search import allocatable
    why = (f"no layout of {model.name} with global batch {gb}"
           + (f" and {pins_text(pins)}" if pins else "") + f" runs on up to {budget:,} nodes")
    machine = system.network.nodes
    shapes = [c for c in feasible_node_counts(model, system, gb, pins, machine)
              if allocatable(system, c)]
    if not [c for c in shapes if c <= budget]:
        units = sorted({system.network.allocation_unit(n) for n in (1, budget)})
        rule = (f"no {_product(pins)} ({_shape_rule(model, system, pins)}) is a whole number of "
                f"{system.name}'s allocation units ({' / '.join(map(str, units))} nodes)")
        if shapes:
            return SpecError("max_nodes", f"{why}: {rule} within the budget; the smallest job "
                                          f"that can run has {min(shapes):,} nodes")
        return SpecError("global_batch", f"{why}: {rule} on the whole machine; a global batch "
                                         f"with more small factors (as 2016 = 2^5 3^2 7) gives dp "
                                         f"the factors the allocation units need")
    if stats.memory_checked == 0:
        return SpecError("max_nodes",
                         f"{why}: every (tp, pp, dp) breaks {_schedule_rule(pins, model)}")
    return SpecError("max_nodes", f"{why} {_memory_reason(system)}")


def compare_with_unpinned(model: ModelSpec, system: SystemSpec, global_batch: int,
                          pinned: Estimate, stats: SearchStats,
                          tables: dict | None = None) -> Comparison:
    """Rank the best pinned layout among every fitting layout on the same node count and
    at the same training precision (a precision is a choice of numerics, not of layout:
    comparing an fp16 run with fp32 ones would rank the precision, not the layout)."""
    shortlist, s = screen(model, system, global_batch, nodes=[pinned.nodes],
                          pins={"precision": pinned.layout.precision}, top=100_000,
                          shapes=100_000, variants=100_000)
    everything = confirm(model, system, shortlist, s, tables)
    stats.add(s)
    faster = sum(1 for e in everything if e.iteration_s < pinned.iteration_s - 1e-12)
    listed = any(e.layout == pinned.layout for e in everything)
    best = everything[0] if everything else pinned
    return Comparison(pinned=pinned, best=best, rank=faster + 1,
                      of=len(everything) + (0 if listed else 1),
                      reasons=explain(pinned, best),
                      differences=differences(pinned.layout, best.layout))


def layout_for(model: ModelSpec, system: SystemSpec, *, nodes: int | None,
               global_batch: int | None, pins: dict) -> Estimate:
    """The layout ``simulate`` runs: the pinned one when tp, pp and dp (or the node
    count) fix it, with defaults for the rest (micro-batch 1, 1F1B, ZeRO-0, no
    recomputation, the even partition or else the stack's first uneven one that
    places the layers); otherwise the best the search finds with the pins."""
    from . import schedules
    from .estimator import estimate
    from .layout import Layout, check_runnable
    from .partitions import default_for
    from .search import stack_expert_tp_error, stack_partition_error, stack_zero_error
    gb = default_global_batch(model) if global_batch is None else check_int(
        "global_batch", global_batch, hi=MAX_GLOBAL_BATCH)
    pins = dict(pins)
    if nodes is not None:
        system.check_nodes(nodes)         # the machine and a given --shape hold it
    ranks = None if nodes is None else nodes * system.ranks_per_node
    if "tp" in pins and "pp" in pins and ("dp" in pins or ranks is not None):
        cp = pins.get("cp", 1)
        split = pins["tp"] * pins["pp"] * cp          # the ranks of one data-parallel replica
        dp = pins.get("dp") or (ranks // split if ranks % split == 0 else 0)
        if dp == 0:
            raise SpecError("nodes", f"tp x cp x pp ({pins['tp']} x {cp} x {pins['pp']}) must "
                                     f"divide the ranks ({ranks:,})")
        fields = {k: v for k, v in pins.items() if k not in ("tp", "pp", "dp")}
        if fields.get("schedule") is not None and "virtual_stages" not in fields:
            spec = schedules.get(fields["schedule"])   # (its fixed chunks, or the least)
            if spec.virtual:
                fields["virtual_stages"] = spec.chunks or 2
        for key, value in system.stack.layout_settings().items():
            fields.setdefault(key, value)
        if model.experts:                 # the experts as the stack's framework lays them
            fields.setdefault("expert_tp", system.stack.expert_tp[0])
        if "partition" not in fields:
            fields["partition"] = default_for(system.stack.pipeline_partitions, model.layers,
                                              pins["pp"], fields.get("virtual_stages", 1))
        for err in (stack_partition_error(system, fields["partition"]),
                    stack_zero_error(system, fields.get("zero", 0)),
                    stack_expert_tp_error(system, model, fields.get("expert_tp"))):
            if err is not None:
                raise err
        layout = Layout(tp=pins["tp"], pp=pins["pp"], dp=dp, global_batch=gb, **fields)
        if ranks is not None and layout.ranks != ranks:
            raise SpecError("dp", f"tp x cp x pp x dp = {layout.ranks:,} ranks, but --nodes "
                                  f"gives {ranks:,}")
        check_runnable(layout, model)
        return estimate(model, system, layout)
    if nodes is None:
        raise SpecError("nodes", "give --nodes (or --tp, --pp and --dp) to say how big the job is")
    found, _ = search(model, system, gb, nodes=[nodes], pins=pins, top=1)
    if not found:
        _no_layout(model, system, gb, pins, nodes, SearchStats(memory_checked=1),
                   system.network.nodes)
    return found[0]
