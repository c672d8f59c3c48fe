"""Predicted against measured, on trainer runs the fit never saw.

Each held-out configuration (other widths, depths, sequence lengths, micro-batches
and accumulation than measure.FIT_CONFIGS) is trained for a few steps on this
machine (under mpiexec: data parallel over the ranks) and simulated by the DES
(perfmodel.des) on the ``host`` system of the calibration; the error is
``predicted / measured - 1`` of the fastest step, as calibration measures (measure.py
says why; the median is reported beside it). The configurations are stepped in turn.
"""

from __future__ import annotations

import os
import statistics
import time

from fpcore.errors import SpecError
from perfmodel.layout import Layout

from .measure import FIT_CONFIGS, cpu_steal, label, run_configs, trainer_model

HELD_OUT = (
    dict(layers=2, hidden=192, heads=3, seq=128, micro_batch=2, global_batch=2),
    dict(layers=4, hidden=96, heads=3, seq=64, micro_batch=4, global_batch=8),
    dict(layers=1, hidden=384, heads=6, seq=128, micro_batch=1, global_batch=2),
    dict(layers=2, hidden=128, heads=4, seq=256, micro_batch=1, global_batch=1),
    dict(layers=3, hidden=256, heads=4, seq=64, micro_batch=2, global_batch=4),
    dict(layers=1, hidden=512, heads=8, seq=64, micro_batch=2, global_batch=2),
)


def check_held_out(configs) -> None:
    fitted = {tuple(sorted(c.items())) for c in FIT_CONFIGS}
    for c in configs:
        if tuple(sorted(c.items())) in fitted:
            raise SpecError("configs", f"{label(c)} is a configuration the fit used: not held out")


def predict_config(cfg: dict, system, ranks: int = 1) -> float:
    """The DES's iteration time for ``cfg`` on ``system`` (data parallel over ``ranks``)."""
    from perfmodel.des import simulate

    model = trainer_model(cfg)
    layout = Layout(tp=1, pp=1, dp=ranks, micro_batch=cfg["micro_batch"],
                    global_batch=cfg["global_batch"] * ranks, overlap_dp=False)
    return simulate(model, system, layout).iteration_s


def references_from(data: dict) -> list[tuple[dict, float]]:
    """The calibration's own trainer steps (rank 0): configuration and seconds then."""
    return [(m["config"], m["seconds"]) for m in data["measurements"]
            if m["kind"] == "step" and m.get("rank", 0) == 0]


def validate(system, configs=HELD_OUT, steps: int = 3, comm=None, progress=None,
             references=()) -> dict:
    """Measured vs predicted on ``configs``. ``references`` (configuration, seconds at
    calibration) are re-measured in the same round robin: their ratio now/then is the
    machine's drift since calibration (a shared machine's speed wanders), reported
    beside the errors and never folded into them."""
    check_held_out(configs)
    ranks = comm.size if comm is not None else 1
    refs = [dict(cfg) for cfg, _ in references]
    cases, drifts = [], []
    t0, steal0 = time.perf_counter(), cpu_steal()
    runs = run_configs(list(configs) + refs, steps, comm, progress=progress, seed=7)
    for i, (cfg, run, times) in enumerate(runs):
        measured = min(times)
        if i >= len(configs):
            drifts.append(measured / references[i - len(configs)][1])
            continue
        predicted = predict_config(cfg, system, ranks)
        cases.append({"config": dict(cfg, ranks=ranks), "label": label(cfg),
                      "measured_s": measured, "measured_median_s": statistics.median(times),
                      "predicted_s": predicted, "error": predicted / measured - 1.0})
    wall = time.perf_counter() - t0
    errors = [abs(c["error"]) for c in cases]
    drift = statistics.median(drifts) if drifts else None
    return {"system": system.name, "calibration": system.calibration, "ranks": ranks,
            "steps_per_case": steps, "measured": "fastest step", "cases": cases,
            "cpu_steal_fraction": (cpu_steal() - steal0) / (wall * (os.cpu_count() or 1)),
            "drift_since_calibration": drift,
            "median_abs_error": statistics.median(errors), "max_abs_error": max(errors)}
