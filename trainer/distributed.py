"""Data parallelism across processes with MPI (mpi4py), or one process without it.

Under ``mpiexec -n R`` every rank holds the whole model, trains on its share of
each global batch, and the flat gradient buffer is summed across ranks in buckets
(``MPI_Allreduce`` in place, ``bucket_bytes`` each, as PyTorch DDP and Megatron do
to bound message size). Rank 0 writes checkpoints and logs.

mpi4py is imported only when the process was started by an MPI launcher, so a plain
``fugakuperf train`` neither needs nor initialises MPI.
"""

from __future__ import annotations

import os

import numpy as np

# Environment variables that MPI launchers set in every rank (MPICH/Hydra, PMIx, Open MPI).
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALRANKID")
BUCKET_BYTES = 25 * 2**20          # PyTorch DDP's default bucket (25 MiB)


class SingleProcess:
    """One rank: every collective is the identity."""

    rank, size = 0, 1
    library = "none"

    def allreduce_sum(self, buffer: np.ndarray, timer=None) -> None:
        pass

    def allreduce_scalar(self, value: float) -> float:
        return value

    def barrier(self) -> None:
        pass

    def broadcast(self, obj):
        return obj

    def allgather(self, obj) -> list:
        return [obj]

    def abort(self, code: int) -> None:
        raise SystemExit(code)

    def split(self, color: int, key: int):
        return self

    @property
    def mpi(self):
        """The mpi4py communicator (None: one process)."""
        return None


class MPIComm:
    """MPI_COMM_WORLD through mpi4py."""

    def __init__(self, bucket_bytes: int = BUCKET_BYTES, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.bucket_bytes = bucket_bytes
        self.library = MPI.Get_library_version().strip().splitlines()[0]

    def allreduce_sum(self, buffer: np.ndarray, timer=None) -> None:
        """Sum a contiguous buffer across ranks in place, bucket by bucket."""
        step = max(1, self.bucket_bytes // buffer.itemsize)
        for start in range(0, buffer.size, step):
            part = buffer[start:start + step]
            if timer is None:
                self.comm.Allreduce(self.MPI.IN_PLACE, part, op=self.MPI.SUM)
                continue
            with timer(f"allreduce {part.nbytes}", bytes_=part.nbytes):
                self.comm.Allreduce(self.MPI.IN_PLACE, part, op=self.MPI.SUM)

    def allreduce_scalar(self, value: float) -> float:
        return float(self.comm.allreduce(value, op=self.MPI.SUM))

    def barrier(self) -> None:
        self.comm.Barrier()

    def broadcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def abort(self, code: int) -> None:
        """End every rank (one rank leaving alone would leave the others waiting in
        their next collective forever)."""
        self.comm.Abort(code)

    def split(self, color: int, key: int) -> "MPIComm":
        """The ranks of the same ``color``, ordered by ``key`` (MPI_Comm_split)."""
        return MPIComm(self.bucket_bytes, self.comm.Split(color, key))

    @property
    def mpi(self):
        return self.comm


def on_every_rank(comm, action):
    """``action()`` on every rank, and its result; when it raises on any rank, every rank
    raises: the failing rank its own error, the others a SpecError naming that rank
    (a rank that stopped alone would leave the others waiting in the first collective)."""
    from fpcore.errors import SpecError
    error, result, said = None, None, None
    try:
        result = action()
    except Exception as e:                 # re-raised below, after every rank has heard
        error = e
        said = (e.field, e.message) if isinstance(e, SpecError) else \
            ("mpi", f"{type(e).__name__}: {e}")
    heard = comm.allgather(said)
    if error is not None:
        raise error
    for rank, failure in enumerate(heard):
        if failure is not None:
            field, message = failure
            raise SpecError(field, f"{message} (on rank {rank})")
    return result


def check_same(comm, facts: dict) -> None:
    """Every rank holds the same ``facts`` (its inputs: settings, data, resumed state);
    ranks that read different files would otherwise train different models silently."""
    from fpcore.errors import SpecError
    every = comm.allgather(facts)
    for rank, theirs in enumerate(every):
        for key, value in every[0].items():
            if theirs.get(key) != value:
                raise SpecError("mpi", f"rank {rank} has {key} {str(theirs.get(key))[:100]}, "
                                       f"rank 0 has {str(value)[:100]}: every rank must read "
                                       f"the same inputs")


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in LAUNCHER_VARS)


def world(bucket_bytes: int = BUCKET_BYTES):
    """The communicator this process belongs to: MPI under a launcher, else one rank."""
    if not launched_by_mpi():
        return SingleProcess()
    try:
        return MPIComm(bucket_bytes)
    except ImportError as e:
        from fpcore.errors import SpecError
        raise SpecError("mpi", "started under an MPI launcher but mpi4py is not installed; "
                               "pip install 'fugakuperf[mpi]' (mpi4py and the mpich wheel)") from e
