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


class MPIComm:
    """MPI_COMM_WORLD through mpi4py."""

    def __init__(self, bucket_bytes: int = BUCKET_BYTES):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
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
