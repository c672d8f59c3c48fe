"""Capacity questions behind a report: the scaling knee, sensitivity, reliability at
scale and the inverse question (the largest model for a node count and a deadline)."""

from __future__ import annotations

import dataclasses
import math

from fpcore.errors import SpecError, check_float, check_int

from .model import ModelSpec
from .plan import PlanResult, check_tokens, plan
from .sizing import MAX_PARAMS, MIN_PARAMS, model_for_params
from .system import SystemSpec

KNEE_EFFICIENCY = 0.5   # a stated convention (half), not a fact: the rule below names it
KNEE_RULE = ("the marginal efficiency of a step up in job size is the tokens/s each added node "
             "brings over the tokens/s per node before the step, ((t1 - t0) / (n1 - n0)) / "
             f"(t0 / n0); the knee is the job size before the first step whose marginal "
             f"efficiency is below {KNEE_EFFICIENCY:.0%}: past it, an added node brings less "
             f"than {KNEE_EFFICIENCY:.0%} of what a node already delivers")


def marginal_efficiency(n0: float, t0: float, n1: float, t1: float) -> float | None:
    """Tokens/s per added node over tokens/s per node before the step (1: linear; 0: the
    added nodes bring nothing; negative: the bigger job is slower); None when the node
    count does not grow or there is no throughput to compare with."""
    if n1 <= n0 or t0 <= 0:
        return None
    return ((t1 - t0) / (n1 - n0)) / (t0 / n0)


def scaling_steps(points: list[tuple[int, float]]) -> list[float | None]:
    """The marginal efficiency of each (nodes, tokens/s) point over the one before it, in
    the order given (None for the first and where the node count does not grow)."""
    out: list[float | None] = [None] * len(points)
    for i in range(1, len(points)):
        (n0, t0), (n1, t1) = points[i - 1], points[i]
        out[i] = marginal_efficiency(n0, t0, n1, t1)
    return out


def knee(points: list[tuple[int, float]]) -> int | None:
    """The node count past which adding nodes stops paying (KNEE_RULE), from
    (nodes, tokens/s) points in any order; None when every step keeps its marginal
    efficiency at KNEE_EFFICIENCY or more (the curve has no knee in the range)."""
    points = sorted(points)
    for (n0, t0), (n1, t1) in zip(points, points[1:]):
        eff = marginal_efficiency(n0, t0, n1, t1)
        if eff is not None and eff < KNEE_EFFICIENCY:
            return n0
    return None


def sensitivity(model: ModelSpec, system: SystemSpec, base: PlanResult) -> list[dict]:
    """How the best time to train moves with one change at a time (the same node counts,
    or budget, the same pins and objective as the base plan)."""
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
    if system.node.supports("fp16") and base.best[0].layout.precision == "fp32":
        variants.append(("FP16 compute", "mixed precision (fp16 compute, fp32 master weights)",
                         system, {"precision": "fp16"}, gb))
    for c in clocks:
        variants.append((f"{c:g} GHz", f"clock {c:g} GHz instead of "
                                       f"{system.node.clock_hz / 1e9:g}", system.with_options(clock_ghz=c), {}, gb))
    if not system.node.eco_mode and True in system.node.eco_modes:    # (A64FX only)
        variants.append(("eco mode", "one FP pipe: half the FP peak", system.with_options(eco=True), {}, gb))
    for factor in (2, 0.5):
        g = max(1, int(gb * factor))
        variants.append((f"global batch x{factor:g}", f"{g:,} sequences instead of {gb:,}",
                         system, {}, g))
    # compared by what the plans rank by (the objective's time on each best layout's
    # band): the model's own times of layouts chosen by another objective would mix the
    # change with the choice (a slower clock could pick a layout the model thinks faster)
    base_time = objective_time(base)[0]
    out = []
    for name, change, sysv, pins, g in variants:
        try:
            r = plan(model, sysv, global_batch=g, tokens=base.tokens, top=1,
                     pins={**base.pins, **pins}, objective=base.objective, compare=False,
                     **({"nodes": base.node_counts} if base.exact_nodes
                        else {"max_nodes": budget}))
        except SpecError:
            out.append({"name": name, "change": change, "time_to_train_s": None, "delta": None,
                        "layout_label": "no fitting layout"})
            continue
        t = objective_time(r)[0]
        model_t = r.best[0].time_to_train_s(base.tokens)
        band = (r.bands or {}).get(r.best[0].layout)
        out.append({"name": name, "change": change, "time_to_train_s": t,
                    "delta": t / base_time - 1, "layout_label": r.best[0].layout.label(),
                    "objective": base.objective, "base_time_to_train_s": base_time,
                    # the change's 80% band, against the base's time
                    "delta_low": band and band.low_s / band.predicted_s * model_t / base_time - 1,
                    "delta_high": band and band.high_s / band.predicted_s * model_t / base_time
                    - 1})
    return out


# Checkpoint and restart inputs a system preset does not give. Each is a documented
# assumption, tagged as such wherever the report uses it; options replace them.
FS_BANDWIDTH = 1.4e12        # bytes/s: aggregate write bandwidth of the file system
FS_BANDWIDTH_SOURCE = (
    "[assumed] 1.4 TB/s: the bandwidth of Fugaku's second-layer storage (FEFS, 150 PB) is not "
    "published in the sources at hand; 1.4 TB/s is the IOR write rate of the K computer's "
    "job-facing FEFS (vi4io HPSL entry for RIKEN), and Fugaku's file system was built to "
    "exceed the K computer's (Akimoto et al., Fujitsu Technical Review 2020). The whole file "
    "system is assumed to serve this job; FEFS shares servers fairly between users, so a "
    "busy machine gives less")
RELAUNCH_S = 600.0           # s: from a failure to training again, before the checkpoint read
RELAUNCH_SOURCE = (
    "[assumed] 10 minutes: not published for Fugaku; detecting the failure, the scheduler "
    "allocating a job shape without the failed node, and starting the processes and the "
    "framework on every node, taken as minutes at 10^4 nodes")
LINK_BANDWIDTH_NOTE = ("[assumed] a node writes its checkpoint through at most one network "
                       "link (an upper bound: the I/O path behind the link is not published)")


def checkpoint_bytes_total(model: ModelSpec, layout) -> float:
    """One copy of what a restart needs: every weight and optimizer state once (no
    gradients), at the layout's precision (perfmodel.memory.STATE_BYTES)."""
    from .precisions import STATE_BYTES
    weights, _, optimizer = STATE_BYTES[layout.precision]
    return model.params * (weights + optimizer)


def checkpoint_inputs(system: SystemSpec, *, node_bandwidth: float | None = None,
                      fs_bandwidth: float | None = None,
                      relaunch_s: float | None = None) -> dict:
    """The checkpoint write bandwidths and the relaunch time, each with where it comes
    from: given (an option), measured (a calibration's checkpoint write), or the
    documented assumptions above (a node's write limited by one network link)."""
    if node_bandwidth is not None:
        node = (check_float("checkpoint_gbs", node_bandwidth, unit="bytes/s"),
                "given with --checkpoint-gbs")
    elif system.checkpoint_bandwidth:
        node = (system.checkpoint_bandwidth,
                f"measured by `fugakuperf calibrate` (calibration {system.calibration}): a "
                f"checkpoint written and synced on the node")
    else:
        link = system.sources.get("network.link_bandwidth_gbs") or "the system preset"
        node = (system.network.link_bandwidth,
                f"{LINK_BANDWIDTH_NOTE}; link bandwidth from {link}; --checkpoint-gbs or a "
                f"--calibration file made on the node replaces it")
    fs = ((check_float("fs_bandwidth_gbs", fs_bandwidth, unit="bytes/s"),
           "given with --fs-bandwidth-gbs") if fs_bandwidth is not None
          else (FS_BANDWIDTH, FS_BANDWIDTH_SOURCE + "; --fs-bandwidth-gbs replaces it"))
    relaunch = ((check_float("relaunch_minutes", relaunch_s, unit="s"),
                 "given with --relaunch-minutes") if relaunch_s is not None
                else (RELAUNCH_S, RELAUNCH_SOURCE + "; --relaunch-minutes replaces it"))
    return {"checkpoint_bandwidth_per_node": node[0], "checkpoint_source": node[1],
            "fs_bandwidth": fs[0], "fs_bandwidth_source": fs[1],
            "relaunch_s": relaunch[0], "relaunch_source": relaunch[1]}


def reliability(nodes: int, time_to_train_s: float, *, checkpoint_bytes_per_node: float,
                checkpoint_bytes_total: float, node_mtbf_h: float,
                checkpoint_bandwidth_per_node: float, fs_bandwidth: float,
                relaunch_s: float) -> dict:
    """Expected interruptions, the optimal checkpoint interval and the goodput.

    A job on N nodes fails when any node does: job MTBF M = node MTBF / N
    (exponential failures). Every node writes its share at once, so a checkpoint takes
    delta = max(bytes per node / bandwidth per node, total bytes / file-system
    bandwidth): the slower of a node's own path and the file system's aggregate. The
    optimal interval is Daly's first-order tau = sqrt(2 delta M) - delta (Young 1974,
    Daly 2006; tau = M when delta >= M / 2). A restart is the relaunch plus reading the
    checkpoint back (assumed as fast as writing it): R = relaunch + delta. The wasted
    fraction is delta / (tau + delta) (writing) + (tau / 2 + R) / M (lost work and
    restart per failure), and the run takes time_to_train / (1 - waste).
    """
    check_int("nodes", nodes)
    check_float("node_mtbf_hours", node_mtbf_h)
    time_to_train_s = check_float("time_to_train_s", time_to_train_s, unit="s")
    per_node = check_float("checkpoint_bytes_per_node", checkpoint_bytes_per_node, lo=0.0,
                           lo_open=False, unit="bytes")
    total = check_float("checkpoint_bytes_total", checkpoint_bytes_total, lo=0.0,
                        lo_open=False, unit="bytes")
    node_bw = check_float("checkpoint_bandwidth_per_node", checkpoint_bandwidth_per_node,
                          unit="bytes/s")
    fs_bw = check_float("fs_bandwidth", fs_bandwidth, unit="bytes/s")
    relaunch = check_float("relaunch_s", relaunch_s, unit="s")
    m = node_mtbf_h * 3600.0 / nodes
    node_s, fs_s = per_node / node_bw, total / fs_bw
    delta = max(node_s, fs_s)
    restart = relaunch + delta
    tau = math.sqrt(2 * delta * m) - delta if delta < m / 2 else m
    waste = min(0.999, delta / (tau + delta) + (tau / 2 + restart) / m) if tau + delta > 0 \
        else min(0.999, restart / m)
    with_failures = time_to_train_s / (1 - waste)
    return {"node_mtbf_h": node_mtbf_h, "nodes": nodes, "job_mtbf_s": m,
            "checkpoint_bytes_per_node": per_node, "checkpoint_bytes_total": total,
            "checkpoint_bandwidth_per_node": node_bw, "fs_bandwidth": fs_bw,
            "checkpoint_node_s": node_s, "checkpoint_fs_s": fs_s, "checkpoint_s": delta,
            "checkpoint_limit": "file system" if fs_s >= node_s else "per-node bandwidth",
            "relaunch_s": relaunch, "restart_s": restart, "interval_s": tau,
            "goodput": 1 - waste, "time_to_train_s": time_to_train_s,
            "time_with_failures_s": with_failures,
            "expected_interruptions": with_failures / m}


CONFIRM_RANGE = 4.0   # how far below the screened answer the confirmation searches first
CONFIRM_STEPS = 6     # its halvings: a factor 4 ** (1 / 64), 2%
PROBE_ABOVE = (1.05, 1.1, 1.2)   # sizes above the answer tried on the system's own network


def largest_model(system: SystemSpec, nodes: int, days: float, *, tokens: float | None = None,
                  global_batch: int | None = None, steps: int = 10, objective: str = "p90",
                  node_hours: float | None = None, progress=None):
    """The largest model (by the --params rule) that trains on at most ``nodes`` nodes
    within ``days`` (and, if given, ``node_hours``): bisection over the parameter count
    in log space, screened with the contention-free model and confirmed on the
    system's own. A model trains in time when the ``objective`` (evidence.OBJECTIVES:
    by default the slow end of its best layout's 80% band; ``model``, the model's own
    number) of its best layout by that objective does. Tokens: 20 per parameter
    unless given. ``progress(params, network, fits)`` hears of each model tried.
    Returns (model, PlanResult) or None when even the smallest is too slow."""
    check_int("nodes", nodes, hi=system.network.nodes)
    days = check_float("days", days)
    if tokens is not None:
        check_tokens(tokens)
    if node_hours is not None:
        node_hours = check_float("node_hours", node_hours)
    fast = system.with_options(network_model="analytic")

    tried: dict = {}

    def fits(n_params: float, on: SystemSpec):
        model = model_for_params(n_params)
        key = (model.params, on is system)
        if key not in tried:
            tried[key] = _fits(model, on)
        return tried[key]

    def _fits(model, on: SystemSpec):
        try:
            r = plan(model, on, tokens=tokens, max_nodes=nodes, top=1,
                     global_batch=global_batch, objective=objective)
        except SpecError:
            return None
        seconds, hours = objective_time(r)
        ok = seconds <= days * 86400 and (node_hours is None or hours <= node_hours)
        if progress is not None:
            progress(model.params, r.best[0].network, ok)
        return r if ok else None

    def largest(lo: float, hi: float, on: SystemSpec, halvings: int) -> float:
        for _ in range(halvings):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if fits(math.exp(mid), on) is not None else (lo, mid)
        return lo

    if fits(MIN_PARAMS, fast) is None:
        return None
    screened = largest(math.log(MIN_PARAMS), math.log(MAX_PARAMS), fast, steps)
    # the system's own network prices the screened answer; where it is slower, the
    # answer is searched again below it on that network (within a factor CONFIRM_RANGE,
    # or down to the smallest model if even that is too slow there)
    answer = screened
    confirmed = fits(math.exp(screened), system)
    if confirmed is None:
        floor = max(math.log(MIN_PARAMS), screened - math.log(CONFIRM_RANGE))
        if floor > math.log(MIN_PARAMS) and fits(math.exp(floor), system) is None:
            floor = math.log(MIN_PARAMS)
        if fits(math.exp(floor), system) is None:
            return None
        answer = largest(floor, screened, system, CONFIRM_STEPS)
    # the rule's shapes make the time jagged in the size (a head count with few
    # divisors leaves few tensor-parallel splits), so a few larger sizes are tried too
    base = math.exp(answer)
    for factor in PROBE_ABOVE:
        if fits(base * factor, system) is not None:
            answer = math.log(base * factor)
    return model_for_params(math.exp(answer)), fits(math.exp(answer), system)


def objective_time(result) -> tuple[float, float]:
    """(seconds, node-hours) to train by the plan's objective on its best layout's band."""
    best = result.best[0]
    scale = 1.0
    if result.objective != "model":
        band = result.bands[best.layout] if result.bands else None
        scale = band.value(result.objective) / best.iteration_s if band else 1.0
    seconds = best.time_to_train_s(result.tokens) * scale
    return seconds, best.nodes * seconds / 3600.0
