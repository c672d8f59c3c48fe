"""A software stack's efficiencies fitted to logged runs: ``fugakuperf fit-stack``.

A stack (perfmodel.system.StackSpec) holds what a framework and its libraries
reach on a system. Where no microbenchmark of that stack exists, only whole-run
times (a log in calibration/against.py's schema), its free parameters are fitted
to them here: least squares on log(predicted / measured) over every run, the
parameters searched in log space within physical bounds. Every other value stays
as the preset gives it, and nothing is set per run.

Runs are priced by the analytic estimator, not the DES: a fit evaluates each run
dozens of times, and the two agree exactly without a pipeline and within 2% for
near-uniform pipelines. Each run must give its micro-batch: a fit on a searched
micro-batch would fit the search.

Fit on a stated subset and validate on the rest (``validate --against``): the
shipped ``deepspeedfugaku-2023`` stack of the fugaku preset is fitted on
``runs_fugaku_fit.csv`` and checked on ``runs_fugaku.csv``, which it never saw.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import NamedTuple

from fpcore.errors import SpecError

# parameter -> (lower, upper bound, starting value)
FITTABLE = {
    "kernel_bytes_per_cycle": (1e-3, 1e4, 10.0),
    "collective_efficiency": (1e-3, 1.0, 0.5),
    "gemm_efficiency": (1e-3, 1.0, 0.5),
    "gemm_half_size": (1e-3, 1e5, 64.0),
    "op_overhead_us": (1e-3, 1e4, 10.0),
    "attention_efficiency": (1e-3, 1.0, 0.5),
}
DEFAULT_PARAMS = ("kernel_bytes_per_cycle",)


class Run(NamedTuple):
    """One logged run, ready to price under any values of its stack."""
    where: str               # "runs.csv row 7"
    system: str              # the preset
    clock_ghz: float | None
    model: object            # ModelSpec
    pins: dict               # Layout fields
    measured_s: float        # seconds per iteration
    stack: object            # the StackSpec the preset gives


def _runs(path: str | Path, stack: str) -> list[Run]:
    from .against import number_column, iteration_flops, read_runs, row_inputs
    out = []
    for i, row in enumerate(read_runs(path)):
        where = f"{Path(path).name} row {i + 2}"
        named = (row.get("stack") or "").strip()
        if named and named != stack:
            raise SpecError("stack", f"{where}: ran on stack {named!r}, not {stack!r}; fit one "
                                     f"stack's runs at a time")
        model, system, pins, mb, unit, convention, measured = row_inputs(row, where, stack)
        if mb is None:
            raise SpecError("micro_batch", f"{where}: is empty; a fit needs the micro-batch "
                                           f"each run used")
        pins = dict(pins, micro_batch=mb)
        if unit == "tflops_per_rank":              # back to seconds per iteration
            flops = iteration_flops(model, pins["global_batch"], pins["recompute"], convention)
            measured = flops / (measured * 1e12 * pins["tp"] * pins["pp"] * pins["dp"])
        out.append(Run(where, row["system"].strip(), number_column(row, "clock_ghz", where), model,
                       pins, measured, system.stack))
    return out


def _predict(run: Run, stack) -> float:
    from perfmodel.estimator import estimate
    from perfmodel.inputs import resolve_system
    from perfmodel.layout import Layout
    system = resolve_system(run.system, clock_ghz=run.clock_ghz, stack=stack, allow_files=False)
    layout = Layout(**dict(run.pins, **stack.layout_settings()))
    return estimate(run.model, system, layout).iteration_s


def fit_stack(path: str | Path, stack: str, params=DEFAULT_PARAMS) -> dict:
    """Fit ``params`` of the stack called ``stack`` to every run logged at ``path``."""
    import numpy as np
    from scipy.optimize import least_squares

    params = tuple(dict.fromkeys(params))
    for p in params:
        if p not in FITTABLE:
            raise SpecError("param", f"cannot fit {p!r}; fittable: {', '.join(FITTABLE)}")
    if not params:
        raise SpecError("param", "name at least one parameter to fit")
    runs = _runs(path, stack)
    if len(runs) <= len(params):
        raise SpecError("against", f"{path}: {len(runs)} run(s) cannot fit {len(params)} "
                                   f"parameter(s); log more runs")
    base = runs[0].stack
    if any(r.stack != base for r in runs):
        raise SpecError("system", f"{path}: the runs are on different systems' {stack!r} stacks")
    lo = np.log([FITTABLE[p][0] for p in params])
    hi = np.log([FITTABLE[p][1] for p in params])
    x0 = np.log([FITTABLE[p][2] for p in params])      # from scratch, not the preset's
    calls = [0]

    def stack_at(x):
        return base.replace(**{p: float(math.exp(v)) for p, v in zip(params, x)})

    def residuals(x):
        calls[0] += 1
        s = stack_at(x)
        return [math.log(_predict(r, s) / r.measured_s) for r in runs]

    start = residuals(x0)
    for k, p in enumerate(params):           # one the runs do not depend on: none to fit
        moved = x0.copy()
        moved[k] += math.log(1.5) if x0[k] + math.log(1.5) <= hi[k] else -math.log(1.5)
        if max(abs(a - b) for a, b in zip(residuals(moved), start)) < 1e-9:
            raise SpecError("param", f"{p} changes no prediction of the {len(runs)} runs of "
                                     f"{path} on stack {stack!r} (nothing they run is priced "
                                     f"by it): it cannot be fitted on them")
    result = least_squares(residuals, x0, bounds=(lo, hi), x_scale=1.0, diff_step=1e-3)
    fitted = stack_at(result.x)
    rows = []
    for r, res in zip(runs, result.fun):
        predicted = r.measured_s * math.exp(res)
        rows.append({"row": r.where, "model": r.model.name, "measured_s": r.measured_s,
                     "predicted_s": predicted, "error": predicted / r.measured_s - 1.0})
    errors = [abs(x["error"]) for x in rows]
    values = {p: getattr(fitted, p) for p in params}
    # a value on its bound is not determined by the runs: the data ask for more
    at_bound = [p for p, v, a, b in zip(params, result.x, lo, hi) if min(v - a, b - v) < 1e-6]
    return {"runs": str(path), "system": runs[0].system, "stack": stack, "params": values,
            "at_bound": at_bound, "rows": rows, "mean_abs_error": statistics.fmean(errors),
            "max_abs_error": max(errors), "rms_log_error": float(np.sqrt(np.mean(result.fun ** 2))),
            "evaluations": calls[0], "converged": bool(result.success),
            "message": str(result.message),
            "toml": toml_lines(runs[0].system, stack, values, path, len(runs))}


def toml_lines(system: str, stack: str, values: dict, path, n: int) -> str:
    """The preset lines the fit gives, each with its source."""
    lines = [f"[{system}.stacks.{stack}]"]
    for p, v in values.items():
        lines.append(f'{p} = {{ value = {v:.4g}, source = "[F] fugakuperf fit-stack on the '
                     f'{n} runs of {Path(path).name}" }}')
    return "\n".join(lines)
