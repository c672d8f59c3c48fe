"""The ``fugakuperf`` command line. Wiring only: the models live in perfmodel/ etc.

Heavy modules are imported inside the commands so that ``--help`` is instant.
"""

from __future__ import annotations

import time

import click

from fpcore.errors import SpecError

from .options import (BYTES, INT_LIST, NUMBER, Real, Registered, layout_options, model_options,
                      pins_from, resolve_inputs, system_from, system_options)
from .toplevel import Commands, emit, emit_each


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"],
                                             "max_content_width": 100})
@click.version_option(package_name="fugakuperf", prog_name="fugakuperf")
def main():
    """Plan and predict LLM training on Fugaku-class supercomputers.

    \b
    Start here:
      fugakuperf plan --params 13e9                 best layouts for a 13B model
      fugakuperf plan --model fugaku-llm-13b --nodes 13824 --tp 6 --pp 8 \\
                      --recompute full --recompute-stages 4   (Fugaku-LLM's run)
      fugakuperf presets                            models and systems, with sources
      fugakuperf train --layers 2 --hidden 64 --heads 4 --seq 64 --data text.txt
                                                    the reference trainer, measured
      fugakuperf calibrate --out node.json          measure this node; then
      fugakuperf validate --calibration node.json   check predictions against it
      fugakuperf validate --against selene          ... and against published runs
      fugakuperf sweep fugaku-successor             which machine to build (co-design)

    Every default traces to a sourced fact (see `fugakuperf presets --system fugaku`).
    """


@main.command()
@model_options
@system_options
@click.option("--nodes", type=INT_LIST,
              help="Exact node count(s) to plan for, e.g. 13824 or 384,1536. Default: a ladder "
                   "of job sizes (384 ... 13,824), each row the best on at most that many nodes.")
@click.option("--max-nodes", type=click.IntRange(min=1),
              help="Node budget for the default ladder (default 13,824, Fugaku-LLM's job).")
@click.option("--global-batch", "--global-batch-size", type=click.IntRange(min=1),
              help="Global batch in sequences (default: Fugaku-LLM's 4.13 M tokens, "
                   "2016 x 2048).")
@click.option("--tokens", type=NUMBER, help="Tokens to train (default 20 per parameter).")
@layout_options
@click.option("--top", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many layouts to list.")
@click.option("--confirm", "confirm_shapes", type=click.IntRange(1, 100_000),
              help="How many (tp, pp, dp) shapes per job size the flow-level torus model "
                   "re-prices after the fast screening (default and least: --top). More is "
                   "slower and more thorough.")
@click.option("--price-per-node-hour", type=Real(lo=0, lo_open=True),
              help="Adds a cost column: node-hours x this price (any currency).")
@click.option("--objective", type=click.Choice(["p90", "median", "model"]), default="p90",
              show_default=True,
              help="What layouts are ranked by: p90, the slow end of each layout's 80% band "
                   "(robust to the model's errors where it has no evidence); median, the "
                   "prediction corrected by the model's bias in the layout's regime; model, "
                   "the model's own number.")
@click.option("--days", type=Real(lo=0, lo_open=True, hi=36500),
              help="Ask the inverse question: the largest model (by the --params rule) that "
                   "trains to --tokens (20 per parameter) within this many days on the node "
                   "budget (--nodes N or --max-nodes), by the --objective's time.")
@click.option("--budget-node-hours", type=Real(lo=0, lo_open=True),
              help="With --days: the run may also use at most this many node-hours.")
@click.option("--max-mw", type=Real(lo=0, lo_open=True),
              help="With --days: the job may draw at most this many MW (nodes x the "
                   "system's power per node).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of tables.")
def plan(**kw):
    """Best parallel layouts, throughput, memory, time and cost to train.

    Searches tensor (TP), pipeline (PP) and data (DP) parallelism, micro-batch,
    schedule, ZeRO stage, recomputation and sequence parallelism; proposes only
    layouts Megatron-LM or DeepSpeed run, rejects those that do not fit in memory,
    and ranks the rest by predicted iteration time. Pin any field (--tp 6 --pp 8
    ...) to search the rest: the answer then says how the pinned layout ranks
    against the best unpinned one at the same precision, and why.

    Every layout shown has an 80% band (the published runs in its regime and how far
    the model missed them, and the declared ranges of the preset's assumed values)
    and an evidence count; by default layouts are ranked by the band's slow end, so
    the answer does not chase the model's most optimistic regime.

    \b
    Examples:
      fugakuperf plan --params 13e9
      fugakuperf plan --model llama2-70b --max-nodes 27648 --tokens 2T
      fugakuperf plan --model fugaku-llm-13b --nodes 13824 --tp 6 --pp 8 --global-batch 2016
      fugakuperf plan --params 13B --json | jq '.best[0]'
      fugakuperf plan --days 30 --nodes 4096        the largest model in 30 days
    """
    from perfmodel.plan import plan as run_plan
    from reports.views import plan_to_dict
    if kw["days"] is not None:
        return _inverse_plan(kw)
    for name in ("budget_node_hours", "max_mw"):
        if kw[name] is not None:
            raise SpecError(name.replace("_", "-"), "limits the inverse question: give --days too")
    model, system = resolve_inputs(kw)
    pins = pins_from(kw)
    result = run_plan(model, system, global_batch=kw["global_batch"], tokens=kw["tokens"],
                      nodes=kw["nodes"], max_nodes=kw["max_nodes"], pins=pins, top=kw["top"],
                      price_per_node_hour=kw["price_per_node_hour"],
                      confirm_shapes=kw["confirm_shapes"], objective=kw["objective"])
    emit(plan_to_dict(result), kw["as_json"], "render_plan")


def _inverse_plan(kw: dict) -> None:
    """``plan --days D``: the largest model that trains within the limits."""
    from perfmodel.capacity import largest_model
    from perfmodel.plan import DEFAULT_MAX_NODES
    from reports.views import inverse_to_dict
    given = [k for k in ("params", "model_name", "from_megatron", "layers", "hidden", "heads",
                         "kv_heads", "ffn", "vocab", "seq") if kw.get(k) is not None]
    if given:
        raise SpecError(given[0].replace("_name", "").replace("_", "-"),
                        "--days asks which model fits: the --params rule picks its shape "
                        "(leave the model out)")
    pins = pins_from(kw)
    if pins:
        raise SpecError(next(iter(pins)).replace("_", "-"),
                        "--days searches every layout; pinning one is not supported there")
    system = system_from(kw)
    if kw["nodes"] is not None and len(kw["nodes"]) != 1:
        raise SpecError("nodes", "with --days give one node budget (--nodes N)")
    if kw["nodes"] is not None and kw["max_nodes"] is not None:
        raise SpecError("nodes", "give --nodes or --max-nodes, not both")
    budget = (kw["nodes"] or [kw["max_nodes"] or min(DEFAULT_MAX_NODES, system.network.nodes)])[0]
    limit = "node budget"
    if kw["max_mw"] is not None:
        if not system.node.power_w:
            raise SpecError("max-mw", f"needs a node's power, which {system.name} does not "
                                      f"give (node.power_w is 0)")
        by_power = int(kw["max_mw"] * 1e6 // system.node.power_w)
        if by_power < budget:
            budget, limit = by_power, f"{kw['max_mw']:g} MW at {system.node.power_w:g} W a node"
        if budget < 1:
            raise SpecError("max-mw", f"is less than one node's {system.node.power_w:g} W")
    system.check_nodes(budget, "the node budget")
    if kw["tokens"] is not None:
        from perfmodel.plan import check_tokens
        check_tokens(kw["tokens"])
    click.echo(f"[plan] the largest model within {kw['days']:g} days on {budget:,} nodes: "
               f"bisection over model sizes (about half a minute)", err=True)

    tried = []

    def progress(params: int, network: str, fits: bool) -> None:
        tried.append({"params": params, "network_model": network, "fits": fits})
        click.echo(f"[plan] {params / 1e9:,.3g} B parameters ({network}): "
                   f"{'fits' if fits else 'too slow'}", err=True)
    found = largest_model(system, budget, kw["days"], tokens=kw["tokens"],
                          global_batch=kw["global_batch"], objective=kw["objective"],
                          node_hours=kw["budget_node_hours"], progress=progress)
    emit(inverse_to_dict(system, budget, limit, kw, found, tried),
         kw["as_json"], "render_inverse")


@main.command()
@model_options
@system_options
@click.option("--nodes", type=INT_LIST,
              help="Nodes in the job (or give --tp, --pp and --dp); a list (1536,6912,13824) "
                   "simulates the layout for each, in a table.")
@click.option("--global-batch", "--global-batch-size", type=click.IntRange(min=1),
              help="Global batch in sequences (default: Fugaku-LLM's 4.13 M tokens).")
@layout_options
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Write a Chrome trace (Perfetto, chrome://tracing): a track per stage, "
                   "per stage's sends and per data-parallel stream.")
@click.option("--jitter", type=Real(0, 1), default=0.0, show_default=True,
              help="Per-segment compute jitter: the sigma of a lognormal factor on each "
                   "compute segment, at most 1 (then one segment in six is 2.7x slower).")
@click.option("--stragglers", type=Real(0, 1), default=0.0, show_default=True,
              help="Fraction of slow nodes; a stage is slow if any node of its TP groups in any "
                   "DP replica is.")
@click.option("--straggler-slowdown", type=Real(1, 100), default=1.5,
              show_default=True, help="How much slower a slow node computes.")
@click.option("--runs", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="With --jitter or --stragglers: simulate this many seeds (--seed, --seed + "
                   "1, ...) and report their mean and 99th percentile beside the noise-free "
                   "iteration (1: one sample, said as such).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def simulate(**kw):
    """Simulate one training iteration, event by event (SimPy).

    Pipeline stages run their schedule (GPipe, 1F1B, interleaved, or zero-bubble
    ZB-H1/ZB-H2 with the weight gradients apart) step by step; tensor-parallel
    collectives sit inside every layer; activations and gradients cross the links
    between stages; gradient buckets reduce on a separate stream while the
    backward runs. Pin the layout (--tp --pp and --nodes or --dp) or let
    the search pick the best one for --nodes. Deterministic; --jitter or
    --stragglers add the mean and 99th percentile over --runs seeds beside the
    noise-free time.

    \b
    Examples:
      fugakuperf simulate --model fugaku-llm-13b --nodes 13824 --tp 6 --pp 8 \\
          --global-batch 2016 --recompute full --recompute-stages 4 --trace it.json
      fugakuperf simulate --params 13e9 --nodes 6720 --stragglers 1e-4 --runs 50
      fugakuperf simulate --params 13e9 --nodes 1536,6912,13824 --json
    """
    from fpcore.atomic import not_an_input, target
    from perfmodel.des import (PLAN_STEPS, Noise, Trace, simulate_with_noise, simulated_steps,
                               steps_error)
    from perfmodel.plan import layout_for
    from reports.views import simulation_to_dict
    inputs = {"--model": kw.get("model_name"), "--system": kw.get("system_name"),
              "--calibration": kw.get("calibration_path"),
              "--from-megatron": kw.get("from_megatron")}
    model, system = resolve_inputs(kw)
    pins = pins_from(kw)
    counts = kw["nodes"] or [None]
    if kw["trace_path"]:
        if len(counts) > 1:
            raise SpecError("trace", "one trace file is one iteration: give one node count "
                                     "with --trace")
        target(kw["trace_path"], "trace")      # a path that cannot be written: before any work
        not_an_input(kw["trace_path"], "trace", inputs)
    # every count's layout first: one that cannot run is said before any simulation
    estimates = [layout_for(model, system, nodes=n, global_batch=kw["global_batch"], pins=pins)
                 for n in counts]
    noise = Noise(kw["jitter"], kw["stragglers"], kw["straggler_slowdown"], kw["seed"])
    runs = kw["runs"] if noise.active else 1         # (beside the noise-free one, if noisy)
    for e in estimates:
        err = steps_error(e.layout, runs, noise_free=noise.active)
        if err is not None:
            raise err
        steps = simulated_steps(e.layout, runs + noise.active)
        if steps > PLAN_STEPS:
            click.echo(f"[simulate] {e.nodes:,} nodes: {steps:,} schedule steps to simulate "
                       f"(up to half a minute)", err=True)

    def simulated(est) -> dict:
        trace = Trace() if kw["trace_path"] else None
        t0 = time.perf_counter()
        sim, variability = simulate_with_noise(model, system, est.layout, noise, kw["runs"],
                                               trace=trace)
        wall = time.perf_counter() - t0
        if trace is not None:
            trace.write(kw["trace_path"], field="trace")
        return simulation_to_dict(model, system, est, sim, noise, variability, kw["runs"], wall,
                                  kw["trace_path"])
    emit_each([e.nodes for e in estimates], [lambda e=e: simulated(e) for e in estimates],
              kw["as_json"], "render_simulation", "simulations")


@main.command()
@model_options
@system_options
@click.option("--tokens", type=NUMBER, help="Tokens to train (default 20 per parameter).")
@click.option("--nodes", type=INT_LIST, help="Exact node counts instead of the default ladder.")
@click.option("--max-nodes", type=click.IntRange(min=1),
              help="Node budget for the ladder (default 13,824).")
@click.option("--global-batch", "--global-batch-size", type=click.IntRange(min=1),
              help="Global batch in sequences (default: Fugaku-LLM's 4.13 M tokens).")
@click.option("--days", type=Real(lo=0, lo_open=True), default=30.0,
              show_default=True, help="Deadline for the inverse question: the largest model "
                                      "trainable on the node budget in this many days.")
@click.option("--checkpoint-gbs", type=Real(lo=0, lo_open=True, unit="GB/s"),
              help="Checkpoint write bandwidth per node, GB/s (not published for Fugaku). "
                   "Default: the write measured by the --calibration file, if any, else one "
                   "network link's bandwidth (an assumed upper bound).")
@click.option("--fs-bandwidth-gbs", type=Real(lo=0, lo_open=True, unit="GB/s"),
              help="Aggregate write bandwidth of the file system the checkpoints go to, GB/s. "
                   "Default: an assumed 1,400 (the K computer's job-facing FEFS; Fugaku's is "
                   "not published); the report says so.")
@click.option("--relaunch-minutes", type=Real(lo=0, lo_open=True, unit="minutes"),
              help="Minutes from a failure to training again, before reading the checkpoint "
                   "back (scheduler, process and framework start-up). Default: an assumed 10.")
@layout_options
@click.option("--top", type=click.IntRange(1, 50), default=8, show_default=True,
              help="Layouts compared side by side.")
@click.option("--out", "out_dir", type=click.Path(), required=True,
              help="Directory for index.html, report.md, report.json and the images: new, "
                   "empty, or an earlier report's (replaced whole, never mixed).")
@click.option("--json", "as_json", is_flag=True,
              help="Also print report.json's content on stdout (and the files written).")
def report(**kw):
    """Write a capacity report: what to run, on how many nodes, for how long, at what
    cost and risk, with every assumption traceable.

    Writes OUT/index.html (one self-contained page), OUT/report.md with the images
    beside it, and OUT/report.json with every number shown. Progress goes to stderr.

    \b
    Examples:
      fugakuperf report --params 13e9 --out report13b
      fugakuperf report --model fugaku-llm-13b --tokens 380B --out fugaku-llm
      fugakuperf report --params 13e9 --fs-bandwidth-gbs 500 --relaunch-minutes 30 --out r
      fugakuperf report --model fugaku-llm-13b --nodes 13824 --tp 6 --pp 8 \
          --global-batch 2016 --recompute full --recompute-stages 4 --out fugaku-llm-run

    Pin any layout field as plan takes it and the report studies the best layout
    with the pins: its scaling, timeline, network, sensitivity and reliability, and
    how it ranks against the best unpinned layout.
    """
    from calibration.against import published_checks
    from reports.build import build_report, provenance
    from reports.plots import all_images
    from reports.write import stage, write_report
    model, system = resolve_inputs(kw)
    pins = pins_from(kw)
    provenance(system)                     # a system whose values cannot be listed: now
    staging = stage(kw["out_dir"], field="--out")   # before any work: the output can be made
    try:
        gbs = {k: kw[k] * 1e9 if kw[k] is not None else None
               for k in ("checkpoint_gbs", "fs_bandwidth_gbs")}
        data = build_report(model, system, tokens=kw["tokens"], nodes=kw["nodes"],
                            max_nodes=kw["max_nodes"], global_batch=kw["global_batch"],
                            days=kw["days"], top=kw["top"],
                            checks=lambda: published_checks(system),
                            checkpoint_bandwidth=gbs["checkpoint_gbs"],
                            fs_bandwidth=gbs["fs_bandwidth_gbs"],
                            relaunch_s=kw["relaunch_minutes"] * 60
                            if kw["relaunch_minutes"] is not None else None, pins=pins)
        click.echo("[report] drawing the figures", err=True)
        images = all_images(data)
        paths = write_report(kw["out_dir"], data, images, staging=staging, field="--out")
    except BaseException:
        staging.discard()
        raise
    if kw["as_json"]:
        from fpcore.readers import dumps
        click.echo(dumps({"files": {k: str(v) for k, v in paths.items()}, "report": data},
                         indent=2))
        return
    shown = click.format_filename              # a name the terminal cannot encode, escaped
    click.echo(f"wrote {shown(paths['index.html'])} (and report.md, report.json, "
               f"{len(images)} figures) in {shown(kw['out_dir'])}")


@main.command()
@click.argument("op", type=Registered("topologies.interface:COLLECTIVES"))
@click.option("--nodes", type=INT_LIST, required=True,
              help="Nodes in the job; a list (384,3072,27648) prices each, in a table.")
@click.option("--bytes", "nbytes", type=BYTES, required=True,
              help="Buffer per rank: 8, 8B, 4KB (4,000), 4MiB (4,194,304), 1e9 (allgather: the output; reduce-scatter: "
                   "the input; alltoall: the send buffer; barrier: ignored).")
@system_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def collective(op, nodes, nbytes, as_json, **kw):
    """Predict one MPI collective over all ranks of a job.

    The job's nodes are allocated on the torus (or --shape), ranks placed
    (--ppn per node), and the collective run as phases of routed flows that share
    links; every algorithm is priced and the cheapest chosen, as an MPI library
    would. p2p: every rank sends --bytes to the next rank, all at once.

    \b
    Examples:
      fugakuperf collective p2p --nodes 2 --bytes 4MiB
      fugakuperf collective allreduce --nodes 384 --ppn 4 --bytes 4MiB
      fugakuperf collective barrier --nodes 384 --ppn 4 --bytes 0 --json
      fugakuperf collective allreduce --nodes 384,3072,27648 --ppn 4 --bytes 8
    """
    from fpcore.errors import SpecError, check_float
    from perfmodel.inputs import flow_network, job_for
    from topologies.report import collective_report, fitted_collective_report
    system = system_from(kw)
    memory = system.node.memory_bytes           # a buffer no rank could hold is refused
    check_float("bytes", nbytes, lo=0.0, lo_open=False, hi=memory / system.ranks_per_node,
                unit=f"bytes (a rank's share of the node's {memory / 2**30:g} GiB)")
    jobs = [job_for(system, n) for n in nodes]          # every count checked before any work
    for n, job in zip(nodes, jobs):
        if job.ranks < 2:
            raise SpecError("nodes", f"a collective needs at least 2 ranks; {n:,} node(s) "
                                     f"x {system.ranks_per_node} per node give {job.ranks}")

    def report(job):
        if system.collective_fits:                 # measured: the fitted alpha-beta costs
            from perfmodel.estimator import network_for
            return fitted_collective_report(network_for(system), op, job, nbytes,
                                            system.calibration)
        return collective_report(flow_network(system), op, job, nbytes)
    emit_each(nodes, [lambda job=job: report(job) for job in jobs], as_json,
              "render_collective", "collectives")


@main.command()
@click.argument("flows_path", metavar="FLOWS.json", type=click.Path(dir_okay=False))
@click.option("--shape", required=True, metavar="AxBx...",
              help="The torus: sizes per axis, every axis a ring (24x2x24x2x3x2), or "
                   ":mesh for none (4x4:mesh), or with --wrap.")
@click.option("--wrap", metavar="1,0,...", help="Which axes wrap: one 0 or 1 per axis.")
@click.option("--link-gbs", type=Real(lo=1e-9, hi=1e9, unit="GB/s (1 byte/s to 1 EB/s)"),
              required=True, help="Bandwidth of every directed link, GB/s (Tofu-D: 6.8).")
@click.option("--injection-gbs", type=Real(lo=1e-9, hi=1e9, unit="GB/s (1 byte/s to 1 EB/s)"),
              help="Each node's injection (and ejection) bandwidth, GB/s; default: no limit "
                   "but the links.")
@click.option("--convention", type=click.Choice(["native", "simgrid"]), default="native",
              show_default=True,
              help="How FLOWS.json numbers nodes and how ties are broken: native (C order, "
                   "ties '+'), or simgrid (first axis fastest, SimGrid's torus tie rule) to "
                   "compare with SimGrid flow by flow.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flows(flows_path, shape, wrap, link_gbs, injection_gbs, convention, as_json):
    """Each flow's finish time on a torus, its bandwidth shared max-min fairly.

    FLOWS.json is a list of [src, dst, bytes] (or [src, dst, bytes, start_s]).
    Nodes are numbered in C order (the last axis varies fastest); flows are routed
    in dimension order, the shorter way round each ring, a half-way tie going "+".
    When a flow finishes, the bandwidth it frees goes to the others; each finish
    re-solves the sharing, so many flows of different sizes take a while (progress
    on stderr). --convention simgrid numbers nodes with the first axis fastest and
    sends a tie "+" except from coordinate n/2, which goes "-", as SimGrid's torus.

    \b
    Examples:
      fugakuperf flows my_flows.json --shape 24x2x24x2x3x2 --link-gbs 6.8
      fugakuperf flows my_flows.json --shape 4x4x4:mesh --link-gbs 10 --json
      fugakuperf flows my_flows.json --shape 8x8 --link-gbs 6.8 --convention simgrid
    """
    from topologies.flowcmd import read_flows, simulate_flows, torus_from_text
    torus = torus_from_text(shape, wrap)
    src, dst, nbytes, start = read_flows(flows_path, torus.nodes)
    last = [time.monotonic()]

    def progress(finished: int, total: int) -> None:
        if time.monotonic() - last[0] >= 2.0:         # a line every 2 s of a long run
            last[0] = time.monotonic()
            click.echo(f"[flows] {finished:,} of {total:,} flows finished", err=True)

    emit(simulate_flows(torus, src, dst, nbytes, start, link_gbs * 1e9,
                        None if injection_gbs is None else injection_gbs * 1e9, progress,
                        convention),
         as_json, "render_flows")


@main.command()
@click.option("--nodes", type=INT_LIST,
              help="Nodes in the job (or give --dp: tp x pp x dp ranks); a list describes "
                   "each.")
@click.option("--tp", "--tensor-model-parallel-size", type=click.IntRange(min=1), default=1,
              show_default=True)
@click.option("--pp", "--pipeline-model-parallel-size", type=click.IntRange(min=1), default=1,
              show_default=True)
@click.option("--dp", type=click.IntRange(min=1),
              help="Data parallelism: with --nodes it must make tp x pp x dp the job's ranks; "
                   "without, it sets the job's size.")
@system_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def topo(nodes, tp, pp, dp, as_json, **kw):
    """Describe a job on the torus: its shape, where ranks sit, and the links its
    TP, PP and DP groups load (one ring step of all groups of a dimension at once).

    \b
    Examples:
      fugakuperf topo --nodes 13824 --tp 6 --pp 8 --shape 48x6x48:torus
      fugakuperf topo --tp 6 --pp 8 --dp 288
      fugakuperf topo --nodes 13824 --tp 6 --pp 8 --mapping linear --json
    """
    from perfmodel.inputs import flow_network, job_for
    from topologies.report import topology_report
    system = system_from(kw)
    ppn = system.ranks_per_node
    if dp is not None:
        ranks = tp * pp * dp
        for n in nodes or []:
            if n * ppn != ranks:
                raise SpecError("dp", f"tp x pp x dp = {ranks:,} ranks, but --nodes gives "
                                      f"{n * ppn:,} ({n:,} x {ppn} per node)")
        if ranks % ppn:
            raise SpecError("dp", f"tp x pp x dp = {ranks:,} ranks must fill whole nodes of "
                                  f"{ppn} ranks")
        nodes = [ranks // ppn]
    if nodes is None:
        raise SpecError("nodes", "give --nodes, or --dp with --tp and --pp, to size the job")
    if system.network.kind != "torus":
        raise SpecError("system", f"topo describes torus jobs; {system.name} is a "
                                  f"{system.network.kind} (see `fugakuperf collective`)")
    jobs = [job_for(system, n, tp, pp) for n in nodes]   # every count checked before any work
    network = flow_network(system)
    emit_each(nodes, [lambda job=job: topology_report(network, job) for job in jobs], as_json,
              "render_topology", "jobs")


@main.command()
@click.option("--model", "model_name", metavar="PRESET", help="Show one model preset in full.")
@click.option("--system", "system_name", metavar="PRESET", help="Show one system preset with "
              "the source of every value.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def presets(model_name, system_name, as_json):
    """List model and system presets (and where every number comes from), and the
    pipeline schedules and training precisions the planner knows."""
    from perfmodel.presets import load_model, model_names, system_names, system_values
    from perfmodel.system import load_system
    if model_name:
        emit(load_model(model_name).to_dict(), as_json, "render_model_preset")
    elif system_name:
        sysspec = load_system(system_name)
        emit({"name": sysspec.name, "description": sysspec.description,
               "origin": sysspec.origin, "values": system_values(sysspec),
               "sources": dict(sysspec.sources),
               "uncertainty": [{"key": u.key, "low": u.low, "high": u.high, "source": u.source}
                               for u in sysspec.uncertain],
               "stacks": [{"name": st.name, "default": st.name == sysspec.stack.name,
                           "description": st.description} for st in sysspec.stacks]},
             as_json, "render_system_preset")
    else:
        from perfmodel.partitions import PARTITIONS
        from perfmodel.sharding import FAMILIES
        from perfmodel.precisions import PRECISION_SPECS
        from perfmodel.schedules import SCHEDULES
        emit({"models": {n: load_model(n).to_dict() for n in model_names()},
               "systems": {n: load_system(n).description for n in system_names()},
               "schedules": {n: {"description": s.description, "virtual_stages": s.virtual,
                                 "chunks": s.chunks, "even_pp": s.mirrored,
                                 "min_pp": s.framework_min_pp,
                                 "min_pp_sends_overlapped": s.least_pp(overlap_p2p=True),
                                 "searched": s.searched}
                             for n, s in SCHEDULES.items()},
               "partitions": {n: {"description": p.description, "source": p.source}
                              for n, p in PARTITIONS.items()},
               "sharding": {f: {str(z): m.name for z, m in modes.items()}
                            for f, modes in FAMILIES.items()},
               "precisions": {n: {"activation_bytes": p.activation_bytes,
                                  "state_bytes_per_parameter": sum(p.state_bytes),
                                  "mixed": p.mixed} for n, p in PRECISION_SPECS.items()}},
              as_json, "render_presets")


def _register_commands():
    from .calibration_commands import calibrate, fit_stack, validate
    from .sweep_command import sweep
    from .train_commands import generate, train
    for command in (train, generate, calibrate, validate, fit_stack, sweep):
        main.add_command(command)


_register_commands()
