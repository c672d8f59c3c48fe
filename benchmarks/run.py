"""Benchmarks of the planner, measured in one run on this machine.

    python -m benchmarks.run [--json] [--repeat N]

* ``plan --params 13e9`` end to end as a user runs it (a fresh process, so Python
  start-up and imports count), median of N runs, against the 2 s target, and
  alternated with ``--objective model`` (the search and ranking without bands);
* the same plan in process (no start-up), and how many layouts it evaluates, and
  again with its 80% bands stubbed out, so their cost is a ratio of the same run;
* the same search without lower-bound pruning, so the pruning's saving is a
  ratio measured in the same run;
* the estimator alone: estimates per second on Fugaku-LLM's layout, with the
  contention-free network model and with the flow-level Tofu model (a fresh job
  shape, so its placement and routing are included);
* the network alone: link loads of one ring phase over all 158,976 Fugaku nodes
  (target: under 2 s), max-min rates of a random permutation over all of them
  (target 5 s) and over 13,824 of them (target 0.3 s), the finish times of 2,000
  flows of mixed sizes (with the slower flows' rates reused at each finish, and
  without), and one 4 MiB allreduce on
  384 nodes x 4 ranks with its flows routed and shared afresh
  (fpcore.caches.reset("flows"): its flow patterns and their rate bounds; the job's
  placement is kept);
* the discrete-event simulator: wall time for Fugaku-LLM's layout (target: under
  2 s) and events (timed compute and transfer segments, a step run as one wait
  counting its layers' each) per second on a busy interleaved schedule;
* the co-design sweep (perfmodel.sweep): (hardware point x layout) candidates a
  second of its analytic tier on one core (target 10,000), and its flow-level
  re-pricing on a fresh network against one whose patterns are already priced.
Timings on a shared machine are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_cli(repeat: int) -> dict:
    """The plan as a user runs it, and with ``--objective model`` (no band work in the
    search, none in the ranking), alternated so that both see the same machine."""
    cmd = [sys.executable, "-m", "fugakuperf", "plan", "--params", "13e9", "--json"]
    banded, model_only = [], []
    for _ in range(repeat):
        banded.append(_median_time(lambda: subprocess.run(
            cmd, cwd=ROOT, check=True, capture_output=True), 1))
        model_only.append(_median_time(lambda: subprocess.run(
            cmd + ["--objective", "model"], cwd=ROOT, check=True, capture_output=True), 1))
    cli_s, model_s = statistics.median(banded), statistics.median(model_only)
    return {"plan_cli_s": cli_s, "plan_cli_vs_2s_target": cli_s / 2.0,
            "plan_cli_objective_model_s": model_s, "plan_cli_bands_cost": cli_s / model_s - 1}


def bench_in_process(repeat: int) -> dict:
    from perfmodel.estimator import estimate
    from perfmodel.layout import Layout
    from perfmodel.plan import plan
    from perfmodel.presets import load_model
    from perfmodel.search import search
    from perfmodel.sizing import model_for_params
    from perfmodel.system import load_system

    system = load_system(network_model="analytic")
    model = model_for_params(13e9)
    flow_system = load_system()
    result = plan(model, flow_system)
    # with and without the bands, alternated so that both see the same machine
    with_bands, without = [], []
    for _ in range(repeat):
        with_bands.append(_median_time(lambda: plan(model, flow_system), 1))
        without.append(_median_time(lambda: _without_bands(lambda: plan(model, flow_system)), 1))
    plan_s, bands_off_s = statistics.median(with_bands), statistics.median(without)
    unpruned_s = _median_time(
        lambda: search(model, system, 2016, max_nodes=13824, top=10**9), max(1, repeat // 2))
    _, full = search(model, system, 2016, max_nodes=13824, top=10**9)
    fugaku_llm = load_model("fugaku-llm-13b")
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)
    n = 2000
    est_s = _median_time(lambda: [estimate(fugaku_llm, system, layout) for _ in range(n)], 3) / n
    return {
        "plan_in_process_s": plan_s,
        "plan_without_bands_s": bands_off_s,
        "bands_cost": plan_s / bands_off_s - 1,
        "candidates_evaluated": result.stats.candidates_evaluated,
        "pruned_by_bound": result.stats.pruned,
        "unpruned_search_s": unpruned_s,
        "unpruned_candidates": full.candidates_evaluated,
        "pruning_speedup": unpruned_s / _median_time(lambda: plan(model, system), repeat),
        "estimate_us": est_s * 1e6,
        "estimates_per_s": 1 / est_s,
    }


def _without_bands(fn):
    """Run ``fn`` with the plan's band work stubbed out (each layout a zero-width band
    from its own prediction, ranked by the model), to price the bands in the same run."""
    import perfmodel.plan as plan_module
    from perfmodel.evidence import Band, Ranker

    class NoBands(Ranker):
        def __init__(self, objective):
            super().__init__("model")

        def band(self, est):
            t = est.iteration_s
            return self.bands.setdefault(est.layout, Band(t, t, t, t, 0, None, (), ()))

    real = plan_module.Ranker
    plan_module.Ranker = NoBands          # (forked workers inherit it)
    try:
        return fn()
    finally:
        plan_module.Ranker = real


def bench_network(repeat: int) -> dict:
    import numpy as np

    from fpcore.caches import reset as reset_caches
    from perfmodel.estimator import estimate, network_for
    from perfmodel.layout import Layout
    from perfmodel.presets import load_model
    from perfmodel.system import load_system
    from topologies import JobShape
    from topologies.routing import link_loads
    from topologies.torus import Torus

    machine = Torus((24, 23, 24, 2, 3, 2), (True, True, True, False, True, False),
                    ("X", "Y", "Z", "a", "b", "c"))
    src = np.arange(machine.nodes)
    dst = (src + 1) % machine.nodes
    ring_s = _median_time(lambda: link_loads(machine, src, dst, 1.0), repeat)

    system = load_system(shape="48x6x48:torus")
    model = load_model("fugaku-llm-13b")
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)

    def fresh_flow_estimate():
        reset_caches("network", "flows")      # a fresh job: placed, routed and priced
        return estimate(model, system, layout)

    flow_s = _median_time(fresh_flow_estimate, max(1, repeat // 2))
    net = network_for(load_system(ppn=4))

    def allreduce():
        reset_caches("flows")                 # its flows routed and shared afresh
        return net.collective("allreduce", "dp", JobShape(1, 1, 1536, 4), 4 * 2**20)

    allreduce_s = _median_time(allreduce, repeat)

    # max-min sharing of random permutations: the whole machine, and 13,824 nodes of it
    from topologies.flows import max_min_rates
    from topologies.routing import route
    rng = np.random.default_rng(0)
    capacity = np.where(machine.link_exists, 6.35e9, 0.0)
    perms = {}
    for n in (13824, machine.nodes):
        src = rng.choice(machine.nodes, n, replace=False)
        ptr, links = route(machine, src, rng.permutation(src))
        max_min_rates(ptr, links, capacity)          # (the compiled loop loaded once)
        perms[n] = _median_time(lambda: max_min_rates(ptr, links, capacity), max(1, repeat // 2))
    # completions: 2,000 flows of 1-4 MiB on a 13,824-node torus, each finish its own
    # event, the slower flows' rates reused, and every rate solved again
    from topologies.flows import flow_completions
    tofu = Torus((24, 2, 24, 2, 3, 2), (True,) * 6)
    src = rng.choice(tofu.nodes, 2000, replace=False)
    ptr, links = route(tofu, src, rng.permutation(src))
    capacity = np.where(tofu.link_exists, 6.35e9, 0.0)
    sizes = rng.uniform(1, 4, src.size) * 2**20
    reused = _median_time(lambda: flow_completions(ptr, links, capacity, sizes), 1)
    resolved = _median_time(lambda: flow_completions(ptr, links, capacity, sizes, reuse=False), 1)
    return {"completions_2000_mixed_s": reused, "completions_2000_mixed_no_reuse_s": resolved,
            "ring_phase_158976_nodes_s": ring_s, "ring_phase_vs_2s_target": ring_s / 2.0,
            "maxmin_permutation_158976_s": perms[machine.nodes],
            "maxmin_permutation_13824_s": perms[13824],
            "flow_estimate_fresh_job_s": flow_s, "allreduce_4MiB_384x4_s": allreduce_s}


def bench_des(repeat: int) -> dict:
    from perfmodel.des import simulate
    from perfmodel.estimator import estimate
    from perfmodel.layout import Layout
    from perfmodel.presets import load_model
    from perfmodel.system import load_system

    system = load_system(shape="48x6x48:torus")
    model = load_model("fugaku-llm-13b")
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)
    estimate(model, system, layout)                 # network costs priced once, cached
    result = simulate(model, system, layout)
    wall = _median_time(lambda: simulate(model, system, layout), repeat)
    busy = Layout(tp=6, pp=8, dp=36, micro_batch=1, global_batch=2016, schedule="interleaved",
                  virtual_stages=5, recompute="full")
    estimate(model, system, busy)
    many = simulate(model, system, busy)
    many_wall = _median_time(lambda: simulate(model, system, busy), repeat)
    return {"des_fugaku_llm_s": wall, "des_fugaku_llm_events": result.events,
            "des_fugaku_llm_vs_2s_target": wall / 2.0,
            "des_events_per_s": many.events / many_wall, "des_large_events": many.events}


def bench_sweep(repeat: int) -> dict:
    """The co-design sweep's tiers on the shipped successor sweep, in this process (one
    core): the analytic tier on 16 new points per run (a chunk of 8 at 13,824 nodes and
    one at 158,976, each point's search seeded by the one before, as a worker runs
    them, with what earlier chunks left in the caches), as (hardware point x layout)
    candidates per CPU second, each candidate a layout the search bounded or
    estimated, the median of the runs' rates; and the flow-level re-pricing of one
    shortlist (the 100B model's at 158,976 nodes) on a fresh network, and on one that
    another point (other per-node figures, the same network) priced first."""
    from perfmodel import parallel
    was = parallel._IN_WORKER
    parallel.run_serially()             # as a sweep's worker runs: its caches its own
    try:
        return _sweep_figures(repeat)
    finally:
        parallel._IN_WORKER = was


def _sweep_figures(repeat: int) -> dict:
    import dataclasses
    from fpcore.caches import reset
    from perfmodel.search import SearchStats, confirm, screen
    from perfmodel.sweep import evaluate, point_system, read_sweep

    sweep = read_sweep("fugaku-successor")
    firsts = [next(i for i in range(sweep.points) if sweep.point(i)["nodes"] == n)
              for n in (13824, 158976)]
    reset()
    rates = []
    for k in range(repeat):            # new points each time, as a sweep's next chunks
        stats = SearchStats()
        t = time.process_time()        # this process's CPU seconds: per core, as asked
        for first in firsts:
            seeds: dict = {}
            for i in range(first + 8 * k, first + 8 * k + 8):
                evaluate(sweep, i, seeds, stats)
        wall = time.process_time() - t
        rates.append((stats.candidates_evaluated + stats.pruned) / wall)
        counts = stats
    points = 16
    candidates = counts.candidates_evaluated + counts.pruned
    # the flow-level re-pricing of one shortlist (the 100B model's at 158,976 nodes) on
    # a point whose network is fresh, and on a point whose network another point, with
    # other per-node figures, priced first
    flow = dataclasses.replace(sweep, network="system")
    big = firsts[1]
    a, b = (point_system(flow, sweep.point(i)) for i in (big, big + 1))
    run = sweep.models[1]
    short, _ = screen(run.model, b, run.global_batch, max_nodes=158976, min_nodes=79488,
                      pins={"precision": "fp16"}, top=1)
    fresh, reused = [], []
    for _ in range(repeat):
        reset("network", "flows")
        fresh.append(_median_time(lambda: confirm(run.model, b, short), 1))
        reset("network", "flows")
        confirm(run.model, a, short)
        reused.append(_median_time(lambda: confirm(run.model, b, short), 1))
    first, rest = statistics.median(fresh), statistics.median(reused)
    wall = candidates / rates[-1]
    return {"sweep_points": points, "sweep_models": len(sweep.models),
            "sweep_analytic_s_per_point": wall / points,
            "sweep_candidates": candidates,
            "sweep_candidates_per_s": statistics.median(rates),
            "sweep_estimated_per_s": counts.candidates_evaluated / wall,
            "sweep_flow_shapes": len({(e.layout.tp, e.layout.pp, e.layout.dp) for e in short}),
            "sweep_flow_fresh_s": first, "sweep_flow_reused_s": rest}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    figures = {**bench_cli(args.repeat), **bench_in_process(args.repeat),
               **bench_network(args.repeat), **bench_des(args.repeat),
               **bench_sweep(args.repeat)}
    cli_s = figures["plan_cli_s"]
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"fugakuperf plan --params 13e9 (fresh process): {cli_s:.3f} s median of {args.repeat}"
          f" = {cli_s / 2.0:.0%} of the 2 s target; "
          f"{figures['plan_cli_objective_model_s']:.3f} s ranked by the model's own times "
          f"(--objective model): the bands cost {figures['plan_cli_bands_cost']:+.0%}")
    print(f"  in process: {figures['plan_in_process_s']:.3f} s, "
          f"{figures['candidates_evaluated']:,} layouts evaluated, "
          f"{figures['pruned_by_bound']:,} pruned by the lower bound")
    print(f"  the 80% bands (evidence and assumed values' ranges) cost "
          f"{figures['bands_cost']:+.0%}: {figures['plan_without_bands_s']:.3f} s with them "
          f"stubbed out")
    print(f"  without pruning: {figures['unpruned_search_s']:.3f} s for "
          f"{figures['unpruned_candidates']:,} layouts: pruning is "
          f"{figures['pruning_speedup']:.1f}x faster with the same answer")
    print(f"  estimator: {figures['estimate_us']:.0f} us per layout "
          f"({figures['estimates_per_s']:,.0f} per s) on TP6 PP8 DP288, alpha-beta network;")
    print(f"  {figures['flow_estimate_fresh_job_s'] * 1e3:.0f} ms with the flow-level Tofu model "
          f"on a fresh job (placement and routing included): "
          f"{figures['flow_estimate_fresh_job_s'] / (figures['estimate_us'] * 1e-6):,.0f}x")
    print(f"network: link loads of one ring phase over all 158,976 nodes "
          f"{figures['ring_phase_158976_nodes_s']:.3f} s = "
          f"{figures['ring_phase_vs_2s_target']:.0%} of the 2 s target; "
          f"4 MiB allreduce on 384 x 4 ranks priced in {figures['allreduce_4MiB_384x4_s'] * 1e3:.0f} ms")
    print(f"max-min sharing of a random permutation: all 158,976 nodes "
          f"{figures['maxmin_permutation_158976_s']:.2f} s (target 5 s), 13,824 flows "
          f"{figures['maxmin_permutation_13824_s']:.3f} s (target 0.3 s); with completions, "
          f"2,000 flows of 1-4 MiB on 13,824 nodes {figures['completions_2000_mixed_s']:.2f} s "
          f"({figures['completions_2000_mixed_no_reuse_s']:.2f} s solving every rate again at "
          f"each finish)")
    print(f"DES: Fugaku-LLM's layout (TP6 PP8 DP288, 7 micro-batches) simulated in "
          f"{figures['des_fugaku_llm_s'] * 1e3:.0f} ms ({figures['des_fugaku_llm_events']:,} events, "
          f"{figures['des_fugaku_llm_vs_2s_target']:.1%} of the 2 s target); engine "
          f"{figures['des_events_per_s']:,.0f} events/s on {figures['des_large_events']:,} events "
          f"(interleaved, 56 micro-batches x 5 chunks)")
    print(f"sweep (fugaku-successor, one core): "
          f"{figures['sweep_analytic_s_per_point'] * 1e3:.0f} ms per hardware point of "
          f"{figures['sweep_models']} models; the analytic tier {figures['sweep_candidates_per_s']:,.0f} "
          f"candidates/s ({figures['sweep_candidates']:,} bounded or estimated on "
          f"{figures['sweep_points']} points; target 10,000), "
          f"{figures['sweep_estimated_per_s']:,.0f} full estimates/s; the flow-level "
          f"re-pricing of a shortlist ({figures['sweep_flow_shapes']} shapes, 158,976 nodes) "
          f"{figures['sweep_flow_fresh_s']:.2f} s on a fresh network, "
          f"{figures['sweep_flow_reused_s']:.3f} s on one another point priced "
          f"({figures['sweep_flow_fresh_s'] / figures['sweep_flow_reused_s']:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
