"""Facts about the machine a measurement was taken on (kept beside every figure)."""

from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def host_facts(threads: int | None = None, mpi: str = "none", ranks: int = 1) -> dict:
    import numba
    import numpy

    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "threads": threads,
        "ranks": ranks,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "mpi": mpi,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def default_threads(local_ranks: int = 1) -> int:
    """The cores divided among the ranks on this node (so ranks do not oversubscribe)."""
    local = int(os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
                or local_ranks)
    return max(1, (os.cpu_count() or 1) // max(1, local))


def set_threads(threads: int | None) -> int:
    """Limit Numba's and BLAS's threads (None: leave them); returns the count in use."""
    import numba
    from threadpoolctl import threadpool_limits

    from . import kernels  # noqa: F401  (loads every BLAS library the trainer uses, so the
    #                         limit reaches all of them: numpy's and scipy's are separate)
    if threads is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        threadpool_limits(threads, user_api="blas")
    return numba.get_num_threads()
