"""``fugakuperf calibrate`` and ``fugakuperf validate``: wiring only (calibration/)."""

from __future__ import annotations

import json
import sys

import click

from .options import Real, Registered
from .toplevel import emit


def _progress(what: str, i: int, n: int) -> None:
    click.echo(f"  [{i + 1}/{n}] {what}", err=True)


def _setup(threads, default=None):
    """Thread pools first (before numpy loads), then the communicator. Threads per rank:
    ``threads``, else ``default``, else the cores other work leaves free, shared among
    this node's ranks (trainer.host.default_threads)."""
    import trainer  # noqa: F401  (sets the thread-pool environment)
    from trainer.distributed import world
    from trainer.host import default_threads, set_threads
    comm = world()
    # every rank looks at the machine; rank 0's answer holds for all (one setting per fit)
    used = set_threads(threads or default or comm.broadcast(default_threads(comm.size)))
    return comm, used


def _say_contention(assessment: dict | None, when: str) -> None:
    """A warning line when measurements were (or would be) taken on a busy machine;
    ``when`` starts it ("before measuring, the machine is")."""
    from calibration.contention import summary
    if assessment and assessment["verdict"] in ("noisy", "contended"):
        click.echo(f"warning: {when} {summary(assessment)}", err=True)


def _check_quiet(comm, threads: int, allow: bool) -> None:
    """Refuse, before any measuring, to calibrate a machine so busy that its timings
    could be 20% too long (calibration.contention), unless ``allow``."""
    import time

    from calibration.contention import assess, summary
    from trainer.host import IDLE_SAMPLE_S, ContentionMeter, node_ranks
    local = node_ranks(comm.size)
    meter = ContentionMeter(local)
    time.sleep(IDLE_SAMPLE_S)             # a short look at the machine while idle
    now = comm.broadcast(assess(meter.stop(), threads, local))   # rank 0's look decides
    if now["verdict"] == "contended" and not allow:
        raise click.ClickException(
            f"the machine is too busy to calibrate: {summary(now)}. Calibrate on a quiet "
            f"node, with fewer --threads, or keep the measurements anyway with "
            f"--allow-contention (the file then records the contention)")
    if comm.rank == 0:
        _say_contention(now, "before measuring, the machine is")


def _training_records(paths, threads: int) -> list[dict]:
    """Fit records from `fugakuperf train --measurements` files, refused by name when
    unreadable or measured with other threads per rank than the fit's."""
    from calibration.measure import records_from_training
    from fpcore.errors import SpecError
    from fpcore.readers import read_json
    out = []
    for path in paths:
        rec = read_json(path, "add-record")
        host = rec.get("host") if isinstance(rec, dict) else None
        got = host.get("threads") if isinstance(host, dict) else None
        if got is not None and got != threads:
            raise SpecError("add-record", f"{path} ran {got} thread(s) per rank; this fit has "
                                          f"{threads}")
        out += records_from_training(rec, str(path))
    return out


@click.command()
@click.option("--quick", is_flag=True,
              help="Fewer repeats, kernel sizes and model GEMM shapes (seconds on a 2-core "
                   "machine; well under 3 minutes with --model).")
@click.option("--model", "model_name", metavar="PRESET|FILE",
              help="Also time the GEMMs of this model's layers on each TP split.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="calibration.json",
              show_default=True, help="Calibration file to write (atomically).")
@click.option("--refit", "refit_paths", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Measure nothing: fit the measurements of these calibration "
              "files together (other nodes, other days); repeat the option for each file.")
@click.option("--add-record", "record_paths", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Also fit the kernels and steps of a training run: a "
              "`fugakuperf train --measurements FILE` record (same threads per rank); repeat "
              "for several.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, exists=True), default=".",
              show_default=True, help="Where training checkpoints will be written (e.g. the "
              "shared file system): a checkpoint write is timed there.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads per rank (default: the cores, shared among the ranks of a node).")
@click.option("--allow-contention", is_flag=True,
              help="Measure even when other work or a hypervisor could make timings 20% too "
                   "long (refused by default; the file records the conditions either way).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary as JSON.")
def calibrate(quick, model_name, out_path, refit_paths, record_paths, checkpoint_dir, threads,
              allow_contention, as_json):
    """Measure this node and fit the simulator's parameters to it.

    \b
    Measures, on the node it runs on:
      - GEMMs: a size sweep, and with --model the model's GEMMs on each TP split;
      - memory-bound kernels (layernorm, GELU, softmax, residual, cross-entropy,
        embedding, optimizer) as achieved bandwidth;
      - trainer steps on a few configurations, every kernel timed;
      - under mpiexec, also MPI collectives between the ranks (8 B to 256 MiB);
      - a checkpoint write (fsync'd) into --checkpoint-dir.
    then fits GEMM rate over shape, bandwidth per kernel class, per-op overheads and
    alpha-beta per collective (scipy least_squares), and writes FILE with the raw
    measurements, the fit and the host's facts.

    \b
    Timings describe the machine only when it is quiet. By default each rank runs
    on the cores other work leaves free; a machine so busy (other work, hypervisor
    steal) that timings could be 20% too long is refused before measuring unless
    --allow-contention, and the conditions over the whole measurement (steal, other
    cores in use, load, spread of repeats) are recorded in FILE and said when noisy.

    \b
    Examples:
      fugakuperf calibrate --quick --out host.json
      mpiexec -n 2 fugakuperf calibrate --out host-2ranks.json
      fugakuperf validate --calibration host.json
      fugakuperf plan --params 13e9 --calibration a64fx-node.json
      fugakuperf calibrate --refit monday.json --refit tuesday.json --out both.json
    """
    comm, used = _setup(threads)            # first: thread pools before numpy loads
    from calibration import calfile
    from calibration.run import calibrate as run, refit
    from fpcore.atomic import target

    target(out_path, "out")                 # before minutes of measuring, not after
    files = [calfile.load(p) for p in refit_paths]
    threads_of_fit = int(files[0]["host"].get("threads") or 1) if files else used
    extra = _training_records(record_paths, threads_of_fit)
    if files:
        data = refit(files, extra)
    else:
        from perfmodel.presets import load_model
        model = load_model(model_name) if model_name else None
        _check_quiet(comm, used, allow_contention)
        if comm.rank == 0:
            click.echo(f"calibrating {'(quick) ' if quick else ''}on {comm.size} rank(s) x "
                       f"{used} thread(s)", err=True)
        data = run(model, quick, comm, used, _progress, checkpoint_dir, extra)
        if data is None:              # not rank 0
            return
    calfile.save(out_path, data)
    _say_contention(data.get("contention"), f"while {out_path} was measured, the machine was")
    summary = {"out": out_path, "compute": data["fit"]["compute"],
               "collectives": data["fit"]["collectives"],
               "storage": data["fit"].get("storage") or {}, "host": data["host"],
               "contention": data.get("contention")}
    emit(summary, as_json, "render_calibration")


@click.command()
@click.option("--calibration", "calibration_path", metavar="FILE",
              type=click.Path(dir_okay=False), help="The calibration file to check on this "
              "machine's trainer.")
@click.option("--against", "against_path", metavar="FILE.csv", type=click.Path(dir_okay=False),
              help="Instead: predict every run logged in FILE.csv (columns: --schema; shipped "
                   "logs: perfmodel/data/validation/runs_*.csv, or `selene`/`fugaku` for "
                   "those) and compare with what was measured.")
@click.option("--stack", metavar="NAME",
              help="With --against: the software stack of runs whose row names none "
                   "(default: each system preset's default stack).")
@click.option("--schema", is_flag=True,
              help="Print the columns of a run log (for --against) and exit.")
@click.option("--update-evidence", is_flag=True,
              help="Re-predict every shipped run log and rewrite the evidence the bands of "
                   "plan, simulate and report rest on (perfmodel/data/validation/"
                   "evidence.csv), after a change to the model or a preset.")
@click.option("--steps", type=click.IntRange(min=1), default=16, show_default=True,
              help="Timed trainer steps per case (the fastest is compared).")
@click.option("--quick", is_flag=True, help="Twelve timed steps per case.")
@click.option("--parallel", is_flag=True,
              help="With --calibration, under mpiexec -n 2 (or 4): tensor- and pipeline-"
                   "parallel trainer runs (TP2, PP2; on 4 ranks TP2 x PP2 too) against the "
                   "DES of the same layouts, stage by stage (compute, TP, DP, optimizer, "
                   "and the pipeline's transfers and bubble).")
@click.option("--max-error", type=Real(lo=0), metavar="X",
              help="Exit 1 if the largest absolute error exceeds X (e.g. 0.2).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Threads per rank (must match the calibration's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def validate(calibration_path, against_path, stack, schema, update_evidence, steps, quick,
             parallel, max_error, threads, as_json):
    """Predicted against measured: trainer runs the fit never saw, or logged runs.

    With --calibration: runs the trainer on held-out configurations (other widths,
    depths, sequence lengths, batches; data parallel under mpiexec) and simulates each
    with the DES on the calibrated `host` system.

    With --against: simulates every logged run of a CSV (published runs ship: `selene`
    is Megatron-LM on Selene, Narayanan et al. 2021 and Korthikanti et al. 2022;
    `fugaku` is early Megatron-LM runs on the deepspeedfugaku-2023 stack, which
    `fugakuperf fit-stack fugaku_fit` fits on other runs) with the presets and each
    row's software stack unchanged, searching the micro-batch where the log does not
    give it.

    \b
    Examples:
      fugakuperf validate --calibration host.json --max-error 0.2
      mpiexec -n 2 fugakuperf validate --calibration host-2ranks.json
      mpiexec -n 2 fugakuperf validate --calibration host-2ranks.json --parallel
      fugakuperf validate --against selene
      fugakuperf validate --against my_runs.csv --json
      fugakuperf validate --against old_runs.csv --stack deepspeedfugaku-2023
      fugakuperf validate --schema
      fugakuperf validate --update-evidence

    Each predicted run also gets its 80% band from the published runs of the other
    logs (perfmodel/evidence.py), and the summary says how often the measured time
    fell inside: a check of the bands plan prints.
    """
    from fpcore.errors import SpecError
    given = [name for name, value in (("--calibration", calibration_path),
                                      ("--against", against_path), ("--stack", stack))
             if value is not None]
    if update_evidence:
        if given or schema:
            raise SpecError("update-evidence", f"re-predicts the shipped logs and exits; give "
                                               f"it alone, not with "
                                               f"{', '.join(given) or '--schema'}")
        from calibration.against import write_evidence
        path = write_evidence(progress=None if as_json else _progress)
        click.echo(json.dumps({"evidence": str(path)}) if as_json else f"wrote {path}")
        return
    if schema:
        if given:
            raise SpecError("schema", f"prints the run-log columns and exits; give it alone, "
                                      f"not with {', '.join(given)}")
        import calibration.against
        click.echo(calibration.against.__doc__.strip())
        return
    if (calibration_path is None) == (against_path is None):
        raise SpecError("calibration", "give --calibration FILE (held-out trainer runs on this "
                                       "machine) or --against FILE.csv (logged runs), one of them")
    if parallel and against_path is not None:
        raise SpecError("parallel", "applies to --calibration (trainer runs on this machine)")
    if against_path is not None:
        _validate_against(against_path, max_error, as_json, stack)
        return
    if stack is not None:
        raise SpecError("stack", "applies to --against (a trainer validation runs on this "
                                 "machine's own stack)")
    import trainer  # noqa: F401  (the thread-pool environment, before numpy loads)
    from calibration import calfile
    from calibration.host import host_system
    from calibration.validate import references_from, validate as run

    data = calfile.load(calibration_path)
    host = data["host"]
    comm, used = _setup(threads, default=host.get("threads"))   # validate as calibrated
    for key, mine in (("ranks", comm.size), ("threads", used)):
        if int(host.get(key) or 1) != mine:
            raise SpecError("calibration", f"{calibration_path} was measured with {key} "
                                           f"{host.get(key)}; this run has {mine}. Validate "
                                           f"as you calibrated (same mpiexec -n and --threads)")
    system = host_system(data, calibration_path)
    if parallel:
        from calibration.validate import validate_parallel
        result = validate_parallel(system, comm, steps=12 if quick else steps,
                                   progress=_progress if comm.rank == 0 else None,
                                   threads=used, references=references_from(data),
                                   calibrated=data.get("contention"))
    else:
        result = run(system, steps=12 if quick else steps,
                     comm=comm if comm.size > 1 else None,
                     progress=_progress if comm.rank == 0 else None,
                     references=references_from(data), threads=used,
                     calibrated=data.get("contention"))
    if comm.rank != 0:
        return
    emit(result, as_json, "render_validation_parallel" if parallel else "render_validation")
    if max_error is not None and result["max_abs_error"] > max_error:
        click.echo(f"error: max |error| {result['max_abs_error']:.1%} exceeds --max-error "
                   f"{max_error:.1%}", err=True)
        sys.exit(1)


def _validate_against(path: str, max_error, as_json: bool, stack: str | None) -> None:
    from calibration.against import log_path, validate_against
    path = log_path(path)
    result = validate_against(path, progress=None if as_json else _progress, stack=stack)
    emit(result, as_json, "render_validation_against")
    failed = result["failed"]
    if failed:                           # after every other row is printed: exit 2
        from fpcore.errors import SpecError
        raise SpecError("against", f"{len(failed)} of {len(result['rows'])} row(s) of {path} "
                                   f"could not be predicted ({', '.join(failed[:5])}"
                                   f"{', ...' if len(failed) > 5 else ''}); each says why above")
    if max_error is not None and result["max_abs_error"] > max_error:
        click.echo(f"error: max |error| {result['max_abs_error']:.1%} exceeds --max-error "
                   f"{max_error:.1%}", err=True)
        sys.exit(1)


@click.command("fit-stack")
@click.argument("runs", metavar="RUNS.csv")
@click.option("--stack", required=True, metavar="NAME",
              help="The software stack to fit: one of the system preset's stacks "
                   "(`fugakuperf presets --system fugaku`).")
@click.option("--param", "params", multiple=True,
              type=Registered("calibration.stackfit:FITTABLE"),
              help="A stack parameter to fit (repeat). Default: kernel_bytes_per_cycle.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fit_stack(runs, stack, params, as_json):
    """Fit a software stack's efficiencies to logged runs (RUNS.csv, the schema of
    `validate --against`; `fugaku_fit` is the shipped log of early Fugaku runs).

    Least squares on log(predicted / measured) over every run, each priced by the
    analytic model with the preset's other values unchanged. Prints each run's
    error, the fitted values and the preset lines to paste under the stack. Fit on
    some runs and check on others with `fugakuperf validate --against`.

    \b
    Examples:
      fugakuperf fit-stack fugaku_fit --stack deepspeedfugaku-2023
      fugakuperf fit-stack my_runs.csv --stack mystack --param gemm_efficiency --json
    """
    from calibration.against import log_path
    from calibration.stackfit import DEFAULT_PARAMS, fit_stack as fit

    path = log_path(runs)
    if not as_json:
        click.echo(f"fitting {', '.join(params or DEFAULT_PARAMS)} of stack {stack} on "
                   f"{path} ...", err=True)
    result = fit(path, stack, params or DEFAULT_PARAMS)
    emit(result, as_json, "render_stack_fit")
