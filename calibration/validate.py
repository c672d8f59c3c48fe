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


def trainer_layout(cfg: dict, system, ranks: int, tp: int = 1, pp: int = 1) -> Layout:
    """The layout the trainer ran ``cfg`` in on ``ranks``: ``tp`` x ``pp`` (1F1B), data
    parallel over the rest (``cfg``'s global batch per replica), the reduction after the
    backward, the attention of ``system``'s stack (the host's: the trainer's)."""
    dp = ranks // (tp * pp)
    return Layout(tp=tp, pp=pp, dp=dp, micro_batch=cfg["micro_batch"],
                  global_batch=cfg["global_batch"] * dp, overlap_dp=False,
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


# ------------------------------------------------------------- model-parallel layouts
# The layouts a validation under ``mpiexec -n R`` runs: (tp, pp), the other ranks data
# parallel; and configurations held out of the fit that every one of them can split
# (heads and layers even) with several micro-batches per step, so the pipeline fills.
PARALLEL_LAYOUTS = {2: ((2, 1), (1, 2)), 4: ((2, 1), (1, 2), (2, 2))}
PARALLEL_CONFIGS = (
    dict(layers=4, hidden=128, heads=4, seq=128, micro_batch=1, global_batch=4),
    dict(layers=2, hidden=256, heads=4, seq=128, micro_batch=2, global_batch=4),
)
# The trainer's timers by what a stage spends the time on (the rest of a step is the
# pipeline: its transfers and the waiting for the other stages, the bubble)
COMMUNICATION = {"tp_allreduce": "tp", "allreduce": "dp", "embedding_allreduce": "dp",
                 "pp_recv": None}
OPTIMIZER = ("zero_grad", "grad_norm", "adamw")
PARTS = ("compute", "tp", "dp", "optimizer", "pipeline")


def _measured_parts(kernels: list[dict], steps: int, step_s: float) -> dict:
    """A rank's seconds per step by part, from its timers over ``steps`` steps of mean
    ``step_s``: the pipeline part is the rest (receives, sends, waiting)."""
    out = dict.fromkeys(PARTS, 0.0)
    for k in kernels:
        part = "optimizer" if k["kernel"] in OPTIMIZER else \
            COMMUNICATION.get(k["kernel"], "compute")
        if part is not None:
            out[part] += k["seconds"] / steps
    out["pipeline"] = max(0.0, step_s - sum(out[p] for p in PARTS if p != "pipeline"))
    return out


def _predicted_parts(stage, iteration_s: float) -> dict:
    """A simulated stage's seconds by the same parts: the pipeline part is the rest of the
    iteration (its sends and the bubble, the waiting at the end included)."""
    busy = stage.busy_s
    out = {"compute": busy["compute"] + busy["recompute"], "tp": busy["tp_comm"],
           "dp": busy["dp_comm"], "optimizer": busy["optimizer"]}
    out["pipeline"] = iteration_s - sum(out.values())
    return out


def validate_parallel(system, comm, configs=PARALLEL_CONFIGS, steps: int = 3, progress=None,
                      threads: int = 1, references=(),
                      calibrated: dict | None = None) -> dict | None:
    """Tensor- and pipeline-parallel runs of the trainer under mpiexec against the DES of
    the same layouts on the calibrated ``host`` system, stage by stage: each stage's
    compute, TP all-reduces, DP reduction, optimizer and the rest of the step (the
    pipeline's transfers and bubble), measured on the stage's first rank of the first
    replica; the error of the whole step is the fastest step's, as ``validate``'s (of
    the slowest rank).
    ``references`` (the calibration's own configurations, data parallel over the ranks,
    and their seconds then) are re-measured in the same round robin: the machine's drift
    since calibration, as ``validate`` reports it. Every rank runs it; rank 0 gets the
    result (the others None)."""
    from perfmodel.des import simulate
    from trainer.host import ContentionMeter, node_ranks

    check_held_out(configs)
    ranks = comm.size
    if ranks not in PARALLEL_LAYOUTS:
        counts = " or ".join(map(str, PARALLEL_LAYOUTS))
        raise SpecError("parallel", f"runs under mpiexec -n {counts} (its layouts: TP2, PP2 "
                                    f"and, on 4, TP2 x PP2); got {ranks} rank(s)")
    cases = [(cfg, layout) for layout in PARALLEL_LAYOUTS[ranks] for cfg in configs]
    refs = [(dict(cfg), (1, 1)) for cfg, _ in references]
    meter = ContentionMeter(node_ranks(ranks))
    runs = run_configs([cfg for cfg, _ in cases + refs], steps, comm, timed=True,
                       progress=progress, seed=11, layouts=[lay for _, lay in cases + refs])
    window = meter.stop()
    drift = statistics.median(min(times) / then for (_, _, times), (_, then)
                              in zip(runs[len(cases):], references)) if references else None
    runs = runs[:len(cases)]
    mine = []
    for _, run, times in runs:
        mine.append({"tp_rank": run.tp_rank, "dp_rank": run.dp_rank, "stage": run.pp_rank,
                     "parts": _measured_parts(run.timers.records(), len(times),
                                              statistics.mean(times)),
                     "fastest_s": min(times), "median_s": statistics.median(times)})
    every = comm.allgather(mine)
    if comm.rank != 0:
        return None
    out = []
    for i, (cfg, (tp, pp)) in enumerate(cases):
        layout = trainer_layout(cfg, system, ranks, tp, pp)
        sim = simulate(trainer_model(cfg), system, layout)
        stages = []
        for rank_cases in every:
            m = rank_cases[i]
            if m["tp_rank"] != 0 or m["dp_rank"] != 0:
                continue
            stages.append({"stage": m["stage"], "measured": m["parts"],
                           "predicted": _predicted_parts(sim.stages[m["stage"]],
                                                         sim.iteration_s)})
        stages.sort(key=lambda s: s["stage"])
        # the ranks step together: a step is the slowest rank's (each rank's fastest)
        measured = max(rank_cases[i]["fastest_s"] for rank_cases in every)
        out.append({"config": dict(cfg, ranks=ranks), "label": label(cfg),
                    "layout": f"TP{tp} PP{pp} DP{layout.dp}", "measured_s": measured,
                    "measured_median_s": statistics.median(
                        rank_cases[i]["median_s"] for rank_cases in every),
                    "predicted_s": sim.iteration_s,
                    "error": sim.iteration_s / measured - 1.0, "stages": stages})
    errors = [abs(c["error"]) for c in out]
    spread = statistics.median(c["measured_median_s"] / c["measured_s"] for c in out)
    now = assess(window, threads, node_ranks(ranks), spread)
    return {"system": system.name, "calibration": system.calibration, "ranks": ranks,
            "threads": threads, "steps_per_case": steps, "cases": out, "parts": list(PARTS),
            "cpu_steal_fraction": window.steal_fraction or 0.0, "contention": now,
            "drift_since_calibration": drift, "calibration_contention": calibrated,
            "likely_contention": contention_suspects(now, calibrated, drift),
            "median_abs_error": statistics.median(errors), "max_abs_error": max(errors)}
