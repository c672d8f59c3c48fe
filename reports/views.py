"""The views of results: what ``plan`` and ``simulate`` print as JSON (and render as
text), and the prose of what each prediction assumes.

The model (perfmodel) computes; this module says it. Every number keeps SI units
(seconds, bytes, FLOP/s, joules); the conventions travel with the numbers
(``conventions``) and the assumptions name their sources.
"""

from __future__ import annotations

from perfmodel.estimator import Estimate
from perfmodel.evidence import MIN_EVIDENCE, OBJECTIVES, band_for
from perfmodel.layout import STACK_SETTINGS
from perfmodel.memory import memory_verdict
from perfmodel.plan import PlanResult
from perfmodel.precisions import ACT_BYTES, GRAD_BYTES, OPTIMIZER_BYTES, PRECISIONS, STATE_BYTES
from perfmodel.sharding import FAMILIES
from perfmodel.system import SystemSpec

from .numbers import big, compact_days, compact_seconds


def estimate_to_dict(est: Estimate, tokens: float, price_per_node_hour: float | None = None,
                     sim=None) -> dict:
    """Every number ``plan`` shows for one layout (SI units: s, bytes, FLOP/s, J)."""
    lay = est.layout
    peak = est.peak_memory
    fraction = peak.total / est.system.rank.usable_memory_bytes
    out = {
        "nodes": est.nodes,
        "layout": {**{k: v for k, v in lay.to_dict().items()
                      if k == "sharding" or k not in STACK_SETTINGS},   # the stack's own
                   "stage_layers": list(lay.stage_layers(est.model))},
        "micro_batches": lay.micro_batches,
        "iteration_s": est.iteration_s,
        "tokens_per_s": est.tokens_per_s,
        "model_tflops_per_node": est.model_flops_per_s_per_node / 1e12,
        "mfu": est.mfu,
        "memory_bytes_per_node": est.memory_bytes_per_node,
        "memory_fits": est.memory_fits,
        "memory_fraction_of_usable": fraction,
        "memory_verdict": memory_verdict(fraction),
        "memory_peak_stage": {k: v for k, v in peak.to_dict().items()},
        "time_to_train_s": est.time_to_train_s(tokens),
        "node_hours": est.node_hours(tokens),
        "energy_mwh": est.energy_mwh(tokens),
        "breakdown_s": est.breakdown.to_dict(),
        "network_model": est.network,
        "placement": list(est.placement),
    }
    if price_per_node_hour is not None:
        out["cost"] = est.node_hours(tokens) * price_per_node_hour
    if sim is not None:
        out["des"] = {"iteration_s": sim.iteration_s, "tokens_per_s": sim.tokens_per_s,
                      "bubble_fraction": sim.bubble_fraction,
                      "time_to_train_s": tokens / sim.tokens_per_s, "events": sim.events}
    return out


def _network_assumption(system: SystemSpec) -> str:
    net = system.network
    links = (f"{net.effective_link_bandwidth / 1e9:.2f} GB/s per link direction, "
             f"{net.effective_injection_bandwidth / 1e9:.1f} GB/s injection per node")
    if net.model == "analytic":
        return (f"network: alpha-beta, {links}, {net.latency_s * 1e6:.2f} us per message, rings "
                f"on nearest neighbours, no contention between concurrent groups")
    if net.kind == "fattree":
        return (f"network: a fat tree of {system.ranks_per_node}-rank nodes ({net.nics_per_node} "
                f"NICs each, {net.nodes_per_leaf} nodes per leaf, oversubscription "
                f"{net.oversubscription:g}), ranks in order, links shared max-min fairly; "
                f"{links}; {system.rank.intra_node_bandwidth / 1e9:.0f} GB/s per rank inside "
                f"a node; {net.put_latency_s * 1e6:.2f} us per collective step between nodes; "
                f"the cheapest collective algorithm is assumed")
    shape = f"the given shape {system.job_shape}" if system.job_shape else \
        "the shape the allocator model gives (not the scheduler's published policy)"
    return (f"network: flows routed dimension-order on {shape}, {net.mapping} placement, links "
            f"shared max-min fairly; {links}; {net.put_latency_s * 1e6:.2f} us per collective "
            f"step, {net.latency_s * 1e6:.2f} us per MPI message, per-hop latency "
            f"{net.hop_latency_s * 1e6:g} us; the cheapest collective algorithm is assumed; "
            f"layouts are screened with the contention-free model (on their bands, when "
            f"ranked by a band) and the best are re-priced")


def _stack_assumption(system: SystemSpec) -> str:
    stack = system.stack
    parts = [f"software stack {stack.name}: {stack.description}"]
    if stack.kernel_bytes_per_cycle is not None:
        parts.append(f"memory-bound kernels at {stack.kernel_bytes_per_cycle:g} bytes per cycle "
                     f"per node ({system.rank.memory_bandwidth * system.ranks_per_node / 1e9:.1f}"
                     f" GB/s at {system.node.clock_hz / 1e9:g} GHz)")
    if stack.collective_efficiency != 1.0:
        parts.append(f"collectives at {stack.collective_efficiency:.0%} of the network "
                     f"model's bandwidth")
    parts.append("the data-parallel reduction overlaps the backward" if stack.overlap_dp else
                 "the data-parallel reduction waits for the backward")
    if stack.overlap_dp and system.node.reduce_bandwidth:
        parts.append("its arithmetic runs on the compute cores, which overlap does not hide")
    bucket = stack.reduce_bucket_mb
    parts.append("gradients reduced " + ({"layer": "in one bucket per layer",
                                          "flat": "in one flat buffer"}.get(bucket)
                                         or f"in buckets of {bucket:g} MB"))
    modes = [FAMILIES[stack.sharding][z] for z in stack.zero_stages]
    parts.append(f"data parallelism as {stack.sharding} runs it: "
                 f"{', '.join(m.name for m in modes)}")
    if any(m.gathers for m in modes):
        unit = {"layer": "per layer", "module": "per weight matrix",
                "stage": "as one flat buffer per pass"}[stack.gather_granularity]
        ahead = (f", {stack.prefetch_layers} layer(s) ahead" if stack.prefetch_layers
                 else ", each when its layer is reached")
        parts.append(f"weights gathered {unit}"
                     + (ahead if stack.gather_granularity != "stage" else ""))
    if "node" in stack.shard_groups:
        hybrids = " or ".join(m.hybrid for m in modes if m.hybrid)
        parts.append(f"states also sharded within a node, a replica per node ({hybrids}), "
                     f"where that is faster")
    if stack.optimizer == "host":
        parts.append("the optimizer offloaded to the host")
    parts.append("collectives by the cheapest algorithm the network model knows"
                 if stack.algorithms is None else
                 f"collectives as {' or '.join(stack.algorithms)} only")
    parts.append("FlashAttention (no s x s matrix in memory)" if stack.attention == "flash"
                 else "attention with the s x s score matrix in memory")
    uneven = [m for m in stack.pipeline_partitions if m != "even"]
    parts.append(f"layers placed evenly on the pipeline stages, or by {' or '.join(uneven)}"
                 if uneven else "layers placed evenly on the pipeline stages (pp divides them)")
    others = [s.name for s in system.stacks if s.name != stack.name]
    if others:
        parts.append(f"others: --stack {', '.join(others)}")
    return "; ".join(parts)


def _precision_assumption(system: SystemSpec, precision: str) -> str:
    """What training in ``precision`` (mixed precision: fp16 or bf16) assumes."""
    node, P = system.node, precision.upper()
    w, g, o = STATE_BYTES[precision]
    eff = (f"GEMMs at {node.gemm_efficiency:.2f} of the {P} peak "
           f"({node.peak_flops(precision) / 1e12:.2f} TF per node), the preset's one GEMM "
           f"efficiency, used for every precision "
           f"({system.sources.get('node.gemm_efficiency', 'preset')})"
           + ("; the calibration measures FP32 only" if system.compute_fit else ""))
    return (f"{P} mixed precision: {eff}; activations and weight copies in "
            f"{ACT_BYTES[precision]} bytes; model states {w + g + o} bytes per parameter "
            f"({w} {precision} weights + {g} fp32 gradients + {o} fp32 master weights and Adam "
            f"moments), the optimizer step moving {OPTIMIZER_BYTES[precision]} bytes per "
            f"parameter; gradients reduced in fp32 ({GRAD_BYTES} bytes); loss scaling is not "
            f"modelled (its overflow checks and skipped steps cost nothing here)")


def _experts_assumption(model, system: SystemSpec) -> str:
    cap = (f"capacity factor {model.capacity_factor:g} caps the busiest expert's tokens"
           if model.capacity_factor else "dropless: no capacity cap")
    whole = ("whole on every TP rank, each running 1/TP of its tokens (TP times the experts' "
             "memory; their outputs gathered over TP): DeepSpeed's MoE layer, unless "
             "--enable-expert-tensor-parallelism")
    split = "split over the TP ranks as the dense MLP is"
    ways = system.stack.expert_tp
    if len(ways) > 1:
        experts = f"each expert's MLP {split}, or (layouts marked ETP1) {whole}"
    elif ways[0]:
        experts = (f"each expert's MLP {split} (Megatron-Core's default: "
                   f"--expert-tensor-parallel-size is TP unless set, "
                   f"megatron/training/arguments.py; the folded expert layout of a smaller "
                   f"expert TP is not modelled)")
    else:
        experts = f"each expert's MLP {whole}"
    return (f"mixture of experts ({model.experts} experts, top {model.top_k}): {experts}; "
            f"tokens dispatched and combined by all-to-alls over the EP ranks, priced on the "
            f"network model; the router's tokens even over the experts unless the layout says "
            f"how uneven (--moe-load: the busiest rank's tokens over the mean); {cap}")


def assumptions(system: SystemSpec, precisions=("fp32",), model=None) -> list[str]:
    """What the prediction rests on that is not a measurement of this run (for layouts
    training in ``precisions``, of ``model`` where it adds to them: a mixture of
    experts)."""
    node = system.node
    src = system.sources
    fit = system.compute_fit
    if fit is not None:
        compute = (f"FP32 compute from calibration {system.calibration}: GEMMs up to "
                   f"{fit.gemm_rate / 1e9:.1f} GFLOP/s per rank over shape, memory-bound kernels "
                   f"at their measured bandwidths ({fit.threads} thread(s) per rank when "
                   f"measured); FP16 keeps the preset's GEMM efficiency "
                   f"{node.gemm_efficiency:.2f}")
    else:
        shape = ("for every shape" if not node.gemm_half_size else
                 f"for large GEMMs, less for small ones: / (1 + {node.gemm_half_size:g}/m + "
                 f"{node.gemm_half_size:g}/n + {node.gemm_half_size:g}/k)")
        compute = (f"GEMM efficiency {node.gemm_efficiency:.2f} of peak {shape} "
                   f"({src.get('node.gemm_efficiency', 'preset')}); `fugakuperf calibrate` on a "
                   f"node measures it (--calibration FILE)")
    network = (f"collectives from calibration {system.calibration}: a fitted latency and "
               f"bandwidth per collective" if system.collective_fits
               else _network_assumption(system))
    return [
        _stack_assumption(system),
        compute,
        network,
        f"memory: {system.rank.usable_memory_bytes / 1e9:.3g} GB usable per rank "
        f"({src.get('node.usable_memory_gb', 'preset')}); framework overheads beyond the "
        f"counted buffers are not modelled",
        (f"energy: {node.power_w:.0f} W per node ({src.get('node.power_w', 'preset')})"
         if node.power_w > 0 else
         f"energy: not estimated, no power figure ({src.get('node.power_w', 'preset')})"),
    ] + [_precision_assumption(system, p) for p in sorted(set(precisions)) if p != "fp32"] \
        + ([_experts_assumption(model, system)] if model is not None and model.experts
           else [])


def plan_to_dict(result: PlanResult) -> dict:
    r = result
    model = r.model.to_dict()
    sims = r.simulated or {}

    bands = r.bands or {}

    def entry(e: Estimate) -> dict:
        d = estimate_to_dict(e, r.tokens, r.price_per_node_hour, sims.get(e.layout))
        if "des" not in d:                # a layout of more steps than a plan simulates
            from perfmodel.des import PLAN_STEPS, simulated_steps
            d["des"] = None
            d["des_why"] = (f"{simulated_steps(e.layout):,} schedule steps, more than the "
                            f"{PLAN_STEPS:,} a plan simulates: the estimate alone")
        band = bands.get(e.layout)
        if band is not None:
            d["band"] = band_to_dict(band, d)
        return d

    shown = r.best + [g.best for g in r.rungs if g.best]
    if r.comparison is not None:
        shown += [r.comparison.pinned, r.comparison.best]
    c = r.comparison
    relation = None if c is None else (
        "as fast as" if abs(c.pinned.iteration_s - c.best.iteration_s)
        <= 1e-9 * c.best.iteration_s else
        "slower" if c.pinned.iteration_s > c.best.iteration_s else "faster")

    return {
        "model": model,
        "system": {**r.system.settings(), "description": r.system.description,
                   "peak_tflops_per_node": {p: r.system.node.peak_flops(p) / 1e12
                                            for p in PRECISIONS
                                            if r.system.node.supports(p)},
                   "usable_memory_bytes_per_node": r.system.node.usable_memory_bytes,
                   "power_w_per_node": r.system.node.power_w},
        "nodes": r.node_counts,
        "exact_nodes": r.exact_nodes,
        "global_batch": r.global_batch,
        "tokens": r.tokens,
        "pins": r.pins,
        "candidates_evaluated": r.stats.candidates_evaluated,
        "search": {"confirmed_with_network_model": r.stats.confirmed,
                   "memory_checked": r.stats.memory_checked,
                   "rejected_memory": r.stats.rejected_memory,
                   "pruned_by_bound": r.stats.pruned,
                   "node_counts_visited": len(r.stats.node_counts)},
        "assumptions": assumptions(r.system, [e.layout.precision for e in shown], r.model),
        "conventions": {
            "mfu": "model FLOPs (forward + backward, no recompute; Korthikanti et al. 2022 Eq. 7) "
                   "per second per node / peak FLOP/s per node at the training precision",
            "memory_bytes_per_node": "peak pipeline stage: weights + gradients + optimizer + "
                                     "activations + buffers, times ranks per node",
            "energy_mwh": "node-hours x power per node (no cooling or network overhead)",
        },
        "objective": r.objective,
        "objective_meaning": OBJECTIVES[r.objective],
        "indistinguishable": r.indistinguishable,
        "preferred_for_evidence": r.preferred_for_evidence,
        "best": [entry(e) for e in r.best],
        "ladder": [{"max_nodes": g.max_nodes, "min_nodes": g.min_nodes,
                    "best": None if g.best is None else entry(g.best)} for g in r.rungs],
        "comparison": None if r.comparison is None else {
            "pinned": entry(r.comparison.pinned),
            "best_unpinned": entry(r.comparison.best),
            "rank": r.comparison.rank, "of": r.comparison.of,
            "labels": {"pinned": r.comparison.pinned.layout.label(),
                       "best_unpinned": r.comparison.best.layout.label()},
            "slowdown": r.comparison.pinned.iteration_s / r.comparison.best.iteration_s - 1,
            "relation": relation,
            "differences": r.comparison.differences,
            "reasons": r.comparison.reasons},
    }


def sureness_lines(d: dict) -> list[str]:
    """How sure the recommendation is, how it was chosen, and what would make it surer."""
    b = d["best"][0]
    band = b.get("band")
    if not band:
        return []
    lines = [f"How sure: 80% band {compact_seconds(band['iteration_s_low'])}-"
             f"{compact_seconds(band['iteration_s_high'])} s per iteration, "
             f"{compact_days(band['time_to_train_s_low'])}-{compact_days(band['time_to_train_s_high'])} days; "
             + (f"{band['evidence_runs']} measured run(s) in its regime "
                f"({', '.join(band['evidence_sources'])}) missed by {band['evidence_mean_abs_error']:.0%} on average"
                if band["evidence_runs"] >= MIN_EVIDENCE else
                "no measured run (published or calibrated) is in its regime, so the band is "
                "the wide one for no evidence")]
    widest = max(band["parameters"], key=lambda p: max(abs(p["log_ratio_at_low"]),
                                                       abs(p["log_ratio_at_high"])), default=None)
    if widest and max(abs(widest["log_ratio_at_low"]), abs(widest["log_ratio_at_high"])) > 0.05:
        lines.append(f"  the assumed value that moves it most: {widest['key']}; measuring it "
                     f"narrows the band: `fugakuperf calibrate` on a node of this system, "
                     f"then plan with --calibration FILE")
    lines.append(f"  ranked by {d['objective']}: {d['objective_meaning']} (--objective)"
                 + (f"; the first {d['indistinguishable']} are indistinguishable within their "
                    f"bands" if d["indistinguishable"] > 1 else "")
                 + ("; the first is the one of those with published evidence"
                    if d["preferred_for_evidence"] else ""))
    return lines


def band_to_dict(band, entry: dict) -> dict:
    """A layout's band (perfmodel.evidence.Band) in seconds per iteration and in days to
    train, with what it rests on."""
    d = band.to_dict()
    per_iteration = entry["time_to_train_s"] / entry["iteration_s"]
    d.update(time_to_train_s_low=band.low_s * per_iteration,
             time_to_train_s_median=band.median_s * per_iteration,
             time_to_train_s_high=band.high_s * per_iteration, meaning=(
                 "an 80% interval of the time per iteration: the residuals of the published "
                 "runs in this layout's regime and the declared ranges of the assumed values "
                 "(perfmodel/evidence.py)"))
    return d


def simulation_to_dict(model, system: SystemSpec, est: Estimate, sim, noise, variability,
                       runs: int, wall_s: float, trace_path: str | None = None) -> dict:
    """What ``simulate`` prints: the simulated iteration of ``est``'s layout, its memory
    verdict, the analytic estimate beside it, and with noise the runs over seeds
    against the noise-free time."""
    fraction = sim.peak_memory_bytes / system.rank.usable_memory_bytes
    data = {"model": model.to_dict(), "system": system.settings(), "nodes": est.nodes,
            "layout": {**est.layout.to_dict(),
                       "stage_layers": list(est.layout.stage_layers(model))}, **sim.to_dict(),
            "memory_fits": fraction <= 1.0, "memory_fraction_of_usable": fraction,
            "memory_verdict": memory_verdict(fraction),
            "analytic": {"iteration_s": est.iteration_s, "breakdown": est.breakdown.to_dict()},
            "network_model": est.network, "wall_s": wall_s}
    band = band_for(model, system, est.layout, sim.iteration_s)
    data["band"] = {**band.to_dict(), "meaning": "an 80% interval of the simulated time per "
                    "iteration (perfmodel/evidence.py)", "summary": band.describe()}
    if variability is not None:
        base = sim.iteration_s
        data["variability"] = {
            **variability, "noise_free_s": base, "one_sample": variability["runs"] == 1,
            "jitter": noise.jitter, "straggler_fraction": noise.straggler_fraction,
            "straggler_slowdown": noise.straggler_slowdown,
            "mean_over_noise_free": variability["mean_s"] / base - 1,
            "p99_over_noise_free": variability["p99_s"] / base - 1}
    elif runs > 1:
        data["note"] = ("--runs has no effect without --jitter or --stragglers: the "
                        "simulation is deterministic")
    if trace_path is not None:
        data["trace"] = trace_path
        data["trace_of"] = (f"the first run with noise (seed {noise.seed})" if noise.active
                            else "the noise-free iteration")
    return data


def inverse_to_dict(system, budget: int, limit: str, kw: dict, found, tried: list) -> dict:
    """``plan --days``: the largest model that trains within the limits, its plan, and
    what was assumed (``found``: capacity.largest_model's answer; ``tried``: every size
    it tried, on which network model, and whether it fitted)."""
    from perfmodel.capacity import objective_time
    from perfmodel.plan import TOKENS_PER_PARAM
    from perfmodel.sizing import MAX_PARAMS, MIN_PARAMS
    objective = kw["objective"]
    out = {
        "question": {"days": kw["days"], "nodes": budget, "nodes_limited_by": limit,
                     "node_hours": kw["budget_node_hours"], "max_mw": kw["max_mw"],
                     "objective": objective, "objective_meaning": OBJECTIVES[objective]},
        "system": {**system.settings(), "power_w_per_node": system.node.power_w},
        "assumptions": [
            f"models follow the --params sizing rule (perfmodel/sizing.py), searched from "
            f"{MIN_PARAMS:.0e} to {MAX_PARAMS:.0e} parameters by bisection in log space: 10 "
            f"halvings with the contention-free network model, then, if the system's own "
            f"finds the answer too slow, 6 below it on that network (to within 2%), then "
            f"5, 10 and 20% above the answer (the rule's shapes make the time jagged in "
            f"the size: a head count with few divisors leaves few tensor-parallel splits); "
            f"'tried' lists every size and whether it fitted",
            "tokens: " + (f"{big(kw['tokens'])} as given" if kw["tokens"] is not None else
                          f"{TOKENS_PER_PARAM} per parameter (Hoffmann et al. 2022)"),
            f"a model trains in time when its best layout, by {objective} "
            f"({OBJECTIVES[objective]}), does: screened with the contention-free network "
            f"model, the answer confirmed on the system's own",
        ],
        "model": None, "plan": None, "tried": tried,
    }
    if found is not None:
        model, result = found
        seconds, hours = objective_time(result)
        out["model"] = {**model.to_dict(), "params": model.params}
        out["plan"] = plan_to_dict(result)
        network = result.best[0].network
        slower = [t["params"] for t in tried if t["network_model"] == network
                  and not t["fits"] and t["params"] > model.params]
        out["answer"] = {"params": model.params, "nodes": result.best[0].nodes,
                         "smallest_too_slow_tried": min(slower) if slower else None,
                         "layout_label": result.best[0].layout.label(),
                         "tokens": result.tokens,
                         "time_to_train_s": result.best[0].time_to_train_s(result.tokens),
                         "objective_time_to_train_s": seconds,
                         "objective_node_hours": hours}
        out["assumptions"] += out["plan"]["assumptions"]
    return out
