"""Predictions checked against published measurements shipped with fugakuperf.

``perfmodel/data/validation/fugaku_mpi.csv`` holds RIKEN's Intel MPI Benchmarks
figures on Fugaku (perf-mpi, 2022), each row with its source.
``perfmodel/data/validation/korthikanti_memory.csv`` holds Korthikanti et al.
2022's per-GPU memory (Fig. 1) for their Table 5 configurations.
"""

from __future__ import annotations

import csv
from importlib import resources

from fpcore.errors import SpecError

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


# ------------------------------------------------------------------ memory
GIB = 2**30


def korthikanti_memory_rows() -> list[dict]:
    path = resources.files("perfmodel.data") / "validation" / "korthikanti_memory.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


def predict_memory_row(row: dict) -> list[dict]:
    """The model's per-GPU memory for one row of Korthikanti et al. 2022 Fig. 1.

    Like the figure, both quantities cover the transformer layers of the first
    pipeline stage: model states of those layers (fp16 mixed precision with Adam,
    18 bytes per parameter, no ZeRO), and the activations the stage holds at its
    peak under Megatron-LM's (interleaved) 1F1B schedule, without recomputation
    and with sequence parallelism + selective recomputation. The embedding, which
    the figure leaves out, is left out here too (it is in ``stage_memory``).
    """
    from .layout import Layout
    from .memory import activation_bytes_per_layer, in_flight_layers, layer_params_per_rank
    from .precisions import STATE_BYTES
    from .model import ModelSpec

    model = ModelSpec(layers=int(row["layers"]), hidden=int(row["hidden"]),
                      heads=int(row["heads"]), vocab=int(row["vocab"]), seq=int(row["seq"]),
                      name=row["model"])
    tp, pp, mb, v = (int(row[k]) for k in ("tp", "pp", "micro_batch", "interleave"))
    out = []
    states = model.layers / pp * layer_params_per_rank(model, tp) * sum(STATE_BYTES["fp16"])
    out.append({"model": row["model"], "quantity": "params_and_optimizer",
                "measured_gib": float(row["params_and_optimizer_gib"]),
                "predicted_gib": states / GIB})
    for mode, sp, column in (("none", False, "activations_no_recompute_gib"),
                             ("selective", True, "activations_seqpar_selective_gib")):
        layout = Layout(tp=tp, pp=pp, dp=1, micro_batch=mb, global_batch=int(row["global_batch"]),
                        schedule="interleaved" if v > 1 else "1f1b", virtual_stages=v,
                        recompute=mode, sequence_parallel=sp, precision="fp16")
        acts = in_flight_layers(model, layout, 0) * activation_bytes_per_layer(
            model, tp, mb, sp, mode, "fp16")
        out.append({"model": row["model"], "quantity": column.removesuffix("_gib"),
                    "measured_gib": float(row[column]), "predicted_gib": acts / GIB})
    for r in out:
        r["error"] = r["predicted_gib"] / r["measured_gib"] - 1.0
    return out


def korthikanti_memory_validation() -> list[dict]:
    return [r for row in korthikanti_memory_rows() for r in predict_memory_row(row)]
