"""Predicted against measured, on trainer runs the fit never saw.

Each held-out configuration (other widths, depths, sequence lengths, micro-batches
and accumulation than measure.FIT_CONFIGS) is trained for a few steps on this
machine (under mpiexec: data parallel over the ranks) and simulated by the DES
(perfmodel.des) on the ``host`` system of the calibration; the error is
``predicted / measured - 1`` of the fastest step, as calibration measures (measure.py
says why; the median is reported beside it). The configurations are stepped in turn.

A large error on a busy machine says more about the machine than the model, so the
result says when its errors are likely due to contention (``likely_contention``): the
machine was contended during validation or during calibration, the calibration's own
configurations now run at another speed than when calibrated (drift), or the steps'
times spread (thresholds in calibration.contention).
"""

from __future__ import annotations

import statistics

from fpcore.errors import SpecError
from perfmodel.layout import Layout

from .contention import WARN_DRIFT, assess, summary
from .measure import FIT_CONFIGS, label, run_configs, trainer_model

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

    return simulate(trainer_model(cfg), system, trainer_layout(cfg, system, ranks)).iteration_s


def trainer_layout(cfg: dict, system, ranks: int) -> Layout:
    """The layout the trainer ran ``cfg`` in: data parallel over ``ranks``, the reduction
    after the backward, the attention of ``system``'s stack (the host's: the trainer's)."""
    return Layout(tp=1, pp=1, dp=ranks, micro_batch=cfg["micro_batch"],
                  global_batch=cfg["global_batch"] * ranks, overlap_dp=False,
                  attention=system.stack.attention)


def references_from(data: dict) -> list[tuple[dict, float]]:
    """The calibration's own trainer steps (rank 0): configuration and seconds then."""
    return [(m["config"], m["seconds"]) for m in data["measurements"]
            if m["kind"] == "step" and m.get("rank", 0) == 0]


def validate(system, configs=HELD_OUT, steps: int = 3, comm=None, progress=None,
             references=(), threads: int = 1, calibrated: dict | None = None) -> dict:
    """Measured vs predicted on ``configs``. ``references`` (configuration, seconds at
    calibration) are re-measured in the same round robin: their ratio now/then is the
    machine's drift since calibration (a shared machine's speed wanders), reported
    beside the errors and never folded into them. ``threads`` per rank run the steps;
    ``calibrated``: the contention the calibration file recorded, if any."""
    from trainer.host import ContentionMeter, node_ranks

    check_held_out(configs)
    ranks = comm.size if comm is not None else 1
    local = node_ranks(ranks)
    refs = [dict(cfg) for cfg, _ in references]
    cases, drifts = [], []
    meter = ContentionMeter(local)
    runs = run_configs(list(configs) + refs, steps, comm, progress=progress, seed=7)
    window = meter.stop()
    for i, (cfg, run, times) in enumerate(runs):
        measured = min(times)
        if i >= len(configs):
            drifts.append(measured / references[i - len(configs)][1])
            continue
        predicted = predict_config(cfg, system, ranks)
        cases.append({"config": dict(cfg, ranks=ranks), "label": label(cfg),
                      "measured_s": measured, "measured_median_s": statistics.median(times),
                      "predicted_s": predicted, "error": predicted / measured - 1.0})
    errors = [abs(c["error"]) for c in cases]
    drift = statistics.median(drifts) if drifts else None
    spread = statistics.median(c["measured_median_s"] / c["measured_s"] for c in cases)
    now = assess(window, threads, local, spread)
    return {"system": system.name, "calibration": system.calibration, "ranks": ranks,
            "threads": threads, "steps_per_case": steps, "measured": "fastest step",
            "cases": cases, "cpu_steal_fraction": window.steal_fraction or 0.0,
            "drift_since_calibration": drift, "contention": now,
            "calibration_contention": calibrated,
            "likely_contention": contention_suspects(now, calibrated, drift),
            "median_abs_error": statistics.median(errors), "max_abs_error": max(errors)}


def contention_suspects(now: dict, calibrated: dict | None, drift: float | None) -> list[str]:
    """Why the validation's errors are likely the machine's, not the model's (empty:
    no reason to think so)."""
    out = []
    if now["verdict"] in ("noisy", "contended"):
        out.append(f"the machine during validation: {summary(now)}")
    if calibrated and calibrated.get("verdict") in ("noisy", "contended"):
        out.append(f"the machine during calibration: {summary(calibrated)}")
    if drift is not None and abs(drift - 1.0) > WARN_DRIFT:
        out.append(f"the calibration's own configurations run {drift - 1:+.0%} vs when "
                   f"calibrated (more than {WARN_DRIFT:.0%}): the machine is not in the "
                   f"state it was calibrated in")
    return out
