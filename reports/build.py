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


def build_report(model, system, *, tokens=None, nodes=None, max_nodes=None, global_batch=None,
                 days: float = 30.0, checkpoint_bandwidth: float | None = None, top: int = 8,
                 checks: list[str] | None = None,
                 progress: Callable[[str], None] = _progress) -> dict:
    """The report's data; ``checks``: lines on how the model does against published
    measurements (the CLI gets them from calibration.against.published_checks)."""
    from perfmodel import capacity
    from perfmodel.des import Trace, simulate
    from perfmodel.estimator import network_for
    from perfmodel.plan import assumptions, plan, plan_to_dict
    from perfmodel.presets import system_values
    from topologies import JobShape
    from topologies.report import node_load_map, topology_report

    progress("planning: searching layouts at every job size")
    result = plan(model, system, global_batch=global_batch, tokens=tokens, nodes=nodes,
                  max_nodes=max_nodes, top=top)
    data = plan_to_dict(result)
    best = result.best[0]
    sim_best = (result.simulated or {}).get(best.layout)
    tok = result.tokens

    report = {
        "title": f"Training {model.name} ({model.params / 1e9:.1f} B parameters) on {system.name}",
        "generated_by": f"fugakuperf {version()}",
        "model": data["model"], "system": data["system"], "tokens": tok,
        "global_batch": result.global_batch,
    }
    report["summary"] = {
        "nodes": best.nodes, "layout_label": best.layout.label(),
        "iteration_s": best.iteration_s,
        "des_iteration_s": sim_best.iteration_s if sim_best else None,
        "tokens_per_s": best.tokens_per_s, "mfu": best.mfu,
        "time_to_train_s": best.time_to_train_s(tok), "node_hours": best.node_hours(tok),
        "energy_mwh": best.energy_mwh(tok),
        "memory_fraction_of_usable": best.peak_memory.total / system.rank.usable_memory_bytes,
        "confidence": [_calibration_line(system)] + list(checks or []) + assumptions(system),
    }
    rungs = [g for g in result.rungs if g.best]
    per_node_rate = None
    points = []
    for g in rungs:
        e = g.best
        per_node_rate = per_node_rate or e.tokens_per_s / e.nodes
        points.append({"max_nodes": g.max_nodes, "nodes": e.nodes, "layout_label": e.layout.label(),
                       "iteration_s": e.iteration_s, "tokens_per_s": e.tokens_per_s,
                       "ideal_tokens_per_s": per_node_rate * e.nodes, "mfu": e.mfu,
                       "time_to_train_s": e.time_to_train_s(tok), "node_hours": e.node_hours(tok)})
    report["scaling"] = {"points": points,
                         "knee_nodes": capacity.knee([(p["nodes"], p["tokens_per_s"]) for p in points]),
                         "knee_rule": capacity.KNEE_RULE}
    ppn = system.ranks_per_node
    report["memory"] = [{"nodes": g.best.nodes, "layout_label": g.best.layout.label(),
                         **{k: getattr(g.best.peak_memory, k) * ppn for k in
                            ("weights", "gradients", "optimizer", "activations", "buffers")},
                         "usable": system.node.usable_memory_bytes} for g in rungs]

    rows = list(result.best)
    reference = None
    if model.name == "fugaku-llm-13b":
        progress("placing Fugaku-LLM's own layout (TP6 PP8 DP288) among them")
        from perfmodel.plan import layout_for
        reference = layout_for(model, system, nodes=REFERENCE_NODES, global_batch=REFERENCE_BATCH,
                               pins=REFERENCE_LAYOUT)
    sims = dict(result.simulated or {})
    layouts = []
    for e in sorted(rows + ([reference] if reference else []), key=lambda e: e.iteration_s):
        sim = sims.get(e.layout) or simulate(model, system, e.layout, validate=False)
        layouts.append({"rank": len(layouts) + 1, "label": e.layout.label(), "nodes": e.nodes,
                        "iteration_s": e.iteration_s, "des_iteration_s": sim.iteration_s,
                        "tokens_per_s": e.tokens_per_s, "mfu": e.mfu,
                        "memory_bytes_per_node": e.memory_bytes_per_node, "fits": e.memory_fits,
                        "time_to_train_s": e.time_to_train_s(tok),
                        "reference": e is reference,
                        "note": "Fugaku-LLM's layout (global batch 2016)" if e is reference else ""})
    report["layouts"] = layouts

    progress("simulating the recommended layout event by event")
    trace = Trace()
    sim = simulate(model, system, best.layout, trace=trace, validate=False)
    report["timeline"] = {"stages": best.layout.pp, "iteration_s": sim.iteration_s,
                          "spans": _spans(trace)}

    network = network_for(system)
    if hasattr(network, "placement"):
        progress("routing the recommended layout's groups on the torus")
        job = JobShape(best.layout.tp, best.layout.pp, best.layout.dp, ppn)
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

    states_per_node = (best.peak_memory.weights + best.peak_memory.optimizer) * ppn
    rel = None
    if system.node.mtbf_hours:
        if checkpoint_bandwidth:
            ckpt_source = "given with --checkpoint-gbs"
        elif system.checkpoint_bandwidth:
            checkpoint_bandwidth = system.checkpoint_bandwidth
            ckpt_source = (f"measured by `fugakuperf calibrate` (calibration "
                           f"{system.calibration}): a checkpoint written and synced on the node")
        else:
            ckpt_source = (f"not given: {system.name}'s checkpoint write bandwidth per node is "
                           f"not published; pass --checkpoint-gbs, or a --calibration file "
                           f"made on the node (it measures a checkpoint write)")
        rel = capacity.reliability(best.nodes, best.time_to_train_s(tok), states_per_node,
                                   node_mtbf_h=system.node.mtbf_hours,
                                   checkpoint_bandwidth=checkpoint_bandwidth)
        rel["mtbf_source"] = system.sources.get("node.mtbf_hours", "")
        rel["checkpoint_source"] = ckpt_source
    report["reliability"] = rel

    budget = max(result.node_counts)
    progress(f"the inverse question: the largest model on {budget:,} nodes in {days:g} days")
    found = capacity.largest_model(system, budget, days, tokens=tokens)
    if found is None:
        report["inverse"] = {"nodes": budget, "days": days, "params": None, "model": None,
                             "layout_label": None, "time_to_train_s": None}
    else:
        inv_model, inv = found
        report["inverse"] = {"nodes": budget, "days": days, "params": inv_model.params,
                             "model": inv_model.to_dict(), "layout_label": inv.best[0].layout.label(),
                             "time_to_train_s": inv.best[0].time_to_train_s(inv.tokens)}
    report["assumptions"] = data["assumptions"]
    values = system_values(system)
    report["provenance"] = [{"parameter": k, "value": values.get(k), "source": v}
                            for k, v in system.sources.items()]
    return report


def _spans(trace) -> list[dict]:
    """Chrome-trace spans of the simulation as the timeline's (stage, kind) spans."""
    out = []
    for ev in trace.events:
        track = next((n for n, tid in trace.tracks.items() if tid == ev["tid"]), "")
        stage = int(track.split()[1])
        name = ev["name"]
        if track.endswith("p2p"):
            kind = "send"
        elif track.endswith("dp stream"):
            kind = "dp"
        elif name == "optimizer":
            kind = "optimizer"
        else:
            kind = name[0]
        start = ev["ts"] / 1e6
        out.append({"stage": stage, "kind": kind, "start": start, "end": start + ev["dur"] / 1e6,
                    "label": name})
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
