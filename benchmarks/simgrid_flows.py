"""The same flows through ``fugakuperf flows`` and through SimGrid, flow by flow.

    python -m benchmarks.simgrid_flows --simgrid-python PY [--flows N] [--seed S]
        [--shape 24x2x24x2x3x2] [--link-gbs 6.8] [--json]

SimGrid (https://simgrid.org, an independent flow-level simulator) is not a
dependency: PY is a Python that has it (``pip install simgrid`` builds it from source
with cmake, a C++ compiler and Boost). Its torus (a cluster of topology TORUS, links
split-duplex, 0 latency) is run with plain max-min sharing: the CM02 network model
(no bandwidth or latency factors), no cross-traffic, timing precisions of 1e-12.
The flows are a random permutation over the torus's nodes (no node sending to itself),
each of a random size
between 1 and 4 MiB, all starting at 0: every finish is its own event, and each
frees bandwidth for the others. ``fugakuperf flows`` reads them with
``--convention simgrid`` (SimGrid's node numbering and tie rule). The report is the
largest relative difference of a flow's finish time, the makespans, and each side's
wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run by the SimGrid Python: argv = platform.xml flows.json out.json
SIMGRID_SIDE = r"""
import json, sys, time
from simgrid import Actor, Comm, Engine
platform, flows_path, out_path = sys.argv[1:4]
flows = json.load(open(flows_path))
e = Engine([sys.argv[0], "--cfg=network/model:CM02", "--cfg=network/crosstraffic:0",
            "--cfg=precision/timing:1e-12", "--cfg=precision/work-amount:1e-12",
            "--log=root.thres:critical"])
e.load_platform(platform)
hosts = {h.name: h for h in e.all_hosts}
finish = [None] * len(flows)

def one(i, src, dst, size):
    Comm.sendto_async(hosts[f"n{src}"], hosts[f"n{dst}"], size).wait()
    finish[i] = e.clock

for i, (src, dst, size) in enumerate(flows):
    Actor.create(f"f{i}", hosts[f"n{src}"], one, i, src, dst, int(size))
t = time.perf_counter()
e.run()
json.dump({"finish_s": finish, "wall_s": time.perf_counter() - t}, open(out_path, "w"))
"""

PLATFORM = """<?xml version='1.0'?>
<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">
<platform version="4.1">
  <zone id="world" routing="Full">
    <cluster id="torus" prefix="n" radical="0-{last}" suffix="" speed="1Gf"
             bw="{bw}Bps" lat="0s" topology="TORUS" topo_parameters="{dims}"
             sharing_policy="SPLITDUPLEX"/>
  </zone>
</platform>
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simgrid-python", required=True, help="a Python with simgrid installed")
    ap.add_argument("--flows", type=int, default=13824)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shape", default="24x2x24x2x3x2")
    ap.add_argument("--link-gbs", type=float, default=6.8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from topologies.flowcmd import simulate_flows, torus_from_text
    torus = torus_from_text(args.shape)
    if not 1 <= args.flows <= torus.nodes:
        ap.error(f"--flows must be from 1 to the torus's {torus.nodes:,} nodes (a permutation)")
    rng = np.random.default_rng(args.seed)
    src = rng.choice(torus.nodes, args.flows, replace=False)
    order = rng.permutation(args.flows)
    fixed = np.flatnonzero(order == np.arange(args.flows))   # no flow to itself (SimGrid
    if fixed.size == 1:                                        # has no route for one)
        other = (fixed[0] + 1) % args.flows
        order[[fixed[0], other]] = order[[other, fixed[0]]]
    elif fixed.size > 1:
        order[fixed] = order[np.roll(fixed, 1)]
    dst = src[order]
    sizes = np.round(rng.uniform(1, 4, args.flows) * 2**20)     # whole bytes, as SimGrid's
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "flows.json").write_text(json.dumps(
            [[int(s), int(d), float(b)] for s, d, b in zip(src, dst, sizes)]))
        (tmp / "platform.xml").write_text(PLATFORM.format(
            last=torus.nodes - 1, bw=args.link_gbs * 1e9, dims=",".join(map(str, torus.shape))))
        (tmp / "side.py").write_text(SIMGRID_SIDE)
        subprocess.run([args.simgrid_python, str(tmp / "side.py"), str(tmp / "platform.xml"),
                        str(tmp / "flows.json"), str(tmp / "simgrid.json")], check=True)
        theirs = json.loads((tmp / "simgrid.json").read_text())
    t = time.perf_counter()
    ours = simulate_flows(torus, src, dst, sizes, np.zeros(args.flows), args.link_gbs * 1e9,
                          convention="simgrid")
    ours_wall = time.perf_counter() - t
    a, b = np.array(ours["finish_s"]), np.array(theirs["finish_s"], dtype=float)
    rel = np.abs(a / b - 1)
    result = {"flows": args.flows, "shape": args.shape, "seed": args.seed,
              "max_relative_difference": float(rel.max()),
              "median_relative_difference": float(np.median(rel)),
              "makespan_ours_s": float(a.max()), "makespan_simgrid_s": float(b.max()),
              "wall_ours_s": ours_wall, "wall_simgrid_s": theirs["wall_s"],
              "solves": ours["solves"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.flows:,} flows of 1-4 MiB on {args.shape}: finish times differ by at most "
              f"{result['max_relative_difference']:.2e} (median "
              f"{result['median_relative_difference']:.2e}); makespan "
              f"{result['makespan_ours_s'] * 1e3:.6f} ms here, "
              f"{result['makespan_simgrid_s'] * 1e3:.6f} ms in SimGrid; wall "
              f"{ours_wall:.1f} s here ({ours['solves']:,} solves), "
              f"{theirs['wall_s']:.1f} s in SimGrid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
