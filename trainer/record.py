"""The measurement record of a training run (JSON) and its ``--profile`` table.

Calibration reads this record: the model and run settings, the host, the step times,
and every kernel's calls, seconds, FLOPs and bytes (first step excluded, since it
compiles the Numba kernels): rank 0's under ``kernels``, and every rank's (its kernels,
its communication among them, its step times) under ``ranks``, so a run on many nodes
(on Fugaku or elsewhere) is fed back whole (``fugakuperf calibrate --add-record``).
``determinism`` gives the setup the run computed with and, after a resume, the
checkpoint's, what differs and whether the continuation is expected to be
bit-identical (trainer.determinism).
"""

from __future__ import annotations

import dataclasses
import statistics

from . import determinism
from .host import host_facts

KIND = "fugakuperf-training-measurement"
VERSION = 1


def rank_timings(rank: int, result) -> dict:
    """One rank's part of the record: its kernels' timers (the gradient all-reduce
    among them) and its step times."""
    return {"rank": rank, "step_seconds": [s.seconds for s in result.steps],
            "kernels": result.timers.records() if result.timers is not None else []}


def measurement_record(trainer, result, threads: int, comm, data_path: str,
                       flops_per_step: float | None = None, ranks: list | None = None) -> dict:
    """The record of a run. ``flops_per_step``: the model FLOPs of one step, counted by
    the caller from the model description (the trainer counts no FLOPs of its own:
    the one formula is perfmodel.ops.model_flops_per_iteration, which the CLI passes);
    without it the record's FLOP figures are null."""
    steps = [dataclasses.asdict(s) for s in result.steps]
    timed = steps[1:] if len(steps) > 1 else steps          # the first step compiles
    step_s = statistics.median(s["seconds"] for s in timed) if timed else None
    flops = flops_per_step
    tokens = trainer.sampler.global_batch * trainer.model.seq
    return {
        "kind": KIND,
        "version": VERSION,
        "host": host_facts(threads, comm.library, comm.size),
        "model": dataclasses.asdict(trainer.model),
        "parameters": trainer.params.size,
        "data": str(data_path),
        "settings": result.settings,
        "start_step": result.start_step,
        "steps": steps,
        "evals": result.evals,
        "checkpoint": result.checkpoint,
        "checkpoints": result.checkpoints,
        "tokens_per_step": tokens,
        "model_flops_per_step": flops,
        "step_seconds_median": step_s,
        "tokens_per_s": tokens / step_s if step_s else None,
        "achieved_flops_per_s": flops / step_s if step_s and flops else None,
        "measured_steps": max(0, len(timed)),
        "kernels": result.timers.records() if result.timers is not None else [],
        "ranks": ranks if ranks is not None else [rank_timings(0, result)],
        "determinism": {"environment": determinism.environment(comm.size),
                        "resume": trainer.continuation},
    }


def profile_table(record: dict) -> str:
    """Per-kernel time, share and achieved rates, slowest first."""
    n = max(1, record["measured_steps"])
    lines = [f"per-kernel profile over {record['measured_steps']} step(s) "
             f"(first step excluded: it compiles), per step:",
             f"  {'kernel':44} {'calls':>6} {'ms':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7}"]
    for k in record["kernels"]:
        gf = f"{k['flops_per_s'] / 1e9:8.1f}" if k.get("flops_per_s") else f"{'':8}"
        gb = f"{k['bytes_per_s'] / 1e9:7.1f}" if k.get("bytes_per_s") else f"{'':7}"
        lines.append(f"  {k['name'][:44]:44} {k['calls'] // n:>6} {k['seconds'] / n * 1e3:9.2f} "
                     f"{k['share']:6.1%} {gf} {gb}")
    if record["step_seconds_median"]:
        lines.append(f"  step {record['step_seconds_median']:.3f} s median: "
                     f"{record['tokens_per_s']:,.0f} tokens/s, "
                     f"{record['achieved_flops_per_s'] / 1e9:,.1f} GFLOP/s (model FLOPs)")
    return "\n".join(lines)
