"""Per-kernel wall-clock timers with the work each call did (FLOPs, bytes moved).

Each kernel name keeps its calls, total seconds, FLOPs and bytes, and every call's
duration, so a record also gives the median call (which a burst of other work on a
shared machine does not move; calibration uses it).

``timers(name, flops=..., bytes_=...)`` is a context manager; every forward and
backward kernel, every GEMM (named by its N x K x M shape), the optimizer and the
gradient all-reduce go through one. The record is what ``fugakuperf train
--profile`` prints and what calibration fits (achieved FLOP/s per GEMM shape,
achieved bytes/s per memory-bound kernel).
"""

from __future__ import annotations

import contextlib
import statistics
import time


class _Span:
    __slots__ = ("timers", "name", "flops", "nbytes", "start")

    def __init__(self, timers, name, flops, nbytes):
        self.timers, self.name, self.flops, self.nbytes = timers, name, flops, nbytes

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timers.add(self.name, time.perf_counter() - self.start, self.flops, self.nbytes)
        return False


class Timers:
    """Accumulates calls, seconds, FLOPs and bytes per kernel name."""

    def __init__(self):
        self.entries: dict[str, list] = {}

    def __call__(self, name: str, flops: float = 0.0, bytes_: float = 0.0) -> _Span:
        return _Span(self, name, flops, bytes_)

    def add(self, name: str, seconds: float, flops: float = 0.0, nbytes: float = 0.0) -> None:
        e = self.entries.setdefault(name, [0, 0.0, 0.0, 0.0, []])
        e[0] += 1
        e[1] += seconds
        e[2] += flops
        e[3] += nbytes
        e[4].append(seconds)

    def reset(self) -> None:
        self.entries.clear()

    @property
    def total_s(self) -> float:
        return sum(e[1] for e in self.entries.values())

    def records(self) -> list[dict]:
        """One dict per kernel, slowest first (the JSON that calibration reads)."""
        total = self.total_s or 1.0
        rows = []
        for name, (calls, seconds, flops, nbytes, each) in self.entries.items():
            kernel, _, shape = name.partition(" ")
            row = {"name": name, "kernel": kernel, "calls": calls, "seconds": seconds,
                   "median_call_seconds": statistics.median(each), "min_call_seconds": min(each),
                   "flops": flops,
                   "bytes": nbytes, "share": seconds / total}
            if shape:
                row["shape"] = [int(v) for v in shape.split("x")]
            if seconds > 0:
                row["flops_per_s"] = flops / seconds if flops else None
                row["bytes_per_s"] = nbytes / seconds if nbytes else None
            rows.append(row)
        rows.sort(key=lambda r: -r["seconds"])
        return rows


class NullTimers:
    """Timers that record nothing (the default when nobody is measuring)."""

    _null = contextlib.nullcontext()

    def __call__(self, name: str, flops: float = 0.0, bytes_: float = 0.0):
        return self._null

    def add(self, *args, **kwargs) -> None:
        pass
