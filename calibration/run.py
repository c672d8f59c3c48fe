"""``calibrate``: measure on this node (and across ranks under mpiexec), fit, assemble
the calibration file. Also the refit of several files' measurements together."""

from __future__ import annotations

from perfmodel.model import ModelSpec

from . import calfile
from .collectives import (fit_collectives, measure_collectives, network_from_fits,
                          quick_sizes, default_sizes)
from .fit import fit_compute
from .measure import (FIT_CONFIGS, gemm_shapes, measure_checkpoint, measure_gemms,
                      measure_kernels, measure_steps, message_sizes)

COLLECTIVE_KEYS = ("kind", "op", "ranks", "bytes", "seconds")


def fit_all(host: dict, measurements: list[dict], source: str = "") -> dict:
    """Collectives first (a multi-rank step needs them), then compute."""
    collective = [{k: m[k] for k in COLLECTIVE_KEYS} for m in measurements
                  if m["kind"] == "collective"]
    fits = fit_collectives(collective) if collective else {}
    network = network_from_fits(fits) if fits else None
    _, compute = fit_compute(measurements, threads=int(host.get("threads") or 1),
                             ranks=int(host.get("ranks") or 1), network=network, source=source)
    writes = [m for m in measurements if m["kind"] == "checkpoint"]
    storage = {}
    if writes:
        best = max(writes, key=lambda m: m["bytes"] / m["seconds"])
        storage = {"checkpoint_write_bytes_per_s": best["bytes"] / best["seconds"],
                   "bytes": best["bytes"], "directory": best["directory"]}
    return {"compute": compute, "collectives": fits, "storage": storage}


def calibrate(model: ModelSpec | None = None, quick: bool = False, comm=None, threads: int = 1,
              progress=None, checkpoint_dir: str = ".", extra: list[dict] = ()) -> dict | None:
    """Measure and fit; the calibration file's contents on rank 0 (None elsewhere).
    ``checkpoint_dir``: where checkpoints will go (rank 0 times a write there);
    ``extra``: more fit records (from training runs, measure.records_from_training).
    The machine's contention over the measurement is assessed (calibration.contention)
    and kept in the file as ``contention``; judging it is the caller's."""
    from trainer.distributed import SingleProcess
    from trainer.host import ContentionMeter, host_facts, node_ranks

    from .contention import assess, repeat_spread

    comm = comm or SingleProcess()
    lead = comm.rank == 0
    local = node_ranks(comm.size)
    meter = ContentionMeter(local)
    say = progress if (progress and lead) else None
    repeat = 3 if quick else 7
    records = measure_gemms(gemm_shapes(model, quick), repeat, say)
    records += measure_kernels(repeat, quick, say)
    steps = measure_steps(FIT_CONFIGS, 16,
                          comm if comm.size > 1 else None, say)
    collectives = []
    if comm.size > 1:
        if say:
            say("MPI collectives", 0, 1)
        # the sweep, and the model's own TP all-reduces and pipeline sends at their sizes
        sizes = sorted(set(quick_sizes() if quick else default_sizes())
                       | set(message_sizes(model, quick)))
        collectives = measure_collectives(comm.comm, sizes, repeat=3 if quick else 5)
    if lead:
        if say:
            say(f"checkpoint write into {checkpoint_dir}", 0, 1)
        records.append(measure_checkpoint(checkpoint_dir, (64 if quick else 256) * 2**20))
    window = meter.stop()
    mine = [dict(r, rank=comm.rank) for r in records + steps]
    everyone = comm.comm.gather(mine, root=0) if comm.size > 1 else [mine]
    if not lead:
        return None
    measurements = [r for rank in everyone for r in rank] + collectives + list(extra)
    host = host_facts(threads, comm.library, comm.size)
    host["quick"] = quick
    host["model"] = model.name if model is not None else None
    conditions = assess(window, threads, local, repeat_spread(records + steps))
    return calfile.new(host, measurements, fit_all(host, measurements), conditions)


def refit(files: list[dict], extra: list[dict] = ()) -> dict:
    """One calibration from the measurements of several files (nodes, days); its
    contention is the worst the files recorded."""
    host, measurements, worst = calfile.merge(files)
    measurements += list(extra)
    host = dict(host, merged_files=len(files))
    return calfile.new(host, measurements, fit_all(host, measurements), worst)
