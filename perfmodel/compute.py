"""Time of one op on one rank: a roofline with efficiencies.

``time = max(flops / (peak[precision] * eff_gemm), bytes / bw_sustained)`` for a
GEMM and ``max(flops / peak, bytes / bw_sustained)`` for a memory-bound kernel,
where bw_sustained is the rank's STREAM bandwidth (a measured figure, so no
further memory efficiency is applied). The calibration issue replaces the flat
GEMM efficiency with a fitted curve over shape; the interface stays this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import SpecError
from .ops import Op
from .system import SystemSpec


@dataclass(frozen=True)
class ComputeModel:
    peak_flops: float          # FLOP/s of one rank at the training precision
    memory_bandwidth: float    # sustained bytes/s of one rank
    gemm_efficiency: float     # fraction of peak a large GEMM reaches
    op_overhead_s: float = 0.0

    @classmethod
    def for_system(cls, system: SystemSpec, precision: str) -> "ComputeModel":
        return _for_system(system, precision)

    def gemm_efficiency_for(self, m: int, n: int, k: int) -> float:
        return self.gemm_efficiency

    @property
    def max_gemm_efficiency(self) -> float:
        """The highest efficiency any GEMM shape reaches (for lower bounds)."""
        return self.gemm_efficiency

    def op_time(self, op: Op) -> float:
        memory_s = op.bytes / self.memory_bandwidth
        if op.kind == "gemm":
            compute_s = op.flops / (self.peak_flops * self.gemm_efficiency_for(op.m, op.n, op.k))
        else:
            compute_s = op.flops / self.peak_flops
        return max(compute_s, memory_s) + self.op_overhead_s

    def ops_time(self, ops) -> float:
        return sum(self.op_time(op) for op in ops)


@lru_cache(maxsize=256)
def _for_system(system: SystemSpec, precision: str) -> ComputeModel:
    rank = system.rank
    if precision not in rank.peak_flops:
        raise SpecError("precision", f"{precision} is not supported by {system.node.name}")
    return ComputeModel(peak_flops=rank.peak_flops[precision],
                        memory_bandwidth=rank.memory_bandwidth,
                        gemm_efficiency=system.node.gemm_efficiency)
