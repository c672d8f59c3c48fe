"""Why one layout is slower or faster than another, in the terms of their fields.

``differences`` names every layout field in which two layouts differ; ``explain``
takes each part of the iteration time (estimator.Breakdown) that differs and says
it in numbers of both layouts, with the fields behind it. Nothing is printed as a
"vs" of equal values: equal values are said once ("in both").
"""

from __future__ import annotations

from .estimator import Estimate
from .layout import Layout


def _schedule_text(lay: Layout) -> str:
    return lay.schedule_spec.describe(lay.virtual_stages)


def _recompute_text(lay: Layout) -> str:
    if lay.recompute == "full" and lay.recompute_stages is not None:
        return f"full on the first {lay.recompute_stages} stages"
    return lay.recompute


# Each layout field: its name and how its value is shown when two layouts differ in it.
FIELD_TEXT = {
    "tp": ("TP", lambda lay: str(lay.tp)),
    "pp": ("PP", lambda lay: str(lay.pp)),
    "dp": ("DP", lambda lay: str(lay.dp)),
    "micro_batch": ("micro-batch", lambda lay: str(lay.micro_batch)),
    "schedule": ("schedule", _schedule_text),
    "zero": ("ZeRO stage", lambda lay: str(lay.zero)),
    "recompute": ("recompute", _recompute_text),
    "sequence_parallel": ("sequence parallelism",
                          lambda lay: "on" if lay.sequence_parallel else "off"),
    "precision": ("precision", lambda lay: lay.precision),
    "attention": ("attention", lambda lay: lay.attention),
    "overlap_dp": ("DP reduction", lambda lay: "overlapping the backward" if lay.overlap_dp
                   else "after the backward"),
    "ep": ("EP", lambda lay: str(lay.ep)),
    "expert_tp": ("experts", lambda lay: "split over TP" if lay.expert_tp
                  else "whole on every TP rank"),
    "cp": ("CP", lambda lay: str(lay.cp)),
    "moe_load": ("expert load", lambda lay: f"{lay.moe_load:g}x the mean"),
}


def differences(a: Layout, b: Layout, fields=tuple(FIELD_TEXT)) -> list[str]:
    """Every field of ``fields`` in which layouts ``a`` and ``b`` differ, as
    "name a's vs b's" (e.g. "ZeRO stage 0 vs 1")."""
    out = []
    for f in fields:
        name, show = FIELD_TEXT[f]
        if show(a) != show(b):
            out.append(f"{name} {show(a)} vs {show(b)}")
    return out


def _vs(x: float, y: float, unit: str = "") -> str:
    """``x vs y`` with enough digits to tell them apart, or one value if they are equal."""
    for digits in range(3, 7):
        fx, fy = f"{x:.{digits}g}{unit}", f"{y:.{digits}g}{unit}"
        if fx != fy:
            return f"{fx} vs {fy}"
    return fx


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("ch") else "s")


def _critical_stage(est: Estimate) -> int | None:
    """The pipeline stage whose compute the breakdown counts (the first of its kind)."""
    m = est.layout.micro_batches
    for i, st in enumerate(est.stages):
        if abs(st.compute * m - est.breakdown.compute) <= 1e-9 * max(est.breakdown.compute, 1e-30):
            return i
    return None


# The layout fields each part of the iteration time depends on directly.
DRIVERS = {
    "compute": ("tp", "pp", "micro_batch", "precision", "sequence_parallel", "expert_tp"),
    "recompute": ("recompute", "tp", "pp", "micro_batch", "precision", "sequence_parallel"),
    "tp_comm": ("tp", "micro_batch", "precision", "sequence_parallel", "pp", "expert_tp"),
    "pp_comm": ("pp", "tp", "micro_batch", "precision", "sequence_parallel"),
    "bubble": ("pp", "schedule", "dp", "micro_batch"),
    "dp_comm": ("dp", "zero", "tp", "pp", "precision", "overlap_dp"),
    "optimizer": ("zero", "dp", "tp", "pp", "precision"),
    "ep_comm": ("ep", "moe_load", "expert_tp", "micro_batch", "precision",
                "sequence_parallel", "tp"),
    "cp_comm": ("cp", "tp", "micro_batch", "precision", "attention"),
    "stage": ("recompute", "tp", "micro_batch", "precision", "sequence_parallel"),
}
TITLES = {"compute": "compute", "recompute": "activation recompute",
          "tp_comm": "tensor-parallel collectives", "pp_comm": "pipeline transfers",
          "bubble": "pipeline bubble", "dp_comm": "exposed data-parallel communication",
          "optimizer": "optimizer step", "ep_comm": "expert-parallel all-to-alls",
          "cp_comm": "context-parallel key/value ring"}


def _because(a: Estimate, b: Estimate, part: str) -> str:
    """The fields behind a difference in ``part``: those it depends on that differ, or,
    if none does, that the same ones hold and what else differs."""
    la, lb = a.layout, b.layout
    direct = differences(la, lb, DRIVERS[part])
    if direct:
        return "; ".join(direct)
    if part == "compute":
        sa, sb = _critical_stage(a), _critical_stage(b)
        if sa is not None and sb is not None and sa != sb:
            return f"the slowest stage is stage {sa} vs stage {sb}"
    same = ", ".join(FIELD_TEXT[f][0] for f in DRIVERS[part])
    other = differences(la, lb)
    return f"the same {same}; it follows from " + "; ".join(other) if other else f"the same {same}"


def _detail(a: Estimate, b: Estimate, part: str) -> str:
    """What differs in ``part`` of the iteration, in numbers of each layout."""
    la, lb = a.layout, b.layout
    ma, mb = la.micro_batches, lb.micro_batches
    xa, xb = a.breakdown.to_dict()[part], b.breakdown.to_dict()[part]
    if part in ("compute", "recompute", "tp_comm", "pp_comm", "ep_comm", "cp_comm"):
        if part == "recompute" and _recompute_text(la) != _recompute_text(lb):
            return f"{TITLES[part]}: {_recompute_text(la)} vs {_recompute_text(lb)}"
        counts = f"{ma} vs {mb} micro-batches" if ma != mb else _plural(ma, "micro-batch")
        return (f"{TITLES[part]}: {counts} x {_vs(xa / ma, xb / mb, ' s')} each "
                f"({_because(a, b, part)})")
    if part == "bubble":
        def shape(lay):
            if lay.pp == 1:
                return "no pipeline"
            v = f" x {lay.virtual_stages} virtual" if lay.virtual_stages > 1 else ""
            return f"{_plural(lay.micro_batches, 'micro-batch')} over {lay.pp} stages{v}"

        def per_micro_batch(est):
            return max(st.forward + st.backward + 2 * st.p2p for st in est.stages)

        work = _vs(per_micro_batch(a), per_micro_batch(b), " s")
        if shape(la) == shape(lb):
            return (f"{TITLES[part]}: {shape(la)} in both, at {work} per micro-batch on the "
                    f"slowest stage ({_because(a, b, 'stage')})")
        return f"{TITLES[part]}: {shape(la)} vs {shape(lb)}, at {work} per micro-batch"
    return f"{TITLES[part]}: {_vs(xa, xb, ' s')} ({_because(a, b, part)})"


def explain(a: Estimate, b: Estimate) -> list[str]:
    """Why ``a`` is slower (or faster) than ``b``: each part of the iteration time that
    differs by 2% of the total or more, largest first ("+" where ``a`` spends more),
    with the numbers of both and the layout fields behind it."""
    if abs(a.iteration_s - b.iteration_s) <= 1e-9 * b.iteration_s:
        return ["it is the best layout the search finds"]
    ba, bb = a.breakdown.to_dict(), b.breakdown.to_dict()
    diffs = sorted(((ba[k] - bb[k], k) for k in ba), reverse=True)
    total = a.iteration_s - b.iteration_s
    out = []
    for d, k in diffs:
        if abs(d) < 0.02 * abs(total) or abs(d) < 1e-6:
            continue
        out.append(f"{'+' if d > 0 else '-'}{abs(d):.2f} s {_detail(a, b, k)}")
    return out
