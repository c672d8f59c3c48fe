"""Capacity questions behind a report: the scaling knee, sensitivity, reliability at
scale and the inverse question (the largest model for a node count and a deadline)."""

from __future__ import annotations

import dataclasses
import math

from fpcore.errors import SpecError, check_float, check_int

from .model import ModelSpec
from .plan import PlanResult, plan
from .sizing import MAX_PARAMS, MIN_PARAMS, model_for_params
from .system import SystemSpec

KNEE_EFFICIENCY = 0.5
KNEE_RULE = ("the last job size after which the next size up delivers less than half "
             "of the ideal speed-up (tokens/s ratio / node ratio < 0.5)")


def knee(points: list[tuple[int, float]]) -> int | None:
    """Node count where adding nodes stops paying, from (nodes, tokens/s) by size."""
    points = sorted(points)
    if not points:
        return None
    for (n0, t0), (n1, t1) in zip(points, points[1:]):
        if n1 > n0 and t0 > 0 and (t1 / t0) / (n1 / n0) < KNEE_EFFICIENCY:
            return n0
    return points[-1][0]


def sensitivity(model: ModelSpec, system: SystemSpec, base: PlanResult) -> list[dict]:
    """How the best time to train moves with one change at a time (same node budget)."""
    budget = max(base.node_counts)
    gb = base.global_batch
    net = system.network
    faster = dataclasses.replace(system, network=dataclasses.replace(
        net, link_bandwidth=2 * net.link_bandwidth,
        injection_bandwidth=2 * net.injection_bandwidth))
    clocks = [c / 1e9 for c in system.node.allowed_clocks_hz if abs(c - system.node.clock_hz) > 1e6]
    variants = [("link bandwidth x2", "every link and injection port twice as fast", faster, {}, gb)]
    if system.node.reduce_bandwidth:
        quick = dataclasses.replace(system, node=dataclasses.replace(
            system.node, reduce_bandwidth=2 * system.node.reduce_bandwidth))
        variants.append(("MPI reductions x2", "the collective library reduces twice as fast "
                                              "(two threads per rank instead of one)", quick, {}, gb))
    if system.node.supports("fp16"):
        variants.append(("FP16 compute", "mixed precision (fp16 compute, fp32 master weights)",
                         system, {"precision": "fp16"}, gb))
    for c in clocks:
        variants.append((f"{c:g} GHz", f"clock {c:g} GHz instead of "
                                       f"{system.node.clock_hz / 1e9:g}", system.with_options(clock_ghz=c), {}, gb))
    if not system.node.eco_mode:
        variants.append(("eco mode", "one FP pipe: half the FP peak", system.with_options(eco=True), {}, gb))
    for factor in (2, 0.5):
        g = max(1, int(gb * factor))
        variants.append((f"global batch x{factor:g}", f"{g} sequences instead of {gb}", system, {}, g))
    base_time = base.best[0].time_to_train_s(base.tokens)
    out = []
    for name, change, sysv, pins, g in variants:
        try:
            r = plan(model, sysv, global_batch=g, tokens=base.tokens, max_nodes=budget, top=1,
                     pins=pins)
        except SpecError:
            out.append({"name": name, "change": change, "time_to_train_s": None, "delta": None,
                        "layout_label": "no fitting layout"})
            continue
        t = r.best[0].time_to_train_s(base.tokens)
        out.append({"name": name, "change": change, "time_to_train_s": t,
                    "delta": t / base_time - 1, "layout_label": r.best[0].layout.label()})
    return out


def reliability(nodes: int, time_to_train_s: float, checkpoint_bytes: float, *,
                node_mtbf_h: float, checkpoint_bandwidth: float | None,
                restart_s: float | None = None) -> dict:
    """Expected interruptions, the optimal checkpoint interval and the goodput.

    A job on N nodes fails when any node does: job MTBF M = node MTBF / N
    (exponential failures). Checkpoint time delta = bytes / bandwidth; the optimal
    interval is Daly's first-order tau = sqrt(2 delta M) - delta (Young 1974,
    Daly 2006; tau = M when delta >= M / 2); a restart reads the checkpoint back
    (R = delta unless given). The wasted fraction is delta / (tau + delta)
    (writing) + (tau / 2 + R) / M (lost work and restart per failure), and the run
    takes time_to_train / (1 - waste).
    """
    check_int("nodes", nodes)
    check_float("node_mtbf_hours", node_mtbf_h)
    m = node_mtbf_h * 3600.0 / nodes
    out = {"node_mtbf_h": node_mtbf_h, "nodes": nodes, "job_mtbf_s": m,
           "checkpoint_bytes": checkpoint_bytes, "checkpoint_bandwidth": checkpoint_bandwidth,
           "time_to_train_s": time_to_train_s}
    if checkpoint_bandwidth is None:
        out.update(checkpoint_s=None, restart_s=None, interval_s=None, goodput=None,
                   time_with_failures_s=None,
                   expected_interruptions=time_to_train_s / m)
        return out
    check_float("checkpoint_bandwidth", checkpoint_bandwidth)
    delta = checkpoint_bytes / checkpoint_bandwidth
    restart = delta if restart_s is None else restart_s
    tau = math.sqrt(2 * delta * m) - delta if delta < m / 2 else m
    waste = min(0.999, delta / (tau + delta) + (tau / 2 + restart) / m)
    total = time_to_train_s / (1 - waste)
    out.update(checkpoint_s=delta, restart_s=restart, interval_s=tau, goodput=1 - waste,
               time_with_failures_s=total, expected_interruptions=total / m)
    return out


def largest_model(system: SystemSpec, nodes: int, days: float, *, tokens: float | None = None,
                  global_batch: int | None = None, steps: int = 10):
    """The largest model (by the --params rule) that trains on at most ``nodes`` nodes
    within ``days``: bisection over the parameter count in log space, screened with the
    contention-free model and confirmed on the system's own. Tokens: 20 per parameter
    unless given. Returns (model, PlanResult) or None when even the smallest is too slow."""
    check_int("nodes", nodes, hi=system.network.nodes)
    days = check_float("days", days)
    fast = system.with_options(network_model="analytic")

    def fits(n_params: float):
        model = model_for_params(n_params)
        try:
            r = plan(model, fast, tokens=tokens, max_nodes=nodes, top=1,
                     global_batch=global_batch)
        except SpecError:
            return None
        return r if r.best[0].time_to_train_s(r.tokens) <= days * 86400 else None

    lo, hi = math.log(MIN_PARAMS), math.log(MAX_PARAMS)
    if fits(MIN_PARAMS) is None:
        return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fits(math.exp(mid)) is not None:
            lo = mid
        else:
            hi = mid
    model = model_for_params(math.exp(lo))
    result = plan(model, system, tokens=tokens, max_nodes=nodes, top=1, global_batch=global_batch)
    return model, result
