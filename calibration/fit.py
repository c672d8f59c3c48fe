"""Fit the simulator's compute parameters to measurements (scipy ``least_squares``).

Parameters (named, bounded; see perfmodel.compute.ComputeFit for the model):

    gemm_rate          FLOP/s of a large GEMM            [1e6, 1e16]
    gemm_m0/n0/k0      half-rate sizes of m, n, k        [0, 1024]
    gemm_overhead_s    per GEMM call                      [0, 1e-2]
    bw_<class>         achieved bytes/s per kernel class [1e6, 1e14]
    kernel_overhead_s  per memory-bound kernel call       [0, 1e-2]
    glue_s             per op, between kernels            [0, 1e-2]  (whole steps only)
    gemm_backward_slowdown  backward GEMM time per FLOP vs forward  [0.5, 5]

Residuals are relative errors in log space, ``log(predicted / measured)``, one per
record (a GEMM, a kernel pair, a trainer kernel, a whole trainer step), so a 10 us
kernel and a 10 s step weigh the same. Rates are fitted as logarithms, which keeps
the problem well scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perfmodel.compute import KERNEL_CLASSES, ComputeFit
from fpcore.errors import SpecError
from perfmodel.model import ModelSpec

from .opmap import from_dicts, price, step_seconds

NAMES = (("log_gemm_rate", math.log(1e6), math.log(1e16)),
         ("gemm_m0", 0.0, 1024.0), ("gemm_n0", 0.0, 1024.0), ("gemm_k0", 0.0, 1024.0),
         ("gemm_overhead_s", 0.0, 1e-2),
         *((f"log_bw_{c}", math.log(1e6), math.log(1e14)) for c in KERNEL_CLASSES),
         ("kernel_overhead_s", 0.0, 1e-2), ("glue_s", 0.0, 1e-2),
         ("gemm_backward_slowdown", 0.5, 5.0))
# Whole steps are what validation checks, and kernels timed inside the trainer see its
# caches and threads; microbenchmarks anchor the rates of sizes the trainer did not run.
WEIGHTS = {"step": 3.0, "trainer-kernel": 1.0, "gemm": 0.3, "kernel": 0.3}


@dataclass(frozen=True)
class Prepared:
    """Records turned into what the residual function prices (parsed once)."""

    ops: tuple            # per record: op list, or None for a step
    steps: tuple          # per record: (model, micro_batch, micro_batches, params, comm_s)
    measured: np.ndarray
    weights: np.ndarray


def prepare(measurements: list[dict], network=None) -> Prepared:
    """The records the residuals price, each checked first (schema.check_measurement:
    a zero, negative or non-finite time is refused, naming the record)."""
    from .schema import check_measurement
    ops, steps, measured, weights = [], [], [], []
    for i, m in enumerate(measurements):
        check_measurement(f"measurements[{i}]", m)
        if m["kind"] in ("collective", "checkpoint"):
            continue
        if m["kind"] == "step":
            comm_s = 0.0
            if m.get("ranks", 1) > 1:
                if network is None:
                    continue                 # a multi-rank step needs the collective fit
                from topologies.interface import JobShape
                job = JobShape(tp=1, pp=1, dp=m["ranks"], ranks_per_node=m["ranks"])
                comm_s = network.collective("allreduce", "dp", job, 4.0 * m["params"]).seconds
            steps.append((ModelSpec(**m["model"]), m["config"]["micro_batch"],
                          m["micro_batches"], m["params"], comm_s))
            ops.append(None)
        else:
            ops.append(tuple(from_dicts(m["ops"])))
            steps.append(None)
        weights.append(WEIGHTS.get(m["kind"], 1.0))
        measured.append(m["seconds"])
    if not measured:
        raise SpecError("measurements", "nothing to fit: no GEMM, kernel or step measurements")
    return Prepared(tuple(ops), tuple(steps), np.array(measured), np.array(weights))


def to_fit(x, threads: int = 1, ranks: int = 1, source: str = "") -> ComputeFit:
    v = dict(zip((n for n, _, _ in NAMES), x))
    return ComputeFit(gemm_rate=math.exp(v["log_gemm_rate"]), gemm_m0=v["gemm_m0"],
                      gemm_n0=v["gemm_n0"], gemm_k0=v["gemm_k0"],
                      gemm_overhead_s=v["gemm_overhead_s"],
                      bandwidth=tuple((c, math.exp(v[f"log_bw_{c}"])) for c in KERNEL_CLASSES),
                      kernel_overhead_s=v["kernel_overhead_s"], glue_s=v["glue_s"],
                      gemm_backward_slowdown=v["gemm_backward_slowdown"],
                      threads=threads,
                      ranks_per_node=ranks, source=source)


def predict(fit: ComputeFit, data: Prepared) -> np.ndarray:
    out = np.empty(len(data.measured))
    for i, (ops, step) in enumerate(zip(data.ops, data.steps)):
        if ops is not None:                  # a timed kernel: no glue around it
            out[i] = price(fit, ops) - fit.glue_s * len(ops)
        else:
            model, mb, n_micro, params, comm_s = step
            out[i] = step_seconds(fit, model, mb, n_micro, params) + comm_s
    return out


def residuals(x, data: Prepared) -> np.ndarray:
    """Weighted log(predicted / measured) per record: a pure function of x and data."""
    return data.weights * np.log(predict(to_fit(x), data) / data.measured)


def initial_guess(data: Prepared) -> np.ndarray:
    """Start from the best GEMM rate seen and 10 GB/s for every kernel class."""
    best = 1e9
    for ops, t in zip(data.ops, data.measured):
        if ops and len(ops) == 1 and ops[0].kind == "gemm":
            best = max(best, ops[0].flops / t)
    x0 = [math.log(best), 16.0, 16.0, 16.0, 1e-6, *[math.log(1e10)] * len(KERNEL_CLASSES), 1e-6,
          1e-6, 1.0]
    return np.array(x0)


def fit_compute(measurements: list[dict], threads: int = 1, ranks: int = 1, network=None,
                source: str = "") -> tuple[ComputeFit, dict]:
    """The fitted ComputeFit and a summary (status, residual norm, per-parameter values)."""
    from scipy.optimize import least_squares

    data = prepare(measurements, network)
    lo = np.array([b for _, b, _ in NAMES])
    hi = np.array([b for _, _, b in NAMES])
    x0 = np.clip(initial_guess(data), lo, hi)
    result = least_squares(residuals, x0, bounds=(lo, hi), args=(data,), x_scale="jac",
                           method="trf")
    fit = to_fit(result.x, threads, ranks, source)
    errors = predict(fit, data) / data.measured - 1.0
    summary = {
        "status": int(result.status), "message": result.message, "success": bool(result.success),
        "residual_norm": float(np.linalg.norm(result.fun)), "records": int(len(data.measured)),
        "median_abs_error": float(np.median(np.abs(errors))),
        "max_abs_error": float(np.max(np.abs(errors))),
        "parameters": fit_to_dict(fit),
    }
    return fit, summary


def fit_to_dict(fit: ComputeFit) -> dict:
    return {"gemm_rate": fit.gemm_rate, "gemm_m0": fit.gemm_m0, "gemm_n0": fit.gemm_n0,
            "gemm_k0": fit.gemm_k0, "gemm_overhead_s": fit.gemm_overhead_s,
            "bandwidth": dict(fit.bandwidth), "kernel_overhead_s": fit.kernel_overhead_s,
            "glue_s": fit.glue_s, "gemm_backward_slowdown": fit.gemm_backward_slowdown,
            "threads": fit.threads, "ranks_per_node": fit.ranks_per_node}


def parameter_bounds() -> dict:
    """Each stored parameter's (lower, upper) bound: the fit's own (NAMES), rates back
    from their logarithms."""
    out = {}
    for name, lo, hi in NAMES:
        if name.startswith("log_"):
            name, lo, hi = name[4:], math.exp(lo), math.exp(hi)
        out[name] = (lo, hi)
    return out


def check_parameters(d, where: str = "parameters") -> dict:
    """The stored fit (``fit_to_dict``'s format): every value a finite number within the
    bounds the fit searched (a relative 1e-9 of slack for the round trip through
    logarithms), threads and ranks positive integers. A SpecError names the key."""
    from fpcore.errors import check_float, check_int, check_table, require
    check_table(where, d)
    bounds = parameter_bounds()
    require(where, d, ("gemm_rate", "gemm_m0", "gemm_n0", "gemm_k0", "gemm_overhead_s",
                       "bandwidth", "kernel_overhead_s"))
    values = {}
    for name, (lo, hi) in bounds.items():
        if name.startswith("bw_"):
            continue
        if name not in d:                  # glue_s and gemm_backward_slowdown came later
            continue
        values[name] = check_float(f"{where}.{name}", d[name], lo=lo * (1 - 1e-9),
                                   lo_open=False, hi=hi * (1 + 1e-9))
    bw = check_table(f"{where}.bandwidth", d["bandwidth"])
    unknown = sorted(map(str, set(bw) - set(KERNEL_CLASSES)))
    if unknown:
        raise SpecError(f"{where}.bandwidth.{unknown[0]}",
                        f"unknown kernel class; known: {', '.join(KERNEL_CLASSES)}")
    require(f"{where}.bandwidth", bw, KERNEL_CLASSES)
    for c in KERNEL_CLASSES:
        lo, hi = bounds[f"bw_{c}"]
        check_float(f"{where}.bandwidth.{c}", bw[c], lo=lo * (1 - 1e-9), lo_open=False,
                    hi=hi * (1 + 1e-9), unit="bytes/s")
    for key in ("threads", "ranks_per_node"):
        if key in d:
            check_int(f"{where}.{key}", d[key], hi=10**6)
    return d


def fit_from_dict(d: dict, source: str = "") -> ComputeFit:
    """The ComputeFit a stored fit describes; a damaged one is a SpecError naming
    ``source`` and the key."""
    try:
        check_parameters(d)
    except SpecError as e:
        raise SpecError("calibration", f"{source or 'file'}: damaged compute fit "
                                       f"({e.field}: {e.message})") from None
    return ComputeFit(gemm_rate=float(d["gemm_rate"]), gemm_m0=float(d["gemm_m0"]),
                      gemm_n0=float(d["gemm_n0"]), gemm_k0=float(d["gemm_k0"]),
                      gemm_overhead_s=float(d["gemm_overhead_s"]),
                      bandwidth=tuple((c, float(d["bandwidth"][c])) for c in KERNEL_CLASSES),
                      kernel_overhead_s=float(d["kernel_overhead_s"]),
                      glue_s=float(d.get("glue_s", 0.0)),
                      gemm_backward_slowdown=float(d.get("gemm_backward_slowdown", 1.0)),
                      threads=int(d.get("threads", 1)),
                      ranks_per_node=int(d.get("ranks_per_node", 1)), source=source)
