"""Measure MPI collectives and fit an alpha-beta model to each.

``measure_collectives`` times allreduce, allgather, reduce-scatter and a ping-pong on
an mpi4py communicator over a range of sizes; ``fit_collectives`` fits a latency and
a bandwidth per operation to those times with ``topologies.fitted.collective_seconds``
(the formula the fitted network model then uses); ``network_from_fits`` turns the
fits into that model.

Timing follows the Intel MPI Benchmarks' conventions: one warm-up run, a barrier
before every timed run, the slowest rank's time of each run (IMB's t_max), and for
the ping-pong half the round trip. Of the ``repeat`` runs the median is kept, which
a run disturbed by other work on the machine does not move (Hoefler & Belli,
"Scientific benchmarking of parallel computing systems", SC 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpcore.errors import SpecError, check_choice, check_float, check_int, check_keys
from topologies.fitted import FITTED_OPS, FittedCollectives, collective_seconds

FLOAT32 = 4                         # bytes of one element: buffers are float32
P2P_TAG = 7
MEASUREMENT_KEYS = ("kind", "op", "ranks", "bytes", "seconds")
# Named, bounded parameters of one operation's fit (fitted as their logarithms).
PARAMETERS = (("alpha_s", 1e-9, 1.0), ("bandwidth_bytes_per_s", 1e3, 1e13))


def geometric_sizes(first: int, last: int, factor: int) -> list[int]:
    """first, first * factor, ... up to and including ``last``."""
    sizes, size = [], first
    while size <= last:
        sizes.append(size)
        size *= factor
    return sizes


MAX_BYTES = 256 * 2**20             # the largest buffer measured


def default_sizes() -> list[int]:
    """8 B to 256 MiB: powers of 4 from 8 B (to 128 MiB), then 256 MiB itself."""
    return geometric_sizes(8, MAX_BYTES, 4) + [MAX_BYTES]


def quick_sizes() -> list[int]:
    """8 B to 16 MiB in powers of 16 (8 B ... 8 MiB), for a quick calibration."""
    return geometric_sizes(8, 16 * 2**20, 16)


def round_size(nbytes: int, ranks: int) -> int:
    """``nbytes`` rounded to whole float32 elements, a multiple of ``ranks`` of them
    (allgather and reduce-scatter split the buffer evenly), at least one per rank."""
    per_rank = max(1, int(nbytes / (FLOAT32 * ranks) + 0.5))
    return per_rank * ranks * FLOAT32


def _runner(comm, MPI, op: str, count: int):
    """A function running ``op`` once on ``count`` float32 elements, and the factor
    that turns its time into the operation's time."""
    n, rank = comm.Get_size(), comm.Get_rank()
    if op == "allreduce":
        buf = np.zeros(count, np.float32)          # (count,) zeros: repeated sums stay finite
        return (lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)), 1.0
    if op == "allgather":
        send, recv = np.zeros(count // n, np.float32), np.empty(count, np.float32)
        return (lambda: comm.Allgather(send, recv)), 1.0
    if op == "reduce-scatter":
        send, recv = np.zeros(count, np.float32), np.empty(count // n, np.float32)
        return (lambda: comm.Reduce_scatter_block(send, recv, op=MPI.SUM)), 1.0
    buf = np.zeros(count, np.float32)              # p2p: ping-pong between ranks 0 and 1

    def ping_pong():
        if rank == 0:
            comm.Send(buf, dest=1, tag=P2P_TAG)
            comm.Recv(buf, source=1, tag=P2P_TAG)
        elif rank == 1:
            comm.Recv(buf, source=0, tag=P2P_TAG)
            comm.Send(buf, dest=0, tag=P2P_TAG)
    return ping_pong, 0.5                          # one way = half the round trip


def _median_max_time(comm, MPI, run, scale: float, repeat: int) -> float:
    """Median over ``repeat`` runs (after one warm-up) of the slowest rank's time."""
    run()
    times = []
    for _ in range(repeat):
        comm.Barrier()
        start = MPI.Wtime()
        run()
        times.append(comm.allreduce((MPI.Wtime() - start) * scale, op=MPI.MAX))
    return float(np.median(times))


def measure_collectives(comm, sizes=None, repeat: int = 5, progress=None) -> list[dict]:
    """Time each fitted operation at each size on ``comm`` (an mpi4py communicator,
    or an object holding one as ``.comm`` such as ``trainer.distributed.MPIComm``).

    Every rank must call it and every rank gets the same records
    ``{"kind": "collective", "op", "ranks", "bytes", "seconds"}``: ``bytes`` is the
    whole buffer (allreduce's vector, allgather's output, reduce-scatter's input, the
    message of p2p), rounded by ``round_size``; ``ranks`` is the communicator's size,
    except for p2p, where it is the 2 ranks (0 and 1) that take part while the others
    wait. ``progress(op, nbytes)`` is called on rank 0 before each size.
    """
    comm = getattr(comm, "comm", comm)
    n = comm.Get_size()
    if n < 2:
        raise SpecError("comm", f"needs at least 2 ranks to measure communication, got {n}")
    sizes = default_sizes() if sizes is None else sizes
    sizes = [check_int(f"sizes[{i}]", s, lo=1) for i, s in enumerate(sizes)]
    repeat = check_int("repeat", repeat, lo=1)
    from mpi4py import MPI

    rank, rows = comm.Get_rank(), []
    for op in FITTED_OPS:
        for size in sizes:
            nbytes = round_size(size, n)
            if progress is not None and rank == 0:
                progress(op, nbytes)
            run, scale = _runner(comm, MPI, op, nbytes // FLOAT32)
            seconds = _median_max_time(comm, MPI, run, scale, repeat)
            rows.append({"kind": "collective", "op": op, "ranks": 2 if op == "p2p" else n,
                         "bytes": nbytes, "seconds": seconds})
    return rows


@dataclass(frozen=True, eq=False)
class Samples:
    """The measurements of one operation at one rank count."""

    op: str
    ranks: int
    nbytes: np.ndarray       # (k,) buffer sizes
    seconds: np.ndarray      # (k,) measured times


def residuals(x: np.ndarray, data: Samples) -> np.ndarray:
    """log(predicted) - log(measured) of each sample at x = (log alpha_s, log bandwidth)."""
    alpha_s, bandwidth = np.exp(x)
    predicted = collective_seconds(data.op, data.ranks, data.nbytes, alpha_s, bandwidth)
    return np.log(predicted) - np.log(data.seconds)


def samples_by_op(measurements) -> dict[str, Samples]:
    """The collective records grouped by operation, validated (other kinds are skipped)."""
    rows: dict[str, list[tuple[int, float, float]]] = {}
    for i, m in enumerate(measurements):
        where = f"measurements[{i}]"
        if not isinstance(m, dict):
            raise SpecError(where, f"must be a dict of {', '.join(MEASUREMENT_KEYS)}, got {m!r}")
        if m.get("kind", "collective") != "collective":
            continue
        check_keys(where, m, MEASUREMENT_KEYS)
        op = check_choice(f"{where}.op", m.get("op"), FITTED_OPS)
        rows.setdefault(op, []).append((
            check_int(f"{where}.ranks", m.get("ranks"), lo=2),
            check_float(f"{where}.bytes", m.get("bytes"), lo=0.0, lo_open=False),
            check_float(f"{where}.seconds", m.get("seconds"), lo=0.0)))
    if not rows:
        raise SpecError("measurements", "holds no collective measurements")
    samples = {}
    for op in FITTED_OPS:
        if op not in rows:
            continue
        ranks = sorted({r for r, _, _ in rows[op]})
        if len(ranks) > 1:
            raise SpecError("measurements", f"{op} was measured at several rank counts "
                                            f"({', '.join(map(str, ranks))}); fit one at a time")
        if len({b for _, b, _ in rows[op]}) < 2:
            raise SpecError("measurements", f"{op} needs at least 2 distinct sizes to fit "
                                            f"a latency and a bandwidth")
        samples[op] = Samples(op, ranks[0], np.array([b for _, b, _ in rows[op]]),
                              np.array([s for _, _, s in rows[op]]))
    return samples


def initial_guess(data: Samples) -> np.ndarray:
    """x0: alpha from the smallest size alone, bandwidth from the largest alone."""
    steps = collective_seconds(data.op, data.ranks, 0.0, 1.0, 1.0)   # seconds per unit alpha
    volume = collective_seconds(data.op, data.ranks, 1.0, 0.0, 1.0)  # bytes sent per byte
    small, large = np.argmin(data.nbytes), np.argmax(data.nbytes)
    x0 = np.log([data.seconds[small] / steps,
                 volume * data.nbytes[large] / data.seconds[large]])
    lo, hi = np.log([p[1] for p in PARAMETERS]), np.log([p[2] for p in PARAMETERS])
    return np.clip(x0, lo, hi)


def fit_collective(data: Samples) -> dict:
    """Least-squares fit of (alpha_s, bandwidth) to one operation's samples."""
    from scipy.optimize import least_squares

    lo, hi = np.log([p[1] for p in PARAMETERS]), np.log([p[2] for p in PARAMETERS])
    result = least_squares(residuals, initial_guess(data), bounds=(lo, hi), args=(data,),
                           method="trf")
    alpha_s, bandwidth = np.exp(result.x)
    return {"alpha_s": float(alpha_s), "bandwidth_bytes_per_s": float(bandwidth),
            "ranks": data.ranks, "points": int(data.nbytes.size),
            "status": int(result.status), "message": result.message,
            "residual_norm": float(np.linalg.norm(result.fun)),
            "max_abs_log_error": float(np.max(np.abs(result.fun)))}


def fit_collectives(measurements) -> dict:
    """{op: fit} for every operation present in ``measurements`` (see ``fit_collective``)."""
    return {op: fit_collective(data) for op, data in samples_by_op(measurements).items()}


def network_from_fits(fits: dict, name: str = "fitted alpha-beta") -> FittedCollectives:
    """The network model of ``fit_collectives``' result; a failed fit is refused."""
    triples = []
    for op, fit in fits.items():
        for key in ("alpha_s", "bandwidth_bytes_per_s"):
            if key not in fit:
                raise SpecError(f"fits.{op}.{key}", "missing")
        if fit.get("status", 1) <= 0:
            raise SpecError(f"fits.{op}.status", f"the fit failed ({fit['status']}: "
                                                 f"{fit.get('message', '')}); refit")
        triples.append((op, fit["alpha_s"], fit["bandwidth_bytes_per_s"]))
    return FittedCollectives(tuple(triples), name=name)
