"""``fugakuperf sweep``: a co-design sweep of hardware points (perfmodel.sweep)."""

from __future__ import annotations

import os

import click

from fpcore.errors import SpecError


def _default_out(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}.results.jsonl"


@click.command()
@click.argument("sweep_file", metavar="SWEEP.toml", type=click.Path(dir_okay=True))
@click.option("--out", help="Results file, JSON lines: a header, then one record per hardware "
                            "point (default: SWEEP.results.jsonl in this folder). If it holds "
                            "some points of the same sweep, the run resumes after them.")
@click.option("--restart", is_flag=True, help="Start again, replacing --out's results.")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="Local worker processes (default: one per core). Under mpiexec the "
                   "ranks are the workers instead.")
@click.option("--html", "html_out", help="Also write the sweep's page (Pareto fronts, "
                                         "sensitivity) to this HTML file.")
@click.option("--list", "list_only", is_flag=True,
              help="Print the knobs, models and point count, and stop.")
@click.option("--quiet", is_flag=True, help="No progress line on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sweep(sweep_file, out, restart, workers, html_out, list_only, quiet, as_json):
    """Co-design: plan models on many hardware points, for the machine to build.

    SWEEP.toml names a base system, the hardware values to vary (per-node peak per
    precision, memory capacity and bandwidth, link and injection bandwidth, torus
    shape, node budget, power per node, price per node-hour), the models, a cost model
    and constraints (days, MW, cost). Every point is the base system with the point's
    values written into it (each with a [sweep] source); the planner's own search
    finds each model's best layout there, and the point's record keeps the time to
    train with its 80% band, energy, power, cost, MFU and layout.

    \b
    Examples:
      fugakuperf sweep fugaku-successor                 run (or resume) a shipped sweep
      fugakuperf sweep fugaku-successor --html s.html   ... and draw its page
      fugakuperf sweep fugaku-llm-changes               one hardware change at a time
      fugakuperf sweep my_sweep.toml --list             knobs, models, points
      mpiexec -n 4 fugakuperf sweep my_sweep.toml       points over MPI ranks

    \b
    The sweep file (values, or {from, to, steps, scale = "log"}):
      [sweep]    system = "fugaku", nodes = 13824 (the budget; jobs of job_share = 0.5
                 of it to all of it), design = "grid" | "one-at-a-time",
                 objective = "model" | "median" | "p90", network = "analytic" | "system"
                 (the shortlist re-priced by the preset's network model: the flow
                 level, shared by the points on one network), confirm = shapes it
                 re-prices per model
      [vary]     fp16_tflops, fp32_tflops, bf16_tflops, memory_gib,
                 memory_bandwidth_gbs, link_bandwidth_gbs, injection_bandwidth_gbs,
                 torus ("24x23x24x2x3x2"), nodes, power_w, price_per_node_hour
      [[models]] params = 13e9 | preset = "...", label, tokens, global_batch, seq,
                 precision (one, or a list: the fastest), pins = {tp = 6, pp = 8, ...}
      [cost]     node_hour_price, currency, shares = {compute, memory,
                 memory_bandwidth, network}, energy_price_per_mwh
      [constraints] days, mw, cost

    Results are written in point order, one whole line per point, so the file is the
    same bytes whatever the number of workers; a killed sweep resumes from the
    points already written.
    """
    from perfmodel.sweep import read_sweep
    from perfmodel.sweep_summary import summary
    from perfmodel.sweep_run import Progress, mpi_world, read_results
    from reports.sweep import render_sweep_text
    from .toplevel import emit

    world = mpi_world()                      # 0: not under mpiexec
    rank = 0
    if world:
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
    from fpcore.atomic import not_an_input, target
    spec = read_sweep(sweep_file)
    out = out or _default_out(sweep_file)
    not_an_input(out, "out", {"sweep": spec.path})
    if html_out is not None:
        target(html_out, "html")
        not_an_input(html_out, "html", {"sweep": spec.path})
        if os.path.realpath(html_out) == os.path.realpath(out):
            raise SpecError("html", f"{html_out:.200} is the --out results file; give "
                                    f"another path")
    if list_only:
        if rank == 0:
            _list(spec, as_json)
        return
    problem, done = None, 0
    if rank == 0:
        try:
            target(out, "out")
            if not restart:                  # another sweep's file: refused before any work
                done = len(read_results(out, spec)[1])
        except SpecError as e:
            problem = e
    if world > 1:                            # every rank stops on the root's bad input
        from mpi4py import MPI
        problem = MPI.COMM_WORLD.bcast(problem, root=0)
    if problem is not None:
        if rank == 0:
            raise problem
        return
    n = world or workers or _cores()
    if rank == 0 and not quiet:
        where = f"MPI rank{'s' if n > 1 else ''}" if world else f"worker{'s' if n > 1 else ''}"
        click.echo(f"sweep: {spec.points:,} hardware points x {len(spec.models)} models on "
                   f"{n} {where}" + (f", {done:,} already in {out}" if done else ""), err=True)
    progress = Progress(spec.points, done, quiet=quiet)
    if world:
        records = _run_mpi(spec, out, restart, progress)
        if records is None:                  # a worker rank: the root reports
            return
    else:
        records = _run_local(spec, out, restart, n, progress)
    result = summary(spec, records)
    result["results_file"] = out
    if html_out is not None:
        from fpcore.atomic import atomic_write
        from reports.sweep import render_sweep_html
        atomic_write(html_out, render_sweep_html(result).encode(), field="html")
        result["html"] = html_out
    if as_json:
        emit(result, True, "")
    else:
        click.echo(render_sweep_text(result))


def _cores() -> int:
    from perfmodel.parallel import workers
    return workers()


def _run_local(spec, out, restart, n, progress):
    from perfmodel.sweep_run import run
    if n <= 1:
        return run(spec, out, restart=restart, progress=progress)
    from perfmodel.parallel import process_pool
    with process_pool(n) as pool:
        return run(spec, out, executor=pool, restart=restart, progress=progress)


def _run_mpi(spec, out, restart, progress):
    """Under mpiexec: rank 0 writes the results and runs points too; the other ranks
    serve mpi4py.futures tasks (one rank: rank 0 alone). Returns the records on rank
    0, None elsewhere."""
    from mpi4py import MPI
    from mpi4py.futures import MPICommExecutor
    from perfmodel.sweep_run import run
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return run(spec, out, restart=restart, progress=progress)
    with MPICommExecutor(comm, root=0) as executor:
        if executor is None:
            return None
        return run(spec, out, executor=executor, restart=restart, progress=progress,
                   local_share=True)


def _list(spec, as_json: bool = False) -> None:
    base = spec.base_values()
    from perfmodel.sweep import KNOBS
    if as_json:
        from fpcore.readers import dumps
        click.echo(dumps({
            "title": spec.title, "points": spec.points, "design": spec.design,
            "system": spec.system_name,
            "knobs": [{"name": name, "unit": KNOBS[name].unit, "values": list(values),
                       "base": base[name]} for name, values in spec.knobs],
            "models": [{"label": m.label, "params": m.model.params, "tokens": m.tokens,
                        "global_batch": m.global_batch, "precisions": list(m.precisions)}
                       for m in spec.models]}, indent=2))
        return
    click.echo(f"{spec.title}: {spec.points:,} hardware points ({spec.design}) on "
               f"{spec.system_name}, {len(spec.models)} model(s)")
    for name, values in spec.knobs:
        k = KNOBS[name]
        shown = ", ".join(map(str, values[:8])) + (" ..." if len(values) > 8 else "")
        click.echo(f"  {name:<24} {len(values):>5} value(s): {shown} {k.unit}  "
                   f"(base {base[name]})")
    for m in spec.models:
        click.echo(f"  model {m.label}: {m.model.params / 1e9:.3g}B parameters, "
                   f"{m.tokens / 1e9:.4g}B tokens, global batch {m.global_batch:,}, "
                   f"precision {' or '.join(m.precisions)}")

