"""A network model from alpha-beta parameters fitted to measured MPI collectives.

Each fitted operation has its own latency ``alpha`` (seconds per message step) and
bandwidth (bytes/s), measured and fitted by ``calibration.collectives``; both the fit
and this model price an operation with the one formula ``collective_seconds``, the
Hockney (1994) alpha-beta cost of the ring-style algorithms of Thakur, Rabenseifner &
Gropp (2005), with ``bytes`` the whole buffer (allreduce's vector, allgather's output,
reduce-scatter's input; perfmodel's convention, see ``perfmodel.estimator.stage_comm``):

* allreduce (ring): ``2 (n-1) alpha + 2 (n-1)/n * bytes / bw``;
* allgather, reduce-scatter (ring) and alltoall (pairwise exchange):
  ``(n-1) alpha + (n-1)/n * bytes / bw``;
* p2p: ``alpha + bytes / bw``;
* a group of one rank costs nothing.

The fitted bandwidth absorbs whatever the library really ran (a fit, not a claim about
the algorithm), so the model is only as good as the range of sizes and the rank count
it was fitted on.

Operations without a fit of their own (the algorithm name says which fit was used):

* allgather and reduce-scatter use each other's fit (mirror images: the same steps
  and volume, Thakur et al. 2005);
* alltoall uses allgather's fit (or, failing that, reduce-scatter's) in the
  pairwise-exchange form;
* barrier is an allreduce of 0 bytes;
* anything else (p2p, or allreduce for allreduce and barrier) raises ValueError
  naming the missing fit.

References: R. W. Hockney, "The communication challenge for MPP: Intel Paragon and
Meiko CS-2", Parallel Computing 20(3), 1994. R. Thakur, R. Rabenseifner, W. Gropp,
"Optimization of collective communication operations in MPICH", IJHPCA 19(1), 2005.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpcore.errors import SpecError, check_choice, check_float

from .interface import COLLECTIVES, CollectiveCost, JobShape, group_geometry

FITTED_OPS = ("allreduce", "allgather", "reduce-scatter", "p2p")
# Where an operation without a fit of its own takes its parameters, in order of preference.
PARAMETER_SOURCES = {
    "allreduce": ("allreduce",),
    "allgather": ("allgather", "reduce-scatter"),
    "reduce-scatter": ("reduce-scatter", "allgather"),
    "alltoall": ("allgather", "reduce-scatter"),
    "barrier": ("allreduce",),
    "p2p": ("p2p",),
}


def collective_seconds(op: str, ranks: int, nbytes, alpha_s: float, bandwidth: float):
    """Alpha-beta seconds of ``op`` among ``ranks`` ranks on a ``nbytes`` buffer.

    ``nbytes`` may be a number or a numpy array (the fit evaluates all sizes at once).
    Hockney 1994 cost model; step counts and volumes of the ring algorithms from
    Thakur, Rabenseifner & Gropp 2005 (allreduce = reduce-scatter + allgather).
    """
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise SpecError("ranks", f"must be an integer >= 1, got {ranks!r}")
    if ranks == 1:
        return 0.0 * nbytes
    n, frac = ranks, (ranks - 1) / ranks
    if op == "allreduce":
        return 2 * (n - 1) * alpha_s + 2 * frac * nbytes / bandwidth
    if op in ("allgather", "reduce-scatter", "alltoall"):
        return (n - 1) * alpha_s + frac * nbytes / bandwidth
    if op == "p2p":
        return alpha_s + nbytes / bandwidth
    raise SpecError("op", f"must be one of {', '.join(c for c in COLLECTIVES if c != 'barrier')}"
                          f"; got {op!r}")


@dataclass(frozen=True)
class FittedCollectives:
    """NetworkModel from fitted ``(op, alpha_s, bandwidth_bytes_per_s)`` triples.

    ``fits`` is stored sorted by operation, so equal fits compare and hash equal.
    """

    fits: tuple[tuple[str, float, float], ...]
    name: str = "fitted alpha-beta"

    def __post_init__(self):
        if isinstance(self.fits, (str, bytes)) or not hasattr(self.fits, "__iter__"):
            raise SpecError("fits", f"must be a sequence of (op, alpha_s, bandwidth) triples, "
                                    f"got {self.fits!r}")
        clean = []
        for i, entry in enumerate(self.fits):
            if isinstance(entry, (str, bytes)) or len(entry) != 3:
                raise SpecError(f"fits[{i}]", f"must be (op, alpha_s, bandwidth_bytes_per_s), "
                                              f"got {entry!r}")
            op, alpha, bw = entry
            check_choice(f"fits[{i}].op", op, FITTED_OPS)
            alpha = check_float(f"fits[{i}].alpha_s", alpha, lo=0.0, lo_open=False)
            bw = check_float(f"fits[{i}].bandwidth_bytes_per_s", bw, lo=0.0)
            clean.append((op, alpha, bw))
        if not clean:
            raise SpecError("fits", "needs at least one fitted operation")
        ops = [op for op, _, _ in clean]
        for op in ops:
            if ops.count(op) > 1:
                raise SpecError("fits", f"operation {op!r} is fitted more than once")
        if not isinstance(self.name, str):
            raise SpecError("name", f"must be a string, got {self.name!r}")
        object.__setattr__(self, "fits", tuple(sorted(clean)))

    def parameters(self, op: str) -> tuple[str, float, float]:
        """(fitted operation used, alpha_s, bandwidth) for ``op``, after the fallbacks."""
        check_choice("op", op, COLLECTIVES)
        fitted = {o: (a, b) for o, a, b in self.fits}
        for source in PARAMETER_SOURCES[op]:
            if source in fitted:
                return (source, *fitted[source])
        needed = " or ".join(repr(s) for s in PARAMETER_SOURCES[op])
        raise SpecError("calibration", f"{self.name}: no fit for {needed} (needed by {op}); "
                                       f"fitted: {', '.join(o for o, _, _ in self.fits)}: "
                                       f"`fugakuperf calibrate` measures every collective")

    def collective(self, op: str, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        if op == "p2p":
            return self.p2p(dim, job, nbytes)
        source, alpha, bw = self.parameters(op)
        n = group_geometry(job, dim).size
        if op == "barrier":
            seconds = collective_seconds("allreduce", n, 0.0, alpha, bw)
            return CollectiveCost(float(seconds), "fitted barrier (allreduce of 0 bytes)", nbytes)
        seconds = collective_seconds(op, n, nbytes, alpha, bw)
        algorithm = f"fitted {op}"
        if op == "alltoall":
            algorithm += f" (pairwise exchange, {source} fit)"
        elif source != op:
            algorithm += f" ({source} fit)"
        return CollectiveCost(float(seconds), algorithm, nbytes)

    def p2p(self, dim: str, job: JobShape, nbytes: float) -> CollectiveCost:
        _, alpha, bw = self.parameters("p2p")
        n = group_geometry(job, dim).size
        return CollectiveCost(float(collective_seconds("p2p", n, nbytes, alpha, bw)),
                              "fitted p2p", nbytes)
