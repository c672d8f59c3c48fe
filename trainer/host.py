"""Facts about the machine a measurement was taken on (kept beside every figure), and
how busy it is: the cores other work keeps busy, the CPU time a hypervisor steals,
and the default thread count that leaves the busy cores alone.

CPU time comes from Linux's ``/proc/stat`` (proc(5)): its first line sums, over every
CPU, the time spent in each state since boot, in ``USER_HZ`` ticks
(``os.sysconf("SC_CLK_TCK")``). Elsewhere the busy-core figures are unknown (None)
and every core counts as free.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import time
from dataclasses import dataclass

PROC_STAT = "/proc/stat"
PROC_CPUINFO = "/proc/cpuinfo"

# How long default_threads watches the machine. /proc/stat counts in ticks of
# 1/USER_HZ s (100 on Linux): 0.25 s gives 25 ticks per CPU, enough to tell a busy core
# (a steady job) from a free one to 4%, and is short beside any command that trains.
IDLE_SAMPLE_S = 0.25

# ARM CPUs name themselves by implementer and part number in /proc/cpuinfo, with no
# "model name" line. Values from Linux arch/arm64/include/asm/cputype.h.
ARM_PARTS = {
    ("0x46", "0x001"): "Fujitsu A64FX",
    ("0x41", "0xd0c"): "Arm Neoverse N1",
    ("0x41", "0xd40"): "Arm Neoverse V1",
    ("0x41", "0xd49"): "Arm Neoverse N2",
    ("0x41", "0xd4f"): "Arm Neoverse V2",
}


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's "model name" (x86), or the ARM part its
    implementer and part number identify, or the platform's machine name."""
    arm: dict[str, str] = {}
    try:
        with open(PROC_CPUINFO) as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key in ("model name", "cpu model") and value:
                    return value
                if key in ("cpu implementer", "cpu part") and key not in arm:
                    arm[key] = value.lower()
    except OSError:
        pass
    if "cpu implementer" in arm and "cpu part" in arm:
        ids = (arm["cpu implementer"], arm["cpu part"])
        return ARM_PARTS.get(ids, f"ARM implementer {ids[0]} part {ids[1]}")
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


# ------------------------------------------------------------------ CPU time
@dataclass(frozen=True)
class CpuTimes:
    """Seconds of CPU time, summed over the machine's CPUs, by state (/proc/stat's
    ``cpu`` line: user nice system idle iowait irq softirq steal; guest time is already
    inside user and nice)."""

    busy: float       # user + nice + system + irq + softirq
    idle: float       # idle + iowait
    steal: float      # runnable, but the hypervisor ran something else

    @property
    def total(self) -> float:
        return self.busy + self.idle + self.steal

    def __sub__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.busy - other.busy, self.idle - other.idle,
                        self.steal - other.steal)


def read_cpu_times() -> CpuTimes | None:
    """The machine's CPU time so far (None where /proc/stat is missing or unreadable)."""
    try:
        with open(PROC_STAT) as f:
            fields = f.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, idle, iowait, irq, softirq = (int(v) for v in fields[1:8])
        steal = int(fields[8]) if len(fields) > 8 else 0
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return CpuTimes((user + nice + system + irq + softirq) / tick, (idle + iowait) / tick,
                    steal / tick)


def process_cpu_seconds() -> float:
    """CPU time of this process so far, all its threads (user + system)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def load_average() -> float | None:
    """Runnable tasks averaged over the last minute (None where unknown)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class CoreUse:
    """How many cores other work kept busy over a short look at the machine."""

    cores: int            # the machine's CPUs
    busy: float           # cores' worth of CPU time others used or the hypervisor stole
    sample_s: float

    @property
    def idle(self) -> int:
        """Cores free for this process: a core counts as free when at least half of it
        was (rounding to the nearest core)."""
        return max(0, min(self.cores, int(self.cores - self.busy + 0.5)))


def core_use(sample_s: float = IDLE_SAMPLE_S, own_ranks: int = 1) -> CoreUse | None:
    """Watch the machine for ``sample_s`` seconds while this process sleeps. The other
    ``own_ranks - 1`` ranks of this job on the node (starting up as this one is) may
    account for a core each: that much busy time is not counted as other work."""
    cores = os.cpu_count() or 1
    before, own = read_cpu_times(), process_cpu_seconds()
    t = time.perf_counter()
    time.sleep(sample_s)
    after, own = read_cpu_times(), process_cpu_seconds() - own
    wall = time.perf_counter() - t
    if before is None or after is None:
        return None
    d = after - before
    if d.total <= 0 or wall <= 0:
        return None
    busy = cores * (d.busy + d.steal) / d.total - own / wall - max(0, own_ranks - 1)
    return CoreUse(cores, max(0.0, busy), wall)


def node_ranks(default: int = 1) -> int:
    """Ranks of this job on this node, as the MPI launcher says (MPICH's
    MPI_LOCALNRANKS, Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), else ``default``."""
    raw = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
    try:
        return max(1, int(raw)) if raw else max(1, default)
    except ValueError:
        return max(1, default)


def threads_for(use: CoreUse | None, ranks: int = 1) -> int:
    """Threads per rank: the free cores divided among the node's ``ranks`` (so neither
    they nor the work already running are oversubscribed), at most the cores this
    process may run on, never fewer than 1. Unknown use (no /proc/stat): every core
    is free."""
    cores = os.cpu_count() or 1
    free = use.idle if use is not None else cores
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = cores
    return max(1, min(free // max(1, ranks), allowed))


def default_threads(local_ranks: int = 1, sample_s: float = IDLE_SAMPLE_S) -> int:
    """The default threads per rank on this node now: the cores that are free (a
    ``sample_s`` look at /proc/stat) shared among the node's ranks (the launcher's
    count, else ``local_ranks``); at least 1."""
    ranks = node_ranks(local_ranks)
    return threads_for(core_use(sample_s, ranks), ranks)


@dataclass(frozen=True)
class Contention:
    """What else ran on the machine over a stretch of this process's work."""

    wall_s: float
    cores: int
    steal_fraction: float | None     # of the machine's CPU time, taken by the hypervisor
    other_cores: float | None        # cores' worth of CPU time used by other processes
    load_start: float | None         # 1-minute load average before and after
    load_end: float | None

    def to_dict(self) -> dict:
        return {"wall_s": self.wall_s, "cores": self.cores,
                "steal_fraction": self.steal_fraction, "other_cores": self.other_cores,
                "load_average_start": self.load_start, "load_average_end": self.load_end}


class ContentionMeter:
    """Start before the work, ``stop()`` after: the machine's CPU time by state and this
    process's own CPU time over the window. Under MPI, the other ``ranks - 1`` ranks
    of the job on this node are taken to use as much CPU as this one (they run the
    same work), so theirs is not counted as other work."""

    def __init__(self, ranks: int = 1):
        self.ranks = max(1, ranks)
        self.cores = os.cpu_count() or 1
        self.load_start = load_average()
        self.times = read_cpu_times()
        self.own = process_cpu_seconds()
        self.t0 = time.perf_counter()

    def stop(self) -> Contention:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        own = process_cpu_seconds() - self.own
        after = read_cpu_times()
        steal = other = None
        if self.times is not None and after is not None:
            d = after - self.times
            if d.total > 0:
                steal = max(0.0, d.steal / d.total)
                other = max(0.0, self.cores * d.busy / d.total - self.ranks * own / wall)
        return Contention(wall, self.cores, steal, other, self.load_start, load_average())


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
