"""Plain-text rendering of a plan for the terminal."""

from __future__ import annotations

from perfmodel.evidence import MIN_EVIDENCE
from perfmodel.layout import pins_text

from .numbers import big, compact as _si, compact_days as _days, compact_seconds as _seconds
from .numbers import duration, plain, rate
from .views import sureness_lines


def _layout_cells(lay: dict) -> list[str]:
    sched = lay["schedule"] + (f"/{lay['virtual_stages']}" if lay["virtual_stages"] > 1 else "")
    rc = lay["recompute"]
    if lay["recompute_stages"]:
        rc = f"full:{lay['recompute_stages']}"
    ep = lay.get("ep", 1)
    dp = str(lay["dp"]) + (f" ep{ep}" if ep > 1 else "")     # (experts split over ep of them)
    if not lay.get("expert_tp", True):
        dp += " etp1"                                        # (experts whole on each TP rank)
    cp = lay.get("cp", 1)
    tp = str(lay["tp"]) + (f" cp{cp}" if cp > 1 else "")     # (each sequence over cp ranks)
    return [tp, str(lay["pp"]) + _uneven(lay), dp,
            str(lay["micro_batch"]), sched, str(lay["zero"]), rc,
            "y" if lay["sequence_parallel"] else "n"]


def _uneven(lay: dict) -> str:
    """`` [5,6x10,5]``: the layers per stage of an uneven partition, in runs; empty for
    an even one."""
    if lay.get("partition", "even") == "even":
        return ""
    runs: list[list[int]] = []
    for n in lay["stage_layers"]:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    return " [" + ",".join(f"{n}x{k}" if k > 1 else str(n) for n, k in runs) + "]"


HEADER = ["#", "nodes", "TP", "PP", "DP", "mb", "sched", "ZeRO", "recomp", "SP", "iter s",
          "DES s", "80% band s", "evid.", "tokens/s", "TF/node", "MFU", "mem GB", "fits", "days",
          "p90 days", "node-h", "MWh"]
COST = "cost"   # the column --price-per-node-hour adds: node-hours x price


def _row(rank: str, c: dict) -> list[str]:
    des, band = c.get("des"), c.get("band")
    return [rank, f"{c['nodes']:,}", *_layout_cells(c["layout"]), _seconds(c["iteration_s"]),
            _seconds(des["iteration_s"]) if des else "-",
            f"{_seconds(band['iteration_s_low'])}-{_seconds(band['iteration_s_high'])}"
            if band else "-", _evidence(band),
            _si(c["tokens_per_s"]), f"{c['model_tflops_per_node']:.2f}", f"{c['mfu']:.1%}",
            f"{c['memory_bytes_per_node'] / 1e9:.1f}", _fits(c),
            _days(c["time_to_train_s"]),
            _days(band["time_to_train_s_high"]) if band else "-",
            _si(c["node_hours"]), _mwh(c["energy_mwh"])] + (
        [_si(c["cost"])] if "cost" in c else [])


def _evidence(band: dict | None) -> str:
    """How many measured runs (published or calibrated) back the layout's regime, and
    their mean |error|."""
    if not band:
        return "-"
    n, err = band["evidence_runs"], band["evidence_mean_abs_error"]
    return "none" if n < MIN_EVIDENCE else f"{n} ({err:.0%})"


def _mwh(energy: float | None) -> str:
    """Megawatt-hours, or "-" where the system gives no power figure."""
    return "-" if energy is None else f"{energy:,.0f}"


def _header(first: str, d: dict) -> list[str]:
    priced = any("cost" in c for c in d["best"])
    return [first] + HEADER[1:] + ([COST] if priced else [])


def _ranked_heading(d: dict) -> str:
    """What the layouts table lists: the fastest, or the best by the plan's objective."""
    return {"model": "Fastest layouts", "median": "Best layouts by median time"}.get(
        d.get("objective", "model"), "Best layouts by p90 time (the band's slow end)")


def _summary(c: dict) -> str:
    lay = c["layout"]
    des = c.get("des")
    return (f"TP{lay['tp']} PP{lay['pp']} DP{lay['dp']} on {c['nodes']:,} nodes: "
            f"{c['tokens_per_s']:,.0f} tokens/s, {_days(c['time_to_train_s'])} days, "
            f"{c['node_hours']:,.0f} node-hours"
            + (f", {c['energy_mwh']:,.0f} MWh" if c["energy_mwh"] is not None else "")
            + (f", cost {c['cost']:,.0f}" if "cost" in c else "")
            + (f" (the event simulation gives {plain(des['iteration_s'])} s per iteration, "
               f"{_days(des['time_to_train_s'])} days)" if des else ""))


def _fits(c: dict) -> str:
    """yes, tight (perfmodel.memory.memory_verdict: little room for framework overheads), NO."""
    return {"fits": "yes", "tight": "tight", "does not fit": "NO"}[c["memory_verdict"]]


def _comparison(c: dict, s: dict) -> list[str]:
    """The pinned layout against the fastest without the pins: how it ranks, every field
    in which the two differ, and where the time goes (perfmodel.explain)."""
    p, b = c["pinned"], c["best_unpinned"]
    where = (f"Pinned layout ranks {c['rank']} of {c['of']} fitting "
             f"{p['layout']['precision']} layouts on {p['nodes']:,} nodes")
    mine = f"{c['labels']['pinned']}, {plain(p['iteration_s'])} s per iteration"
    if c["relation"] == "as fast as":
        head = [f"{where}: {mine}, as fast as the fastest the search finds."]
    else:
        if c["relation"] == "slower":
            how = f"{p['iteration_s'] / b['iteration_s'] - 1:.1%} slower than"
        else:
            how = f"{b['iteration_s'] / p['iteration_s'] - 1:.1%} faster than"
        head = [f"{where}: {mine}, {how} the fastest without the pins, "
                f"{c['labels']['best_unpinned']} ({plain(b['iteration_s'])} s)."]
        if c["differences"]:
            head.append("  They differ in: " + "; ".join(c["differences"]) + ".")
        head.append("  Where the time goes (pinned minus fastest, seconds per iteration on the "
                    "critical stage):")
    mem = p["memory_peak_stage"]
    return head + [f"    {r}" for r in c["reasons"] if c["relation"] != "as fast as"] + [
        f"  its peak stage ({int(mem['stage'])}) uses {mem['total'] / 1e9:.1f} GB of "
        f"{s['usable_memory_bytes_per_node'] / s['ranks_per_node'] / 1e9:g} GB per rank"]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    def fmt(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def render_inverse(d: dict) -> str:
    """``plan --days``: the largest model within the limits."""
    q = d["question"]
    limits = [f"{q['days']:g} days", f"at most {q['nodes']:,} nodes ({q['nodes_limited_by']})"]
    if q.get("node_hours") is not None:
        limits.append(f"at most {q['node_hours']:,.0f} node-hours")
    lines = [f"The largest model that trains within {', '.join(limits)} on "
             f"{d['system']['name']}, by {q['objective']} time ({q['objective_meaning']}):"]
    if d["model"] is None:
        lines.append("  none: even the smallest model of the --params rule is too slow")
    else:
        m, a = d["model"], d["answer"]
        lines += [
            f"  model   {a['params']:,} parameters ({big(a['params'])}): {m['layers']} "
            f"layers x {m['hidden']} hidden, {m['heads']} heads, ffn {m['ffn']}, vocab "
            f"{m['vocab']}, seq {m['seq']}",
            f"  layout  {a['layout_label']} on {a['nodes']:,} nodes",
            f"  train   {a['tokens'] / 1e9:,.0f} B tokens in {a['time_to_train_s'] / 86400:.1f} "
            f"days predicted, {a['objective_time_to_train_s'] / 86400:.1f} days by "
            f"{q['objective']}; {a['objective_node_hours']:,.0f} node-hours by {q['objective']}",
            "", render_plan(d["plan"])]
    lines += ["", "Assumptions of the question:"] + [f"  - {x}" for x in d["assumptions"][:3]]
    return "\n".join(lines)


# Parts of an iteration only some layouts have (a mixture of experts' all-to-alls,
# context parallelism's ring): shown where they take time.
RUN_ONLY = ("ep_comm", "cp_comm")


def _breakdown_text(breakdown: dict) -> str:
    """'compute 4.175, recompute 0, ...': every part, those of RUN_ONLY where not 0."""
    return ", ".join(f"{k.replace('_', ' ')} {plain(v)}" for k, v in breakdown.items()
                     if k not in RUN_ONLY or v)


def _experts(m: dict) -> str:
    """A mixture of experts' experts, and the parameters a token runs through."""
    if not m.get("experts"):
        return ""
    shared = f" + {m['shared_experts']} shared" if m.get("shared_experts") else ""
    return (f", {m['experts']} experts{shared} of ffn {m['expert_ffn']}, top {m['top_k']}: "
            f"{m['active_params'] / 1e9:.2f} B active")


def render_plan(d: dict) -> str:
    """The plan as a terminal report (``d`` is ``perfmodel.plan.plan_to_dict``)."""
    m, s = d["model"], d["system"]
    lines = [
        f"model   {m['name']}: {m['params']:,} parameters ({m['params'] / 1e9:.2f} B), "
        f"{m['layers']} layers x {m['hidden']} hidden, {m['heads']} heads, ffn {m['ffn']}, "
        f"vocab {m['vocab']}, seq {m['seq']}" + _experts(m)
        + (f"; {m['source']}" if m.get("source") else ""),
        f"system  {s['name']}: {s['clock_ghz']:g} GHz, eco {'on' if s['eco_mode'] else 'off'}, "
        f"{s['ranks_per_node']} rank(s)/node, peak "
        + ", ".join(f"{v:.2f} TF {k}" for k, v in s["peak_tflops_per_node"].items())
        + f" per node, {s['usable_memory_bytes_per_node'] / 1e9:g} GB usable"
        + (f"; measured rates from calibration {s['calibration']}" if s.get("calibration") else ""),
        f"train   {d['tokens'] / 1e9:,.0f} B tokens, global batch {d['global_batch']} sequences "
        f"({d['global_batch'] * m['seq'] / 1e6:.2f} M tokens)"
        + (f"; pinned: {pins_text(d['pins'])}" if d["pins"] else ""),
        "",
    ]
    if not d["exact_nodes"]:
        lines.append("Best layout per job size (each row: at most that many nodes)")
        rows = [_row(f"<={g['max_nodes']:,}", g["best"]) for g in d["ladder"] if g["best"]]
        missing = [g["max_nodes"] for g in d["ladder"] if not g["best"]]
        lines.append(table(rows, _header("up to", d)))
        if missing:
            lines.append("no fitting layout up to: " + ", ".join(f"{n:,}" for n in missing))
        lines.append("")
        lines.append(f"{_ranked_heading(d)} within {d['nodes'][-1]:,} nodes")
    else:
        lines.append(f"{_ranked_heading(d)} on " + ", ".join(f"{n:,}" for n in d["nodes"])
                     + " nodes")
    lines.append(table([_row(str(i + 1), c) for i, c in enumerate(d["best"])], _header("#", d)))
    if d["best"]:
        b = d["best"][0]
        lines += ["", "Recommended: " + _summary(b)]
        if b["memory_verdict"] == "tight":
            roomy = next((i for i, c in enumerate(d["best"])
                          if c["memory_verdict"] == "fits"), None)
            lines.append(f"  it uses {b['memory_fraction_of_usable']:.0%} of usable memory; "
                         + (f"with 5% headroom the fastest listed is #{roomy + 1}: "
                            + _summary(d["best"][roomy]) if roomy is not None else
                            "none of the listed layouts leaves 5% headroom (try --top 20)"))
        lines += sureness_lines(d)
        lines += ["", f"Iteration of the best layout ({plain(b['iteration_s'])} s): "
                  + _breakdown_text(b["breakdown_s"])]
    c = d.get("comparison")
    if c:
        lines += [""] + _comparison(c, s)
    lines += ["", "Assumptions:"] + [f"  - {a}" for a in d["assumptions"]]
    confirmed = d["search"]["confirmed_with_network_model"]
    lines += ["", f"{d['candidates_evaluated']:,} layouts screened with the contention-free model "
                  f"({d['search']['pruned_by_bound']:,} pruned by a lower bound)"
                  + (f", {confirmed:,} re-priced with the "
                     f"{d['best'][0]['network_model'] if d['best'] else '-'} model (the best "
                     f"by the ranking's objective; --confirm sets how many shapes per job size)"
                     if confirmed else "") + ". "
                  "'iter s' is the analytic estimate, 'DES s' the discrete-event simulation of "
                  "the same layout"
                  + (" ('-': more schedule steps than a plan simulates)"
                     if any(c.get("des") is None for c in d["best"]) else "")
                  + "; '80% band' the interval the time per iteration falls in "
                  "with 80% odds, from the published (and calibrated) runs in the layout's "
                  "regime ('evid.': how many, and their mean |error|) and the ranges of the "
                  "assumed values ('p90 days' its slow end); MFU counts model FLOPs (no "
                  "recompute) against peak at the training precision; "
                  "TF/node is model TFLOP/s per node; mem is the peak pipeline stage per node "
                  "('tight': over 95% of usable memory)."]
    return "\n".join(lines)


def render_collective(d: dict) -> str:
    bw = d["bandwidth_bytes_per_s"]
    lines = [f"{d['collective']} of {d['bytes']:,.0f} bytes over {d['ranks']:,} ranks "
             f"({d['nodes']:,} nodes x {d['ranks_per_node']})"]
    if "allocation" in d:
        lines += [f"  allocation: {d['allocation']}",
                  f"  placement:  {'; '.join(d['placement'])}"]
    lines.append(f"  time {duration(d['time_s'])} with {d['algorithm']}"
                 + (f" ({rate(bw)} of buffer)" if bw else ""))
    if d["algorithms_s"]:
        lines.append("  every algorithm (us): " + ", ".join(
            f"{k} {v * 1e6:,.2f}" for k, v in d["algorithms_s"].items()))
    lines.append(f"  network model: {d['network_model']}"
                 + (f" (calibration {d['calibration']})" if d.get("calibration") else ""))
    return "\n".join(lines)


def render_collective_each(d: dict) -> str:
    """``collective --nodes A,B,...``: one row per node count."""
    first = d["collectives"][0]
    rows = [[f"{c['nodes']:,}", f"{c['ranks']:,}", c.get("allocation", "-"),
             duration(c["time_s"]), c["algorithm"],
             rate(c["bandwidth_bytes_per_s"]) if c["bandwidth_bytes_per_s"] else "-"]
            for c in d["collectives"]]
    return "\n".join([f"{first['collective']} of {first['bytes']:,.0f} bytes per rank, "
                      f"{first['ranks_per_node']} rank(s) per node, on each node count:",
                      table(rows, ["nodes", "ranks", "allocation", "time", "algorithm",
                                   "buffer rate"]),
                      f"network model: {first['network_model']}"])


def render_topology_each(d: dict) -> str:
    """``topo --nodes A,B,...``: each job described in turn."""
    return "\n\n".join(render_topology(job) for job in d["jobs"])


def render_topology(d: dict) -> str:
    lay = d["layout"]
    lines = [f"job: {d['nodes']:,} nodes, {d['ranks']:,} ranks ({d['ranks_per_node']} per node), "
             f"TP{lay['tp']} PP{lay['pp']} DP{lay['dp']}",
             f"shape: {d['allocation']}; wrap "
             + " ".join(f"{k}:{'ring' if v else 'mesh'}" for k, v in d["wrap"].items()),
             f"diameter {d['diameter_hops']} hops, bisection {d['bisection_links']:,} links",
             f"placement ({d['strategy']}): " + "; ".join(d["placement"]), ""]
    rows = []
    for dim, g in d["dimensions"].items():
        rows.append([dim.upper(), str(g["size"]), f"{g['groups']:,}",
                     " x ".join(f"{a}:{n}" for a, n in g["pieces"]),
                     f"{g['inside_nodes']:,}/{g['ring_step_flows']:,}",
                     f"{g['hops_mean']:.2f}", str(g["hops_max"]), f"{g['links_used']:,}",
                     str(g["max_flows_per_link"])])
    lines.append("One ring step of every group of a dimension at once (rates: max-min fair "
                 "shares of links and injection ports, GB/s min/median/max):")
    for row, g in zip(rows, d["dimensions"].values()):
        r = g["max_min_rate_bytes_per_s"]
        row.append("-" if r is None else f"{r['min'] / 1e9:.2f}/{r['median'] / 1e9:.2f}/"
                                         f"{r['max'] / 1e9:.2f}")
    lines.append(table(rows, ["dim", "size", "groups", "pieces", "in-node flows", "hops mean",
                              "max", "links used", "max flows/link", "rate GB/s"]))
    for dim, g in d["dimensions"].items():
        if g["hottest_links"]:
            lines.append(f"hottest {dim.upper()} links: " + "; ".join(
                f"{'.'.join(f'{k}{v}' for k, v in h['from'].items())} {h['axis']}{h['direction']}"
                f" x{h['flows']}" for h in g["hottest_links"]))
    return "\n".join(lines)


def _noise_words(v: dict) -> str:
    parts = []
    if v.get("jitter"):
        parts.append(f"compute jitter sigma {v['jitter']:g}")
    if v.get("straggler_fraction"):
        parts.append(f"{v['straggler_fraction']:g} of nodes {v['straggler_slowdown']:g}x slower")
    return ", ".join(parts) or "noise"


def _simulation_headline(d: dict) -> list[str]:
    """With noise: the mean and p99 over the runs (or the one sample, said as such) beside
    the noise-free iteration; without: nothing (the iteration line says it)."""
    v = d.get("variability")
    if v is None:
        return []                    # the iteration line that follows is the headline
    base = v["noise_free_s"]
    if v["one_sample"]:
        return [f"with {_noise_words(v)}: one sample (seed {v['seeds'][0]}), not a mean: "
                f"{plain(v['mean_s'])} s ({v['mean_over_noise_free']:+.1%} vs the noise-free "
                f"{plain(base)} s); --runs N gives the mean and p99 over N seeds"]
    p99_note = "" if v["runs"] >= 100 else "; below 100 runs the p99 is the slowest run"
    return [f"with {_noise_words(v)}, over {v['runs']:,} runs (seeds {v['seeds'][0]}-"
            f"{v['seeds'][1]}): mean {plain(v['mean_s'])} s, p99 {plain(v['p99_s'])} s "
            f"({v['mean_over_noise_free']:+.1%} and {v['p99_over_noise_free']:+.1%} vs the "
            f"noise-free {plain(base)} s); min {plain(v['min_s'])} s, max {plain(v['max_s'])} s"
            f"{p99_note}"]


def _sharding_name(lay: dict) -> str:
    """The layout's data-parallel mode as its framework names it (FULL_SHARD,
    HYBRID_SHARD/8, distributed optimizer, ZeRO-1, ...), with its ZeRO stage."""
    from perfmodel.sharding import FAMILIES
    mode = FAMILIES.get(lay.get("sharding", "deepspeed"), {}).get(lay["zero"])
    if mode is None:
        return f"ZeRO-{lay['zero']}"
    name = f"{mode.hybrid}/{lay['shard_ranks']}" if lay.get("shard_ranks") else mode.name
    return name if name.startswith("ZeRO") else f"{name} (ZeRO-{lay['zero']})"


def render_simulation(d: dict) -> str:
    lay = d["layout"]
    an = d["analytic"]
    noisy = "variability" in d
    verdict = d.get("memory_verdict", "fits" if d["memory_fits"] else "does not fit")
    from perfmodel.memory import TIGHT_FRACTION
    memory_note = {"fits": "", "tight": f" (tight: over {TIGHT_FRACTION:.0%} of usable memory)",
                   "does not fit": " (DOES NOT FIT)"}[verdict]
    lines = [f"{d['model']['name']}: TP{lay['tp']} PP{lay['pp']}{_uneven(lay)} DP{lay['dp']} on "
             f"{d['nodes']:,} "
             f"nodes, micro-batch {lay['micro_batch']}, {lay['schedule']}"
             + (f"/{lay['virtual_stages']}" if lay["virtual_stages"] > 1 else "")
             + f", {_sharding_name(lay)}, recompute {lay['recompute']}"
             + (f" on the first {lay['recompute_stages']} stages" if lay["recompute_stages"] else "")
             + (f", layers placed by {lay['partition']}" if lay.get("partition", "even") != "even"
                else ""),
             *_simulation_headline(d),
             f"{'noise-free iteration' if noisy else 'iteration'} {plain(d['iteration_s'])} s "
             f"(analytic estimate {plain(an['iteration_s'])} s), "
             f"{d['tokens_per_s']:,.0f} tokens/s, bubble {d['bubble_fraction']:.1%} of stage time, "
             f"peak memory {d['peak_memory_bytes'] / 1e9:.2f} GB per rank" + memory_note,
             *([f"how sure: {d['band']['summary']}"] if d.get("band") else []),
             f"critical stage {d['critical_stage']}"
             + (" (noise-free)" if noisy else "") + ": " + _breakdown_text(d["breakdown"])
             + " s",
             ""]
    layers = lay.get("stage_layers") or [None] * len(d["stages"])
    parts = [("compute", "compute"), ("recompute", "recompute"), ("tp_comm", "TP"),
             ("ep_comm", "EP"), ("cp_comm", "CP"), ("pp_comm", "PP"), ("dp_comm", "DP"),
             ("optimizer", "optimizer")]
    parts = [(k, name) for k, name in parts
             if k not in RUN_ONLY or any(s["busy_s"].get(k) for s in d["stages"])]
    rows = [[str(s["stage"]), str(layers[s["stage"]]), f"{plain(s['end_s'])}",
             *[f"{plain(s['busy_s'][k])}" for k, _ in parts],
             f"{plain(s['idle_s'])}", f"{s['peak_memory_bytes'] / 1e9:.2f}"] for s in d["stages"]]
    if noisy:
        lines.append("Stages of the noise-free iteration (seconds):")
    lines.append(table(rows, ["stage", "layers", "end s", *[name for _, name in parts],
                              "idle", "peak GB"]))
    runs = d["variability"]["runs"] if noisy else 1
    lines.append(f"{d['events']:,} events per iteration; {1 + runs if noisy else 1} "
                 f"simulation{'s' if noisy else ''} in {d['wall_s'] * 1e3:.0f} ms "
                 f"(network model: {d['network_model']})")
    if d.get("shared_links"):
        lines.append("links shared while streams overlap (speed against alone, topologies/"
                     "sharing.py): " + ", ".join(f"{name} {speed:.2f}x" for name, speed
                                                  in sorted(d["shared_links"].items())))
    if d.get("note"):
        lines.append(d["note"])
    if "trace" in d:
        lines.append(f"trace of {d.get('trace_of', 'the iteration')} written to {d['trace']} "
                     f"(open it in Perfetto or chrome://tracing)")
    return "\n".join(lines)


TAGS = ("[P] peak or nominal, [M] measured, [D] derived from the cited inputs, [F] fitted "
        "(what on, in the source), [A] assumed (no published figure: a parameter)")


def toml_value(v) -> str:
    """A preset value as its TOML file writes it (true, "text", [1, 2], { a = 1 })."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def render_simulation_each(d: dict) -> str:
    """``simulate --nodes A,B,...``: one row per node count, the layout simulated there."""
    sims = d["simulations"]
    noisy = any("variability" in x for x in sims)
    rows = []
    for x in sims:
        lay = x["layout"]
        rows.append([f"{x['nodes']:,}", f"TP{lay['tp']} PP{lay['pp']}{_uneven(lay)} DP{lay['dp']} "
                     f"mb{lay['micro_batch']} {lay['schedule']}"
                     + (f"/{lay['virtual_stages']}" if lay["virtual_stages"] > 1 else ""),
                     plain(x["iteration_s"]), plain(x["analytic"]["iteration_s"]),
                     f"{x['tokens_per_s']:,.0f}", f"{x['bubble_fraction']:.1%}",
                     f"{x['peak_memory_bytes'] / 1e9:.2f}",
                     x.get("memory_verdict", "fits" if x["memory_fits"] else "does not fit")]
                    + ([plain(x["variability"]["mean_s"]), plain(x["variability"]["p99_s"])]
                       if noisy else []))
    header = ["nodes", "layout", "iteration s", "analytic s", "tokens/s", "bubble", "peak GB",
              "memory"] + (["mean s", "p99 s"] if noisy else [])
    shared = {f"{x['nodes']:,} nodes: " + ", ".join(f"{k} {v:.2f}x"
                                                   for k, v in sorted(x["shared_links"].items()))
              for x in sims if x.get("shared_links")}
    return "\n".join([f"{sims[0]['model']['name']}: one iteration simulated on each node count "
                      f"(network model: {sims[0]['network_model']})", table(rows, header)]
                     + ([f"links shared while streams overlap: {'; '.join(sorted(shared))}"]
                        if shared else []))


def render_model_preset(d: dict) -> str:
    """One model preset, a line per field, values as its TOML file writes them."""
    return "\n".join(f"{k:16} {v:,}" if isinstance(v, int) and not isinstance(v, bool)
                     else f"{k:16} {toml_value(v)}" for k, v in d.items())


def render_system_preset(d: dict) -> str:
    """One system preset: every value (as its TOML file writes it) beside its source, the
    table it was read from, its software stacks and what the sources' tags mean."""
    width = max(map(len, d["sources"]), default=0)
    lines = [f"{d['name']}: {d['description']}", f"  (read from {d['origin']})"] + [
        f"  {key:{width}} {toml_value(d['values'].get(key, '')):>18}  {source}"
        for key, source in d["sources"].items()]
    if d.get("stacks"):
        lines.append("  software stacks (--stack NAME):")
        lines += [f"    {st['name']}{' (default)' if st['default'] else ''}: {st['description']}"
                  for st in d["stacks"]]
    lines.append(f"  tags: {TAGS}")
    if d.get("uncertainty"):
        lines.append("  ranges of assumed values (10th-90th percentile; the bands of plan, "
                     "simulate and report carry them):")
        lines += [f"  {u['key']:{width}} {u['low']:g}-{u['high']:g}".ljust(width + 22)
                  + f"  {u['source']}" for u in d["uncertainty"]]
    return "\n".join(lines)


def render_presets(d: dict) -> str:
    """Every model and system preset, and the schedules and precisions the planner knows."""
    lines = ["Models (--model NAME):"]
    lines += [f"  {n:18} {m['params'] / 1e9:8.2f} B  {m['layers']:4} x {m['hidden']:<6} "
              f"heads {m['heads']:<4} vocab {m['vocab']:<6} seq {m['seq']:<5} {m['source']}"
              for n, m in d["models"].items()]
    lines.append("Systems (--system NAME):")
    lines += [f"  {n:18} {desc}" for n, desc in d["systems"].items()]
    lines.append("Pipeline schedules (--schedule NAME):")
    for n, s in d["schedules"].items():
        least = s.get("min_pp_sends_overlapped", s["min_pp"])
        chunks = s.get("chunks")
        notes = [(f"pp >= {s['min_pp']}" if s["min_pp"] > 1 else "")
                 + (f", {least} where the stack overlaps its pipeline sends"
                    if least != s["min_pp"] else "") + (", even" if s.get("even_pp") else ""),
                 (f"{chunks} chunks a stage" if chunks else "--virtual-stages V >= 2")
                 if s["virtual_stages"] else "",
                 "" if s["searched"] else "only when pinned"]
        note = "; ".join(x for x in notes if x)
        lines.append(f"  {n:18} {s['description']}" + (f" ({note})" if note else ""))
    lines.append("Pipeline partitions (--partition NAME; uneven ones where the stack runs them):")
    lines += [f"  {n:27} {p['description']} ({p['source']})"
              for n, p in d.get("partitions", {}).items()]
    lines.append("Data-parallel sharding (a stack's framework; --zero N runs its mode N):")
    lines += [f"  {f:18} " + ", ".join(f"{z}: {name}" for z, name in modes.items())
              for f, modes in d.get("sharding", {}).items()]
    lines.append("Precisions (--precision NAME):")
    lines += [f"  {n:18} {'mixed precision: ' if p['mixed'] else ''}activations in "
              f"{p['activation_bytes']} bytes, model states {p['state_bytes_per_parameter']} "
              f"bytes per parameter" for n, p in d["precisions"].items()]
    return "\n".join(lines)


# ------------------------------------------------------------------ calibration
def render_calibration(d: dict) -> str:
    """What ``calibrate`` wrote: the compute fit, bandwidths, checkpoint write and
    collectives (``d``: the command's JSON summary)."""
    c = d["compute"]
    p = c["parameters"]
    lines = [f"wrote {d['out']}: {c['records']} measurements fitted, status {c['status']} "
             f"({c['message']}), residual norm {plain(c['residual_norm'])}; median error "
             f"{c['median_abs_error']:.1%}, max {c['max_abs_error']:.1%}",
             f"  GEMM {p['gemm_rate'] / 1e9:.1f} GFLOP/s large; half-rate sizes m "
             f"{p['gemm_m0']:.0f}, n {p['gemm_n0']:.0f}, k {p['gemm_k0']:.0f}; overhead "
             f"{p['gemm_overhead_s'] * 1e6:.1f} us per GEMM, {p['kernel_overhead_s'] * 1e6:.1f} "
             f"us per kernel, {p['glue_s'] * 1e6:.1f} us glue per op",
             "  bandwidth GB/s: " + ", ".join(f"{k} {v / 1e9:.2f}"
                                              for k, v in p["bandwidth"].items())]
    storage = d["storage"]
    if storage:
        lines.append(f"  checkpoint write {storage['checkpoint_write_bytes_per_s'] / 1e9:.2f} "
                     f"GB/s ({storage['bytes'] / 2**20:.0f} MiB into {storage['directory']})")
    lines += [f"  {op}: alpha {f['alpha_s'] * 1e6:.2f} us, "
              f"{f['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s ({f['points']} sizes)"
              for op, f in d["collectives"].items()]
    return "\n".join(lines)


def render_validation(d: dict) -> str:
    """Held-out trainer runs against the DES on the calibrated host (``validate
    --calibration``), with the machine's state beside the errors."""
    lines = [f"validation of {d['calibration']} on {d['ranks']} rank(s): DES on the host "
             f"system vs the trainer (fastest of {d['steps_per_case']} steps; the median "
             f"beside it)",
             f"  {'config':26} {'measured ms':>12} {'(median)':>9} {'predicted ms':>13} "
             f"{'error':>8}"]
    lines += [f"  {c['label']:26} {c['measured_s'] * 1e3:12.2f} "
              f"{c['measured_median_s'] * 1e3:9.2f} {c['predicted_s'] * 1e3:13.2f} "
              f"{c['error']:+8.1%}" for c in d["cases"]]
    return "\n".join(lines + _validation_summary(d))


def render_validation_parallel(d: dict) -> str:
    """``validate --parallel``: each TP/PP layout's step measured against the DES, and
    each stage's parts (ms per step, measured / predicted)."""
    lines = [f"validation of {d['calibration']} on {d['ranks']} ranks, model-parallel "
             f"layouts: the trainer (fastest of {d['steps_per_case']} steps) against the DES "
             f"on the host system"]
    for c in d["cases"]:
        lines.append(f"  {c['label']}  {c['layout']}: measured {plain(c['measured_s'] * 1e3)} "
                     f"ms (median {plain(c['measured_median_s'] * 1e3)}), predicted "
                     f"{plain(c['predicted_s'] * 1e3)} ms, {c['error']:+.1%}")
        rows = [[str(st["stage"])] + [f"{plain(st['measured'][p] * 1e3)} / "
                                      f"{plain(st['predicted'][p] * 1e3)}" for p in d["parts"]]
                for st in c["stages"]]
        table_lines = table(rows, ["stage"] + [p if p != "pipeline" else "pipeline (rest)"
                                               for p in d["parts"]]).splitlines()
        lines += ["    " + line for line in table_lines]
    lines.append("  (ms per step, measured / predicted; the pipeline part is the rest of the "
                 "step: transfers between stages and the bubble)")
    return "\n".join(lines + _validation_summary(d))


def _validation_summary(d: dict) -> list[str]:
    """A trainer validation's last lines: its errors, the machine during it (the CPU time
    stolen, and how the calibration's own configurations run now against when calibrated:
    its drift), and why the errors may be the machine's."""
    drift = d.get("drift_since_calibration")
    return [f"  median |error| {d['median_abs_error']:.1%}, max {d['max_abs_error']:.1%}",
            f"  the machine now: {d['cpu_steal_fraction']:.0%} of CPU time stolen by the "
            f"hypervisor" + (f"; the calibration's own configurations run {drift - 1:+.0%} vs "
                             f"when calibrated" if drift else ""),
            *[f"  warning: errors may be the machine's, not the model's: {why}"
              for why in d["likely_contention"]]]


def render_validation_against(d: dict) -> str:
    """Logged runs against the DES (``validate --against``), a row per run."""
    done = [r for r in d["rows"] if r["error"] is not None]

    def layout(r: dict) -> str:
        return r["layout"] + ("*" if r["micro_batch_searched"] else "")

    def width(key: str, header: str, most: int, value=None) -> int:
        return min(most, max([len(header)] + [len(value(r) if value else r[key]) for r in done]))

    # the layout column is as wide as its longest layout: a layout is never cut
    ws, wk, wm, wl = (width("system", "system", 20), width("stack", "stack", 20),
                      width("model", "model", 16), width("", "layout", 10**6, layout))
    fitted = d.get("used_for_fit")
    lines = [f"validation against {d['against']}: DES with the presets and stacks unchanged "
             f"(* micro-batch searched: the log does not give it)"
             + ("; every row here was used to fit the stack's fitted values: a check of the "
                "fit, not predictions" if fitted else ""),
             f"  {'system':{ws}} {'stack':{wk}} {'model':{wm}} {'layout':{wl}} {'measured':>9} "
             f"{'predicted':>10} {'unit':26} {'error':>7} {'80% band of the time':>21}"
             + ("  use" if fitted else "")]
    for r in d["rows"]:
        if r["error"] is None:
            lines.append(f"  {r['row']}: not predicted: {r['why']}")
            continue
        unit = r["unit"] + (f" ({r['flops_convention']})" if r["flops_convention"] else "")
        lines.append(f"  {r['system'][:ws]:{ws}} {r['stack'][:wk]:{wk}} {r['model'][:wm]:{wm}} "
                     f"{layout(r):{wl}} {plain(r['measured']):>9} {plain(r['predicted']):>10} "
                     f"{unit[:26]:26} {r['error']:+7.1%} {_band_cell(r):>21}"
                     + ("  fit" if r.get("used_for_fit") else ""))
    if d["predicted"]:
        lines.append(f"  mean |error| {d['mean_abs_error']:.1%}, max {d['max_abs_error']:.1%}"
                     f" over {d['predicted']} predicted row(s)"
                     + (f"; {len(d['failed'])} not predicted" if d["failed"] else ""))
        lines.append(f"  the measured time fell inside its 80% band for "
                     f"{d['band_coverage']:.0%} of the rows (median band width "
                     f"{d['band_median_width']:.0%}); each row's band comes from the published "
                     f"runs of the other logs only ('*' in the band: no evidence near it, the "
                     f"wide band), so it checks the bands as plan uses them")
    else:
        lines.append("  no row could be predicted")
    return "\n".join(lines)


def _band_cell(r: dict) -> str:
    """``-12% .. +9% in`` (or ``out``): the row's band around its prediction, and whether
    the measured time fell inside."""
    b = r["band"]
    lo, hi = b["iteration_s_low"] / b["iteration_s"] - 1, b["iteration_s_high"] / b["iteration_s"] - 1
    mark = "*" if b["evidence_runs"] < MIN_EVIDENCE else " "
    return f"{lo:+.0%}..{hi:+.0%}{mark} {'in' if r['in_band'] else 'OUT'}"


def render_stack_fit(d: dict) -> str:
    """A stack fitted to logged runs (``fit-stack``): each run's error, the values and the
    preset lines to paste."""
    lines = [f"stack {d['stack']} of {d['system']} fitted on {d['runs']} "
             f"({d['evaluations']} evaluations; {d['message']})",
             f"  {'run':28} {'model':11} {'measured s':>12} {'predicted s':>12} {'error':>7}"]
    lines += [f"  {r['row'][-28:]:28} {r['model'][:11]:11} {plain(r['measured_s']):>12} "
              f"{plain(r['predicted_s']):>12} {r['error']:+7.1%}" for r in d["rows"]]
    lines.append(f"  mean |error| {d['mean_abs_error']:.1%}, max {d['max_abs_error']:.1%}")
    for p, v in d["params"].items():
        bound = (" (on its bound: the runs do not determine it; leave it out or log runs that "
                 "do)" if p in d["at_bound"] else "")
        lines.append(f"  {p} = {plain(v)}{bound}")
    lines += ["preset lines:", d["toml"]]
    return "\n".join(lines)


def render_flows(d: dict) -> str:
    """``fugakuperf flows``: each flow's finish time and the makespan, in the unit that
    reads best for the makespan (--json gives seconds in full)."""
    shape = "x".join(map(str, d["shape"]))
    wrap = ",".join("1" if w else "0" for w in d["wrap"])
    span = d["makespan_s"]
    unit, scale = next(((u, f) for u, f, below in (("us", 1e-6, 1e-3), ("ms", 1e-3, 1.0))
                        if span < below), ("s", 1.0))
    lines = [f"{d['flows']:,} flow(s) on a {shape} torus (wrap {wrap}), links "
             f"{d['link_bandwidth_bytes_per_s'] / 1e9:g} GB/s"
             + (f", injection {d['injection_bandwidth_bytes_per_s'] / 1e9:g} GB/s"
                if d["injection_bandwidth_bytes_per_s"] else "")
             + f": makespan {duration(span)} ({d['solves']:,} max-min solve(s))",
             f"  {'flow':>6} {'hops':>5} {'finish ' + unit:>16}"]
    lines += [f"  {i:6} {h:5} {t / scale:16,.6f}" for i, (h, t) in
              enumerate(zip(d["hops"], d["finish_s"]))][:1000]
    if d["flows"] > 1000:
        lines.append(f"  ... {d['flows'] - 1000:,} more (--json gives every one)")
    lines.append(f"  nodes: {d['numbering']}; routing: {d['routing']}")
    return "\n".join(lines)
