"""Was the machine quiet while it was measured? The conditions of a measurement
(trainer.host.ContentionMeter), judged against stated thresholds.

Two things slow every timing down, and each bounds how much:

* **Oversubscription.** When this job's threads (threads x ranks) and the cores'
  worth of other work together exceed the cores, the scheduler shares the cores
  fairly, so a timing can be up to ``(threads x ranks + other) / cores`` times too long.
* **Steal.** A virtual machine whose hypervisor takes a fraction ``s`` of its CPU time
  runs ``1 - s`` of the wall time: up to ``1 / (1 - s)`` times too long.

Their product is the measurement's ``slowdown_bound``. Timings are the fastest of
repeats (measure.py), which recovers much of a bursty slowdown, so the bound is the
worst case, not the expected error. The *repeat spread* (median over fastest of a
record's repeats, the median over records) shows the bursts themselves.

Thresholds (judgements, with the reason):

* ``WARN_SLOWDOWN`` 1.05: contention that can add 5% to a timing is as large as the
  errors a good calibration shows (the fit's median error), so it is said.
* ``REFUSE_SLOWDOWN`` 1.20: contention that can add 20% could by itself explain an
  error past the 20% that ``validate --max-error 0.2`` (the documented check) accepts;
  such measurements describe the other work, not the machine, and are refused
  unless kept explicitly (``calibrate --allow-contention``).
* ``WARN_SPREAD`` 1.25: a median step 25% slower than the fastest means the fastest
  was a rare quiet moment, not how the machine runs.
* ``WARN_DRIFT`` 0.10: the calibration's own configurations timed again at validation
  running 10% faster or slower than when calibrated means the machine is not in the
  state it was calibrated in; the validation's errors then measure that, not the model.
"""

from __future__ import annotations

import statistics

WARN_SLOWDOWN = 1.05
REFUSE_SLOWDOWN = 1.20
WARN_SPREAD = 1.25
WARN_DRIFT = 0.10

THRESHOLDS = {"warn_slowdown": WARN_SLOWDOWN, "refuse_slowdown": REFUSE_SLOWDOWN,
              "warn_spread": WARN_SPREAD}
VERDICTS = ("quiet", "noisy", "contended", "unknown")


def slowdown_bound(cores: int, threads: int, ranks: int, other_cores: float | None,
                   steal_fraction: float | None) -> float | None:
    """The most contention can stretch a timing (see the module's docstring); None when
    neither figure is known."""
    if other_cores is None and steal_fraction is None:
        return None
    demand = threads * ranks + (other_cores or 0.0)
    oversubscribed = max(1.0, demand / max(1, cores))
    stolen = min(steal_fraction or 0.0, 0.99)
    return oversubscribed / (1.0 - stolen)


def repeat_spread(records) -> float | None:
    """The median, over records with repeats, of median / fastest seconds."""
    ratios = [r["median_seconds"] / r["seconds"] for r in records
              if r.get("median_seconds") and r.get("seconds")]
    return statistics.median(ratios) if ratios else None


def assess(window, threads: int, ranks: int = 1, spread: float | None = None) -> dict:
    """The conditions of a measurement over ``window`` (a trainer.host.Contention) by
    this job's ``threads`` x ``ranks``, with a verdict and the reasons for it."""
    other = window.other_cores
    if other is None and window.load_end is not None:
        # no /proc/stat: the load average (which counts this job's threads) stands in
        other = max(0.0, window.load_end - threads * ranks)
    bound = slowdown_bound(window.cores, threads, ranks, other, window.steal_fraction)
    reasons = []
    if bound is not None and bound > WARN_SLOWDOWN:
        parts = []
        if threads * ranks > window.cores:
            parts.append(f"this job ran {threads * ranks} threads on {window.cores} cores")
        if other:
            parts.append(f"other work used {other:.1f} of {window.cores} cores beside this "
                         f"job's {threads * ranks} thread(s)")
        if window.steal_fraction:
            parts.append(f"the hypervisor stole {window.steal_fraction:.0%} of the CPU time")
        reasons.append(f"{' and '.join(parts)}: timings may be up to {bound - 1:.0%} too long")
    if spread is not None and spread > WARN_SPREAD:
        reasons.append(f"repeated timings spread: the median is {spread - 1:.0%} above the "
                       f"fastest (more than {WARN_SPREAD - 1:.0%})")
    if bound is not None and bound > REFUSE_SLOWDOWN:
        verdict = "contended"
    elif reasons:
        verdict = "noisy"
    elif bound is None:
        verdict = "unknown"
    else:
        verdict = "quiet"
    return {**window.to_dict(), "other_cores": other, "threads": threads, "ranks": ranks,
            "repeat_spread": spread, "slowdown_bound": bound, "verdict": verdict,
            "reasons": reasons, "thresholds": dict(THRESHOLDS)}


def summary(assessment: dict) -> str:
    """One line: the verdict and why (the reasons, which give the bound; else the bound)."""
    verdict, reasons = assessment["verdict"], assessment.get("reasons") or ()
    if reasons:
        return f"{verdict}: {'; '.join(reasons)}"
    bound = assessment.get("slowdown_bound")
    if bound is None:
        return f"{verdict} (no CPU accounting on this machine)"
    return f"{verdict} (timings at most {bound - 1:.0%} too long from contention)"
