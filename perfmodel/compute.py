"""Time of one op on one rank: a roofline with efficiencies, or fitted rates.

From a system preset: ``time = max(flops / (peak[precision] * eff_gemm), bytes /
bw_sustained)`` for a GEMM (``eff_gemm`` flat, or ``gemm_efficiency / (1 + h/m + h/n +
h/k)`` with the preset's half-rate size h: a dimension as small as h halves the rate,
as small GEMMs underfill a GPU's many SMs and leave its tiles partly empty) and ``max(flops / peak, bytes / bw_sustained)`` for a
memory-bound kernel, where bw_sustained is the rank's STREAM bandwidth (a
measured figure, so no further memory efficiency is applied).

With a calibration (``ComputeFit``, fitted by calibration/ from measurements on
the node), FP32 ops use the measured rates instead:

* GEMM (m, n, k): ``flops / rate(m, n, k) + gemm_overhead`` with
  ``rate = gemm_rate / (1 + m0/m + n0/n + k0/k)``: a large GEMM reaches gemm_rate
  and each dimension as small as its half-rate size costs half of it (the
  saturating form of roofline-with-shape models; m0, n0, k0 fitted). Backward
  GEMMs take ``gemm_backward_slowdown`` times longer per FLOP (they read the
  activations stored during the forward pass, no longer in cache).
* Memory-bound kernel of class c: ``bytes / bandwidth[c] + kernel_overhead``, one
  achieved bandwidth per kernel class (norm, softmax, gelu, residual, embedding,
  cross_entropy, optimizer), in perfmodel's byte counts (ops.py).
* Every op also pays ``glue``: the framework's own time between kernels (launch,
  views, scratch buffers), seen only in whole training steps.
* A fused attention (``attn_flash``, ops.flash_attention_op) runs its products as
  GEMMs of its tile shape and, between them, the softmax of the scores it computes:
  its FLOPs at the GEMM rate plus its scores' softmax passes at the fitted softmax
  bandwidth (ops' softmax bytes; the backward twice the forward's, as every
  memory-bound backward), so a CPU's tiled attention (trainer/kernels.py) is priced as
  the parts it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpcore.caches import cached
from fpcore.errors import SpecError

from .ops import FLASH_BACKWARD, Op, mem
from .system import SystemSpec


# Memory-bound op names (ops.py; suffixes .bwd and .rc stripped) -> kernel class.
KERNEL_CLASS = {"norm1": "norm", "norm2": "norm", "final_norm": "norm", "softmax": "softmax",
                "gelu": "gelu", "swiglu": "gelu", "residual1": "residual",
                "residual2": "residual", "attn_dropout": "residual", "embedding": "embedding",
                "cross_entropy": "cross_entropy", "optimizer": "optimizer",
                # mixture of experts: the router's softmax and top-k, tokens gathered into
                # expert order and back (copies, as a residual add moves memory)
                "router_topk": "softmax", "permute": "residual", "unpermute": "residual"}
KERNEL_CLASSES = ("norm", "softmax", "gelu", "residual", "embedding", "cross_entropy", "optimizer")


def kernel_class(op_name: str) -> str:
    return KERNEL_CLASS[op_name.split(".", 1)[0]]


@dataclass(frozen=True)
class ComputeFit:
    """Per-rank compute rates fitted from measurements (FP32), with their provenance."""

    gemm_rate: float                       # FLOP/s a large GEMM reaches on one rank
    gemm_m0: float                         # half-rate sizes of the three GEMM dimensions
    gemm_n0: float
    gemm_k0: float
    gemm_overhead_s: float                 # per GEMM call
    bandwidth: tuple[tuple[str, float], ...]   # (kernel class, achieved bytes/s)
    kernel_overhead_s: float               # per memory-bound kernel call
    glue_s: float = 0.0                    # per op, between kernels (framework code)
    gemm_backward_slowdown: float = 1.0    # backward GEMMs (dX, dW) relative to forward
    threads: int = 1                       # threads per rank when measured
    ranks_per_node: int = 1                # ranks sharing the node when measured
    source: str = ""

    def __post_init__(self):
        missing = set(KERNEL_CLASSES) - {c for c, _ in self.bandwidth}
        if missing:
            raise SpecError("calibration", f"no fitted bandwidth for kernel class(es) "
                                           f"{', '.join(sorted(missing))}")
        for name in ("gemm_rate", "gemm_backward_slowdown"):
            if not getattr(self, name) > 0:
                raise SpecError("calibration", f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("gemm_m0", "gemm_n0", "gemm_k0", "gemm_overhead_s", "kernel_overhead_s",
                     "glue_s"):
            if not getattr(self, name) >= 0:
                raise SpecError("calibration", f"{name} must be >= 0; got {getattr(self, name)}")
        for kernel, bw in self.bandwidth:
            if not bw > 0:
                raise SpecError("calibration", f"bandwidth of {kernel} must be > 0; got {bw}")

    def gemm_rate_for(self, m: int, n: int, k: int) -> float:
        return self.gemm_rate / (1.0 + self.gemm_m0 / m + self.gemm_n0 / n + self.gemm_k0 / k)

    def gemm_time(self, flops: float, m: int, n: int, k: int, backward: bool = False) -> float:
        slow = self.gemm_backward_slowdown if backward else 1.0
        return flops * slow / self.gemm_rate_for(m, n, k) + self.gemm_overhead_s + self.glue_s

    def kernel_time(self, kernel: str, nbytes: float) -> float:
        return nbytes / dict(self.bandwidth)[kernel] + self.kernel_overhead_s + self.glue_s

    def flash_time(self, op: Op) -> float:
        """A fused attention op: its products as GEMMs, its scores' softmax as the
        softmax kernel class (one pass forward, two backward)."""
        backward = op.name.endswith(".bwd")
        scores = op.flops / (4.0 * op.k) / (FLASH_BACKWARD if backward else 1.0)
        softmax = (2.0 if backward else 1.0) * mem("softmax", scores, 1, 1, 4, 0.0).bytes
        return (self.gemm_time(op.flops, op.m, op.n, op.k, backward)
                + self.kernel_time("softmax", softmax))


@dataclass(frozen=True)
class ComputeModel:
    peak_flops: float          # FLOP/s of one rank at the training precision
    memory_bandwidth: float    # sustained bytes/s of one rank
    gemm_efficiency: float     # fraction of peak a large GEMM reaches
    op_overhead_s: float = 0.0
    fit: ComputeFit | None = None   # measured rates replace the roofline when given
    gemm_half_size: float = 0.0     # a preset's shape curve (see gemm_efficiency_for)
    # a fused attention kernel's fraction of peak (its own, not a GEMM shape's: its tiles
    # are the kernel's, whatever the head size); None: priced as the GEMMs it runs
    attention_efficiency: float | None = None

    @classmethod
    def for_system(cls, system: SystemSpec, precision: str) -> "ComputeModel":
        return _for_system(system, precision)

    def gemm_efficiency_for(self, m: int, n: int, k: int) -> float:
        if self.fit is not None:
            return self.fit.gemm_rate_for(m, n, k) / self.peak_flops
        if self.gemm_half_size:
            h = self.gemm_half_size
            return self.gemm_efficiency / (1.0 + h / m + h / n + h / k)
        return self.gemm_efficiency

    @property
    def max_gemm_efficiency(self) -> float:
        """The highest efficiency any GEMM shape reaches (for lower bounds)."""
        if self.fit is not None:
            return self.fit.gemm_rate / self.peak_flops
        return self.gemm_efficiency

    def optimizer_time(self, nbytes: float) -> float:
        """The optimizer step moving ``nbytes`` (estimator.OPTIMIZER_BYTES per parameter)."""
        if self.fit is not None:
            return self.fit.kernel_time("optimizer", nbytes)
        return nbytes / self.memory_bandwidth

    def op_time(self, op: Op) -> float:
        if self.fit is not None:
            if op.name.startswith("attn_flash"):
                return self.fit.flash_time(op)
            if op.kind == "gemm":
                return self.fit.gemm_time(op.flops, op.m, op.n, op.k, op.name.endswith(".bwd"))
            return self.fit.kernel_time(kernel_class(op.name), op.bytes)
        memory_s = op.bytes / self.memory_bandwidth
        if op.kind == "gemm" and self.attention_efficiency and op.name.startswith("attn_flash"):
            compute_s = op.flops / (self.peak_flops * self.attention_efficiency)
        elif op.kind == "gemm":
            compute_s = op.flops / (self.peak_flops * self.gemm_efficiency_for(op.m, op.n, op.k))
        else:
            compute_s = op.flops / self.peak_flops
        return max(compute_s, memory_s) + self.op_overhead_s

    def ops_time(self, ops) -> float:
        return sum(self.op_time(op) for op in ops)


@cached("model", maxsize=256)
def _for_system(system: SystemSpec, precision: str) -> ComputeModel:
    rank = system.rank
    if precision not in rank.peak_flops:
        raise SpecError("precision", f"{precision} is not supported by {system.node.name}")
    fit = system.compute_fit if precision == "fp32" else None   # measured in FP32
    return ComputeModel(peak_flops=rank.peak_flops[precision],
                        memory_bandwidth=rank.memory_bandwidth,
                        gemm_efficiency=system.node.gemm_efficiency, fit=fit,
                        gemm_half_size=system.node.gemm_half_size,
                        op_overhead_s=system.stack.op_overhead_us * 1e-6 if fit is None else 0.0,
                        attention_efficiency=system.stack.attention_efficiency)
