"""Assemble a capacity report: predictions from perfmodel and topologies, gathered into
the report dictionary (reports/schema.md), then plotted and written.

This module only calls the models and arranges their answers; it computes nothing
of its own beyond unit conversions and choosing what to show.
"""

from __future__ import annotations

import sys
from typing import Callable

from fpcore import version

REFERENCE_LAYOUT = {"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4}
REFERENCE_NODES, REFERENCE_BATCH = 13824, 2016


def _progress(message: str) -> None:
    print(f"[report] {message}", file=sys.stderr, flush=True)


def provenance(system) -> list[dict]:
    """Every system input with its value and source (cheap: the CLI builds it before any
    work, so a system whose values cannot be listed is refused at once)."""
    from perfmodel.presets import system_values
    values = system_values(system)
    return [{"parameter": k, "value": values.get(k), "source": v}
            for k, v in system.sources.items()]


def memory_rule() -> str:
    """The memory rule (perfmodel.memory.memory_verdict) in words, as the pages state it."""
    from perfmodel.memory import TIGHT_FRACTION
    return (f"fits: at most {TIGHT_FRACTION:.0%} of the usable memory; tight: over "
            f"{TIGHT_FRACTION:.0%} (little room is left for what the count leaves out: "
            f"framework buffers, allocator fragmentation); does not fit: over 100%")


def _memory(e, system) -> tuple[float, str]:
    """(fraction of usable memory, verdict) of an estimate's peak stage, as plan does."""
    from perfmodel.memory import memory_verdict
    fraction = e.peak_memory.total / system.rank.usable_memory_bytes
    return fraction, memory_verdict(fraction)


def build_report(model, system, *, tokens=None, nodes=None, max_nodes=None, global_batch=None,
                 days: float = 30.0, checkpoint_bandwidth: float | None = None,
                 fs_bandwidth: float | None = None, relaunch_s: float | None = None,
                 top: int = 8, checks: list[str] | Callable[[], list[str]] | None = None,
                 progress: Callable[[str], None] = _progress, pins: dict | None = None) -> dict:
    """The report's data; ``checks``: lines on how the model does against published
    measurements, or a function giving them, called once the plan has accepted its inputs
    (the CLI passes calibration.against.published_checks).
    ``checkpoint_bandwidth`` (per node) and ``fs_bandwidth`` (the file system's aggregate)
    are bytes/s, ``relaunch_s`` seconds; each left out takes its documented default
    (perfmodel.capacity.checkpoint_inputs). ``pins`` (layout fields, as plan takes them)
    make the report study the best layout with them: its scaling, memory, timeline,
    network, sensitivity and reliability."""
    from perfmodel import capacity
    from perfmodel.des import PLAN_STEPS, Trace, simulate, simulated_steps, steps_error
    from perfmodel.estimator import network_for
    from perfmodel.layout import pins_text
    from perfmodel.plan import plan
    from reports.views import plan_to_dict, sureness_lines
    from topologies import JobShape
    from topologies.report import node_load_map, topology_report

    sources = provenance(system)           # inputs first: nothing below fails on them
    ckpt = capacity.checkpoint_inputs(system, node_bandwidth=checkpoint_bandwidth,
                                      fs_bandwidth=fs_bandwidth, relaunch_s=relaunch_s)
    pins = dict(pins or {})
    progress("planning: searching layouts at every job size"
             + (f" with {pins_text(pins)}" if pins else ""))
    result = plan(model, system, global_batch=global_batch, tokens=tokens, nodes=nodes,
                  max_nodes=max_nodes, top=top, pins=pins)
    if callable(checks):
        progress("checking the model against published measurements")
        checks = checks()
    data = plan_to_dict(result)
    best = result.best[0]
    err = steps_error(best.layout, limit=PLAN_STEPS, what="a report's timeline draws")
    if err is not None:
        raise err
    sim_best = (result.simulated or {}).get(best.layout)
    tok = result.tokens

    report = {
        "title": f"Training {model.name} ({model.params / 1e9:.1f} B parameters) on {system.name}",
        "generated_by": f"fugakuperf {version()}",
        "model": data["model"], "system": data["system"], "tokens": tok,
        "global_batch": result.global_batch, "pins": pins,
        "comparison": data.get("comparison"),
    }
    frac, verdict = _memory(best, system)
    report["summary"] = {
        "nodes": best.nodes, "layout_label": best.layout.label(),
        "iteration_s": best.iteration_s,
        "des_iteration_s": sim_best.iteration_s if sim_best else None,
        "tokens_per_s": best.tokens_per_s, "mfu": best.mfu,
        "time_to_train_s": best.time_to_train_s(tok), "node_hours": best.node_hours(tok),
        "energy_mwh": best.energy_mwh(tok),
        "memory_fraction_of_usable": frac, "memory_verdict": verdict,
        "memory_rule": memory_rule(), "headroom_alternative": None,
        "band": data["best"][0].get("band"),
        "sureness": sureness_lines(data),
        "confidence": [_calibration_line(system)] + list(checks or []) + data["assumptions"],
    }
    rungs = [g for g in result.rungs if g.best]
    per_node_rate = None
    points = []
    for g in rungs:
        e = g.best
        per_node_rate = per_node_rate or e.tokens_per_s / e.nodes
        band = (result.bands or {}).get(e.layout)
        points.append({"max_nodes": g.max_nodes, "nodes": e.nodes, "layout_label": e.layout.label(),
                       "iteration_s": e.iteration_s, "tokens_per_s": e.tokens_per_s,
                       # the band's ends as throughput: the slow end is the low rate
                       "tokens_per_s_low": band and e.tokens_per_iteration / band.high_s,
                       "tokens_per_s_high": band and e.tokens_per_iteration / band.low_s,
                       "ideal_tokens_per_s": per_node_rate * e.nodes, "mfu": e.mfu,
                       "time_to_train_s": e.time_to_train_s(tok), "node_hours": e.node_hours(tok)})
    curve = [(p["nodes"], p["tokens_per_s"]) for p in points]
    for p, eff in zip(points, capacity.scaling_steps(curve)):
        p["marginal_efficiency"] = eff
    report["scaling"] = {"points": points, "knee_nodes": capacity.knee(curve),
                         "knee_threshold": capacity.KNEE_EFFICIENCY,
                         "knee_rule": capacity.KNEE_RULE}
    ppn = system.ranks_per_node
    report["memory"] = [{"nodes": g.best.nodes, "layout_label": g.best.layout.label(),
                         **{k: getattr(g.best.peak_memory, k) * ppn for k in
                            ("weights", "gradients", "optimizer", "activations", "buffers")},
                         "usable": system.node.usable_memory_bytes,
                         **dict(zip(("memory_fraction_of_usable", "memory_verdict"),
                                    _memory(g.best, system)))} for g in rungs]

    rows = list(result.best)
    reference = None
    if model.name == "fugaku-llm-13b":
        progress("placing Fugaku-LLM's own layout (TP6 PP8 DP288) among them")
        from perfmodel.plan import layout_for
        reference = layout_for(model, system, nodes=REFERENCE_NODES, global_batch=REFERENCE_BATCH,
                               pins=REFERENCE_LAYOUT)
    sims = dict(result.simulated or {})
    layouts = []
    # in the plan's order (its objective on each layout's band), Fugaku-LLM's among them
    from perfmodel.evidence import estimate_band
    bands = dict(result.bands or {})
    if reference is not None and reference.layout not in bands:
        bands[reference.layout] = estimate_band(reference)
    for e in sorted(rows + ([reference] if reference else []),
                    key=lambda e: (bands[e.layout].value(result.objective), e.nodes)):
        sim = sims.get(e.layout) or (simulate(model, system, e.layout, validate=False)
                                     if simulated_steps(e.layout) <= PLAN_STEPS else None)
        fraction, verdict = _memory(e, system)
        layouts.append({"rank": len(layouts) + 1, "label": e.layout.label(), "nodes": e.nodes,
                        "iteration_s": e.iteration_s,
                        "des_iteration_s": sim.iteration_s if sim else None,
                        "tokens_per_s": e.tokens_per_s, "mfu": e.mfu,
                        "memory_bytes_per_node": e.memory_bytes_per_node, "fits": e.memory_fits,
                        "memory_fraction_of_usable": fraction, "memory_verdict": verdict,
                        "time_to_train_s": e.time_to_train_s(tok),
                        "reference": e is reference,
                        "note": "Fugaku-LLM's layout (global batch 2016)" if e is reference else ""})
    report["layouts"] = layouts
    if report["summary"]["memory_verdict"] == "tight":   # as plan: the fastest with headroom
        roomy = next((row for row in layouts if not row["reference"]
                      and row["memory_verdict"] == "fits"), None)
        if roomy is not None:
            report["summary"]["headroom_alternative"] = {
                k: roomy[k] for k in ("rank", "label", "nodes", "iteration_s", "tokens_per_s",
                                      "time_to_train_s", "memory_fraction_of_usable")}

    progress("simulating the recommended layout event by event")
    trace = Trace()
    sim = simulate(model, system, best.layout, trace=trace, validate=False)
    report["timeline"] = {"stages": best.layout.pp, "iteration_s": sim.iteration_s,
                          "spans": _spans(trace)}

    network = network_for(system)
    job = JobShape(best.layout.tp, best.layout.pp, best.layout.dp, ppn)
    if hasattr(network, "placement") and system.network.kind != "torus":
        net = system.network
        report["network"] = {
            "fabric": (f"a fat tree of {net.nodes:,} nodes, {net.nics_per_node} x "
                       f"{net.link_bandwidth / 1e9:g} GB/s per node, {net.nodes_per_leaf} "
                       f"node(s) per leaf switch, oversubscription {net.oversubscription:g}"),
            "placement": network.placement(job).describe()}
    elif hasattr(network, "placement"):
        progress("routing the recommended layout's groups on the torus")
        topo = topology_report(network, job)
        busiest = max(topo["dimensions"], key=lambda d: topo["dimensions"][d]["max_flows_per_link"],
                      default=None)
        axes = ("X", "Z")
        report["network"] = {
            "shape": topo["shape"], "axes": list(axes), "dimension": busiest,
            "heatmap": node_load_map(network, job, busiest, axes) if busiest else [],
            "hottest": topo["dimensions"][busiest]["hottest_links"] if busiest else [],
            "placement": topo["placement"]}

    progress("sensitivity: re-planning with one change at a time")
    report["sensitivity"] = capacity.sensitivity(model, system, result)

    rel = None
    if system.node.mtbf_hours:
        rel = capacity.reliability(
            best.nodes, best.time_to_train_s(tok),
            checkpoint_bytes_per_node=(best.peak_memory.weights + best.peak_memory.optimizer) * ppn,
            checkpoint_bytes_total=capacity.checkpoint_bytes_total(model, best.layout),
            node_mtbf_h=system.node.mtbf_hours,
            checkpoint_bandwidth_per_node=ckpt["checkpoint_bandwidth_per_node"],
            fs_bandwidth=ckpt["fs_bandwidth"], relaunch_s=ckpt["relaunch_s"])
        rel.update({k: v for k, v in ckpt.items() if k.endswith("_source")})
        rel["mtbf_source"] = system.sources.get("node.mtbf_hours", "")
    report["reliability"] = rel

    budget = max(result.node_counts)
    progress(f"the inverse question: the largest model on {budget:,} nodes in {days:g} days")
    found = capacity.largest_model(system, budget, days, tokens=tokens,
                                   objective=result.objective)
    report["inverse"] = {"nodes": budget, "days": days, "params": None, "model": None,
                         "layout_label": None, "time_to_train_s": None,
                         "objective": result.objective, "objective_time_to_train_s": None}
    if found is not None:
        inv_model, inv = found
        report["inverse"].update(
            params=inv_model.params, model=inv_model.to_dict(),
            layout_label=inv.best[0].layout.label(),
            time_to_train_s=inv.best[0].time_to_train_s(inv.tokens),
            objective_time_to_train_s=capacity.objective_time(inv)[0])
    report["assumptions"] = data["assumptions"]
    report["provenance"] = sources
    return report


def _spans(trace) -> list[dict]:
    """The simulation's spans as the timeline's (stage, kind) spans: the simulator gives
    each its stage and kind (a step kind, send, dp, optimizer); a step's tensor-parallel
    collectives are kind ``tp``, and the data-parallel stream's work ``dp_reduce`` (a
    gradient reduction) or ``dp_gather`` (ZeRO-3/FSDP weights gathered for a pass, or
    ZeRO-1/2's updated weights)."""
    out = []
    for ev in trace.events:
        start, args = ev["ts"] / 1e6, ev["args"]
        kind = args["kind"]
        if args.get("part") == "tp_comm":
            kind = "tp"
        elif kind == "dp":
            kind = "dp_gather" if ev["name"] == "gather" else "dp_reduce"
        out.append({"stage": args["stage"], "kind": kind, "start": start,
                    "end": start + ev["dur"] / 1e6, "label": ev["name"]})
    return out


def _calibration_line(system) -> str:
    """What was measured and what is a preset default."""
    if system.calibration is None:
        return ("calibrated parameters: none (no calibration file given); every value below "
                "is a preset default with its source")
    parts = []
    if system.compute_fit is not None:
        parts.append("FP32 compute rates (GEMM rate over shape, bandwidth per kernel class, "
                     "per-op overheads)")
    if system.collective_fits:
        parts.append("collective costs (" + ", ".join(op for op, _, _ in system.collective_fits)
                     + ")")
    return (f"calibrated parameters from {system.calibration}: " + "; ".join(parts)
            + "; every other value is a preset default with its source")
