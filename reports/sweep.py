"""What a co-design sweep found (perfmodel.sweep.summary), as text and as one HTML page
with its Pareto fronts and the sensitivity of time to each knob."""

from __future__ import annotations

import math

from .fmt import LABEL, NUM, TEXT, Figure, Para, Section, Stats, Table
from .numbers import big

SHORT = {"fp32_tflops": "fp32 TF", "fp16_tflops": "fp16 TF", "bf16_tflops": "bf16 TF",
         "memory_gib": "GiB", "memory_bandwidth_gbs": "mem GB/s",
         "link_bandwidth_gbs": "link GB/s", "injection_bandwidth_gbs": "inj GB/s",
         "torus": "torus", "power_w": "W", "nodes": "nodes",
         "price_per_node_hour": "price/node-hour"}
FRONT_ROWS = 12            # rows of a Pareto front printed as text


def _g(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def hardware_text(hw: dict) -> str:
    return ", ".join(f"{SHORT.get(k, k)} {_g(v)}" for k, v in hw.items())


def _days(r: dict) -> str:
    return f"{r['days']:.3g} ({r['days_low']:.3g}-{r['days_high']:.3g})"


def _cost(x: float, d: dict) -> str:
    return f"{big(x)} {d['cost']['currency']}"


def _line(name: str, r: dict | None, d: dict) -> str:
    if r is None:
        return f"  {name:<17} none"
    return (f"  {name:<17} point {r['point']}: {_days(r)} days, {r['nodes']:,} nodes, "
            f"{r['layout']}, cost {_cost(r['cost'], d)}, {r['power_mw']:.3g} MW, MFU "
            f"{100 * r['mfu']:.0f}%\n{'':<20}{hardware_text(r['hardware'])}")


def _front_rows(rows: list[dict], x: str) -> list[list[str]]:
    return [[f"{r['point']}", _days(r), big(r[x]) if x == "cost" else f"{r[x]:.3g}",
             f"{r['nodes']:,}", r["layout"], hardware_text(r["hardware"])] for r in rows]


def _table(rows, header) -> str:
    from .text import table
    return table(rows, header)


def render_sweep_text(d: dict) -> str:
    ranked = {"model": "the model's time", "median": "the band's median",
              "p90": "the band's slow end (p90)"}[d["objective"]]
    out = [f"sweep {d['sweep']}: {d['done']:,} of {d['points']:,} hardware points on "
           f"{d['system']} ({d['design']}); each model's best layout per point, ranked by "
           f"{ranked}; results in {d.get('results_file', '')}"]
    for k in d["knobs"]:
        values = k["values"]
        shown = (", ".join(map(_g, values)) if len(values) <= 6
                 else f"{_g(values[0])} .. {_g(values[-1])} ({len(values)} values)")
        out.append(f"  {k['name']}: {shown} {k['unit']} (base {_g(k['base'])})")
    c = d["cost"]
    shares = ", ".join(f"{p} {s:g}" for p, s in c["shares"].items()) or "none"
    out.append(f"  cost: node-hours x {c['node_hour_price']:g} {c['currency']} x the point's "
               f"price factor (node-price shares that scale: {shares})"
               + (f" + energy x {c['energy_price_per_mwh']:g} per MWh"
                  if c["energy_price_per_mwh"] else "") + f"; {c['source']}")
    if d["constraints"]:
        out.append("  constraints: " + ", ".join(f"{k} <= {v:g}"
                                                 for k, v in d["constraints"].items())
                   + f" (days on {ranked}); the smallest machine that meets them: the fewest "
                     f"base-node equivalents, node budget x node price factor")
    for m in d["models"]:
        out.append("")
        out.append(f"model {m['model']} ({m['params'] / 1e9:.3g}B parameters, "
                   f"{m['tokens'] / 1e9:.4g}B tokens, {' or '.join(m['precisions'])}): "
                   f"{m['with_layout']:,} of {m['points']:,} points have a layout, "
                   f"{m['meeting']:,} meet the constraints")
        out.append("  days are the model's time to train (its 80% band)")
        out.append(_line("fastest", m["fastest"], d))
        if d["constraints"]:
            out.append(_line("cheapest meeting", m["cheapest_meeting"], d))
            out.append(_line("smallest meeting", m["smallest_meeting"], d))
        for key, x, what in (("pareto_cost", "cost", "cost"), ("pareto_power", "power_mw", "MW")):
            rows = m[key]
            out.append(f"  Pareto front, time against {what} ({len(rows)} point"
                       + ("s" if len(rows) != 1 else "")
                       + (f", the {FRONT_ROWS} fastest shown" if len(rows) > FRONT_ROWS else "")
                       + "):")
            shown = sorted(rows, key=lambda r: r["ranked_days"])[:FRONT_ROWS]
            text = _table(_front_rows(shown, x), ["point", "days", what, "nodes", "layout",
                                                  "hardware"])
            out += ["    " + line for line in text.splitlines()]
        if m.get("changes"):
            out.append("  single changes against the base point (machine price: node budget x "
                       "node price factor):")
            text = _table(_changes_rows(m), CHANGES_HEADER)
            out += ["    " + line for line in text.splitlines()]
        sens = {k: v for k, v in m["sensitivity"].items() if len(v) > 1}
        if sens:
            out.append("  sensitivity: time at each value over time at the reference value "
                       "(geometric mean over the other knobs' points):")
            refs = {k["name"]: k["reference"] for k in d["knobs"]}
            for name, series in sens.items():
                cells = "  ".join(f"{_g(s['value'])}: {s['time_ratio']:.3g}" for s in series)
                out.append(f"    {name} (ref {_g(refs[name])}): {cells}")
    return "\n".join(out)


# --- the page ---------------------------------------------------------------------------


def _pareto_png(m: dict, d: dict) -> bytes:
    """Time to train against cost and against power: every point with a layout in grey,
    the Pareto front in blue with its 80% band shaded, the days constraint dashed. Days
    on a log scale: the bands run to several times the prediction where no published
    run is near."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from .plots import LABEL_SIZE, TICK_SIZE, _figure, _png
    fig = _figure()
    axes = fig.subplots(1, 2, sharey=True)
    points = m.get("all_points") or []
    limit = d["constraints"].get("days")
    for ax, key, x, label in ((axes[0], "pareto_cost", "cost", f"cost ({d['cost']['currency']})"),
                              (axes[1], "pareto_power", "power_mw", "job power (MW)")):
        if points:
            col = 0 if x == "cost" else 1
            ax.scatter([p[col] for p in points], [p[2] for p in points], s=4,
                       color="#c4c9d0", label="every point", zorder=1)
        front = sorted(m[key], key=lambda r: r[x])
        xs = [r[x] for r in front]
        ax.fill_between(xs, [r["days_low"] for r in front], [r["days_high"] for r in front],
                        color="#0b5cad", alpha=0.15, step=None, label="front's 80% band",
                        zorder=2)
        ax.plot(xs, [r["days"] for r in front], "o-", color="#0b5cad", markersize=3.5,
                linewidth=1.2, label="Pareto front", zorder=3)
        if limit is not None:
            ax.axhline(limit, color="#E76F51", linestyle="--", linewidth=1,
                       label=f"{limit:g} days", zorder=2)
        ax.set_xlabel(label, fontsize=LABEL_SIZE)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))   # 2 and 5 of a decade
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: big(v)))
        ax.tick_params(labelsize=TICK_SIZE)
        ax.grid(True, alpha=0.3, which="both")
    axes[0].set_ylabel("days to train", fontsize=LABEL_SIZE)
    axes[0].legend(fontsize=TICK_SIZE - 1)
    fig.suptitle(f"{m['model']}: time to train against cost and power", fontsize=10)
    return _png(fig)


def _minor_label(v: float, _) -> str:
    """A log axis's minor tick labelled at 2 and 5 of its decade only (each labelled,
    they crowd the decade's top)."""
    if v <= 0:
        return ""
    lead = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def _sensitivity_png(m: dict, knobs: list[dict]) -> bytes | None:
    from .plots import LABEL_SIZE, TICK_SIZE, _figure, _png
    series = {k: v for k, v in m["sensitivity"].items() if len(v) > 1}
    numeric = {k: v for k, v in series.items()
               if all(isinstance(s["value"], (int, float)) for s in v)}
    if not numeric:
        return None
    refs = {k["name"]: k["reference"] for k in knobs}
    fig = _figure()
    ax = fig.subplots()
    for name, points in numeric.items():
        ref = refs[name]
        ax.plot([s["value"] / ref for s in points], [s["time_ratio"] for s in points],
                "o-", markersize=3.5, linewidth=1.2, label=name)
    ax.axhline(1.0, color="#555555", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("value / reference value", fontsize=LABEL_SIZE)
    ax.set_ylabel("time to train / time at the reference", fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=TICK_SIZE)
    ax.set_title(f"{m['model']}: sensitivity of time to each knob", fontsize=10)
    return _png(fig)


def _best_table(m: dict, d: dict) -> Table:
    rows = []
    for name, key in (("fastest", "fastest"), ("cheapest meeting", "cheapest_meeting"),
                      ("smallest meeting", "smallest_meeting")):
        r = m[key]
        if r is None:
            rows.append((name, "none", "", "", "", "", "", ""))
            continue
        rows.append((name, str(r["point"]), _days(r), big(r["cost"]), f"{r['power_mw']:.3g}",
                     f"{r['nodes']:,}", r["layout"], hardware_text(r["hardware"])))
    return Table(("", "point", "days (80% band)", f"cost ({d['cost']['currency']})", "MW",
                  "nodes", "layout", "hardware"),
                 (LABEL, NUM, NUM, NUM, NUM, NUM, LABEL, TEXT), tuple(rows),
                 caption=f"{m['model']}: {m['meeting']:,} of {m['with_layout']:,} points "
                         f"meet the constraints")


def _front_table(rows: list[dict], x: str, what: str) -> Table:
    shown = sorted(rows, key=lambda r: r["ranked_days"])
    return Table(("point", "days (80% band)", what, "nodes", "layout", "hardware"),
                 (NUM, NUM, NUM, NUM, LABEL, TEXT),
                 tuple(tuple(r) for r in _front_rows(shown, x)),
                 caption=f"Pareto front, time against {what}: {len(rows)} point"
                         + ("s" if len(rows) != 1 else ""))


def _changes_rows(m: dict) -> list[list[str]]:
    return [[c["knob"], f"{_g(c['base'])} -> {_g(c['value'])}", f"{c['ranked_days']:.3g}",
             f"{-c['saved_days']:+.3g}" if abs(c["saved_days"]) >= 5e-4 else "0",
             f"{100 * c['price_increase']:+.1f}%",
             "" if c["days_per_price_pct"] is None else f"{c['days_per_price_pct']:.3g}",
             c["layout"]] for c in m["changes"]]


CHANGES_HEADER = ["knob", "change", "days", "change in days", "machine price",
                  "days saved per 1%", "layout"]


def _changes_table(m: dict) -> Table:
    return Table(tuple(CHANGES_HEADER), (LABEL, LABEL, NUM, NUM, NUM, NUM, LABEL),
                 tuple(tuple(r) for r in _changes_rows(m)),
                 caption=f"{m['model']}: each change alone against the base point, most days "
                         f"saved per 1% of machine price (node budget x node price factor) "
                         f"first")


def sweep_sections(d: dict) -> tuple[list[Section], dict[str, bytes]]:
    images: dict[str, bytes] = {}
    secs = []
    ranked = {"model": "the model's own time", "median": "the band's median",
              "p90": "the slow end of its 80% band"}[d["objective"]]
    intro = [Stats((("hardware points", f"{d['done']:,} of {d['points']:,}"),
                    ("base system", d["system"]), ("design", d["design"]),
                    ("models", str(len(d["models"]))))),
             Para(f"Each point is {d['system']} with the point's values; the planner's search "
                  f"finds each model's best layout there, ranked by {ranked}, priced by "
                  f"{'the contention-free network model' if d['network'] == 'analytic' else 'the system network model on its shortlist'}. "
                  f"Days are the model's time to train with its 80% band.")]
    if d["constraints"]:
        intro.append(Para("Constraints: " + ", ".join(f"{k} at most {v:g}"
                                                      for k, v in d["constraints"].items())
                          + f" (days on {ranked}). The smallest machine that meets them has "
                            f"the fewest base-node equivalents: node budget x node price "
                            f"factor."))
    secs.append(Section("summary", "Summary", tuple(intro) + tuple(
        _best_table(m, d) for m in d["models"])))
    for i, m in enumerate(d["models"]):
        name = f"pareto-{i}.png"
        images[name] = _pareto_png(m, d)
        blocks = [Para(f"{m['params'] / 1e9:.3g}B parameters, {m['tokens'] / 1e9:.4g}B tokens, "
                       f"{' or '.join(m['precisions'])}: {m['with_layout']:,} of "
                       f"{m['points']:,} points have a layout, {m['meeting']:,} meet the "
                       f"constraints."),
                  Figure(name, f"{m['model']}: Pareto fronts (each point: the best layout "
                               f"on that hardware, the front's 80% band shaded)"),
                  _front_table(m["pareto_cost"], "cost", f"cost ({d['cost']['currency']})"),
                  _front_table(m["pareto_power"], "power_mw", "MW")]
        if m.get("changes"):
            blocks.append(_changes_table(m))
        png = _sensitivity_png(m, d["knobs"])
        if png is not None:
            sname = f"sensitivity-{i}.png"
            images[sname] = png
            blocks.append(Figure(sname, f"{m['model']}: time to train at each knob value over "
                                        f"the time at its reference value, geometric mean "
                                        f"over the points that differ in that knob alone"))
        secs.append(Section(f"model-{i}", m["model"], tuple(blocks)))
    knob_rows = tuple((k["name"], k["unit"], ", ".join(map(_g, k["values"][:12]))
                       + (" ..." if len(k["values"]) > 12 else ""), _g(k["base"]),
                       _g(k["reference"]), k["what"]) for k in d["knobs"])
    c = d["cost"]
    secs.append(Section("inputs", "Inputs", (
        Table(("knob", "unit", "values", "base", "reference", "what"),
              (LABEL, LABEL, TEXT, NUM, NUM, TEXT), knob_rows),
        Para(f"Cost: node-hours x {c['node_hour_price']:g} {c['currency']} x the point's "
             f"price factor, 1 + the sum over the scaling parts of share x (value / base - 1) "
             f"(shares: {', '.join(f'{p} {s:g}' for p, s in c['shares'].items()) or 'none'})"
             + (f", plus energy x {c['energy_price_per_mwh']:g} per MWh"
                if c["energy_price_per_mwh"] else "") + f". {c['source']}."),
        Para(f"Sweep file {d['file']}; results {d.get('results_file', '')}."))))
    return secs, images


def render_sweep_html(d: dict) -> str:
    from fpcore import version
    from .html import page
    secs, images = sweep_sections(d)
    return page(f"Co-design sweep: {d['sweep']}", f"fugakuperf {version()}", secs, images)

