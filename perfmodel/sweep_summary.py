"""What a co-design sweep found (perfmodel.sweep): per model, the fastest hardware point,
the cheapest and the smallest that meet the constraints, the Pareto fronts of time
against cost and against power, each knob's sensitivity and, for a one-at-a-time
design, each single change's days saved per unit of machine price. Pure functions of
the sweep and its records."""

from __future__ import annotations

import math

from .sweep import KNOBS, Sweep, rounded


def model_rows(records: list[dict], label: str) -> list[dict]:
    """Each point's result for one model, with its hardware and price factor (points
    whose model found no layout left out)."""
    out = []
    for rec in records:
        for m in rec.get("models", ()):
            if m["model"] == label and "error" not in m:
                out.append({**m, "point": rec["point"], "hardware": rec["hardware"],
                            "price_factor": rec.get("price_factor", 1.0)})
    return out


def pareto(rows: list[dict], x: str, y: str = "ranked_days") -> list[dict]:
    """The rows no other row beats on both ``x`` and ``y`` (lower is better), by ``x``."""
    front, best_y = [], math.inf
    for row in sorted(rows, key=lambda r: (r[x], r[y], r["point"])):
        if row[y] < best_y:
            front.append(row)
            best_y = row[y]
    return front


def sensitivity(sweep: Sweep, rows: list[dict]) -> dict[str, list[tuple]]:
    """For each knob: (value, geometric mean of time / time at the knob's reference
    value, pairs) over the points that differ from a reference-valued point in that
    knob alone (``reference_value``)."""
    by_hw = {tuple(sorted(r["hardware"].items())): r["ranked_days"] for r in rows}
    out: dict[str, list[tuple]] = {}
    for name, options in sweep.knobs:
        ref = reference_value(sweep, name)
        values = [ref] + [v for v in options if v != ref]
        if all(isinstance(v, (int, float)) for v in values):
            values.sort()
        series = []
        for v in values:
            logs = []
            for r in rows:
                if r["hardware"].get(name) != ref:
                    continue
                other = tuple(sorted({**r["hardware"], name: v}.items()))
                if other in by_hw:
                    logs.append(math.log(by_hw[other] / r["ranked_days"]))
            if logs:
                series.append((v, math.exp(sum(logs) / len(logs)), len(logs)))
        out[name] = series
    return out


def reference_value(sweep: Sweep, name: str):
    """What a knob's sensitivity is measured against: the base system's value where the
    sweep has points at it (a one-at-a-time design always does; a grid when the knob
    lists it), else the knob's first value."""
    base = sweep.base_values()[name]
    options = dict(sweep.knobs)[name]
    return base if sweep.design == "one-at-a-time" or base in options else options[0]


ROW_KEYS = ("point", "hardware", "price_factor", "nodes", "precision", "layout", "days",
            "days_low", "days_high", "ranked_days", "cost", "power_mw", "energy_mwh", "mfu",
            "memory_gb", "meets")


def _row(r: dict) -> dict:
    return {k: r.get(k) for k in ROW_KEYS}


def changes(sweep: Sweep, rows: list[dict]) -> list[dict]:
    """One-at-a-time: each single change against the base point (point 0), with the
    machine's price (node budget x node price factor) against the base machine's, and
    the days saved per 1% of that price, most first (changes that cost nothing or
    save nothing last)."""
    base = next((r for r in rows if r["point"] == 0), None)
    if base is None:
        return []
    ref = sweep.base_values()

    out = []
    for r in rows:
        if r["point"] == 0:
            continue
        knob = next(k for k, v in r["hardware"].items() if v != ref[k])
        saved = base["ranked_days"] - r["ranked_days"]
        price = machine_size(sweep, r) / machine_size(sweep, base) - 1
        out.append({"point": r["point"], "knob": knob, "value": r["hardware"][knob],
                    "base": ref[knob], "ranked_days": r["ranked_days"],
                    "saved_days": rounded(saved), "saved": rounded(saved / base["ranked_days"]),
                    "price_increase": rounded(price),
                    "days_per_price_pct": rounded(saved / (100 * price)) if price > 0 else None,
                    "layout": r["layout"], "nodes": r["nodes"]})
    out.sort(key=lambda c: (c["days_per_price_pct"] is None, -(c["days_per_price_pct"] or 0),
                            -c["saved_days"], c["point"]))
    return out


def machine_size(sweep: Sweep, row: dict) -> float:
    """A point's machine in base-node equivalents: its node budget (the machine built,
    whatever share of it the best job uses) x its node price factor."""
    return row["hardware"].get("nodes", sweep.budget) * row["price_factor"]


def summary(sweep: Sweep, records: list[dict]) -> dict:
    """What a sweep found, per model: the fastest point, the cheapest and the smallest
    (``machine_size``: node budget x price factor) that meet the constraints, the
    Pareto fronts of time against cost and against power, and each knob's sensitivity."""
    base = sweep.base_values()
    models = []
    for run in sweep.models:
        rows = model_rows(records, run.label)
        meeting = [r for r in rows if r.get("meets")]
        failed = sum(1 for rec in records for m in rec.get("models", ())
                     if m["model"] == run.label and "error" in m)
        entry = {
            "model": run.label, "params": run.model.params, "tokens": run.tokens,
            "precisions": list(run.precisions), "points": len(records),
            "with_layout": len(rows), "no_layout": failed, "meeting": len(meeting),
            "fastest": _row(min(rows, key=lambda r: (r["ranked_days"], r["point"])))
            if rows else None,
            "cheapest_meeting": _row(min(meeting, key=lambda r: (r["cost"], r["point"])))
            if meeting else None,
            "smallest_meeting": _row(min(meeting, key=lambda r: (
                machine_size(sweep, r), r["ranked_days"], r["point"])))
            if meeting else None,
            # every point with a layout, for the figures: (cost, MW, days)
            "all_points": [[r["cost"], r["power_mw"], r["days"]] for r in rows],
            "pareto_cost": [_row(r) for r in pareto(rows, "cost")],
            "pareto_power": [_row(r) for r in pareto(rows, "power_mw")],
            "sensitivity": {k: [{"value": v, "time_ratio": rounded(t), "pairs": n}
                                for v, t, n in series]
                            for k, series in sensitivity(sweep, rows).items()},
        }
        if sweep.design == "one-at-a-time":
            entry["changes"] = changes(sweep, rows)
        models.append(entry)
    return {
        "sweep": sweep.title, "file": sweep.path, "system": sweep.system_name,
        "design": sweep.design, "objective": sweep.objective, "network": sweep.network,
        "points": sweep.points, "done": len(records),
        "knobs": [{"name": k, "unit": KNOBS[k].unit, "what": KNOBS[k].what,
                   "values": list(v), "base": base[k],
                   "reference": reference_value(sweep, k)} for k, v in sweep.knobs],
        "cost": {"node_hour_price": sweep.cost.node_hour_price, "currency": sweep.cost.currency,
                 "shares": dict(sweep.cost.shares),
                 "energy_price_per_mwh": sweep.cost.energy_price_per_mwh,
                 "source": sweep.cost.source},
        "constraints": {k: v for k, v in vars(sweep.constraints).items() if v is not None},
        "models": models,
    }
