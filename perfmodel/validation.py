"""Predictions checked against published measurements shipped with fugakuperf.

``perfmodel/data/validation/fugaku_mpi.csv`` holds RIKEN's Intel MPI Benchmarks
figures on Fugaku (perf-mpi, 2022), each row with its source.
"""

from __future__ import annotations

import csv
from importlib import resources

from .errors import SpecError
from .system import SystemSpec

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def fugaku_mpi_rows() -> list[dict]:
    path = resources.files("perfmodel.data") / "validation" / "fugaku_mpi.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


def predict_mpi_row(system: SystemSpec, row: dict) -> dict:
    """The model's figure for one IMB measurement, in the row's unit, with its error."""
    from topologies import JobShape
    from .estimator import network_for
    nodes, ppn, nbytes = int(row["nodes"]), int(row["procs_per_node"]), float(row["bytes"])
    net = network_for(system.with_options(ppn=ppn, network_model="flow"))
    job = JobShape(1, 1, nodes * ppn, ppn)
    test = row["test"]
    if test.startswith("pingpong"):
        cost = net.p2p("dp", job, nbytes)
    elif test in ("allreduce", "barrier", "allgather", "alltoall", "reduce-scatter"):
        cost = net.collective(test, "dp", job, nbytes)
    else:
        raise SpecError("test", f"unknown IMB test {test!r}")
    unit = row["unit"]
    if unit == "MB/s":
        predicted = nbytes / cost.seconds / 1e6
    elif unit in UNITS:
        predicted = cost.seconds / UNITS[unit]
    else:
        raise SpecError("unit", f"unknown unit {unit!r}; known: MB/s, {', '.join(UNITS)}")
    measured = float(row["value"])
    return {"test": test, "nodes": nodes, "procs_per_node": ppn, "bytes": nbytes,
            "unit": unit, "measured": measured, "predicted": predicted,
            "error": predicted / measured - 1, "algorithm": cost.algorithm,
            "source": row["source"]}


def fugaku_mpi_validation(system: SystemSpec) -> list[dict]:
    return [predict_mpi_row(system, row) for row in fugaku_mpi_rows()]
