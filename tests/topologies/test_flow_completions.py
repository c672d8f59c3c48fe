"""Progressive filling with completions: when a flow finishes, the bandwidth it frees
goes to the others (topologies.flows.flow_completions), checked by hand on small cases
and against an independent event loop on random flows over small tori; and the
``fugakuperf flows`` command that exposes it."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from fugakuperf.cli import main
from topologies.flowcmd import torus_from_text
from topologies.flows import csr_from_lists, flow_completions, phase_time
from topologies.routing import route


def completions(link_lists, capacity, nbytes, start=None):
    ptr, links = csr_from_lists(link_lists)
    return flow_completions(ptr, links, capacity, nbytes, start)


# ------------------------------------------------------------------ by hand
def test_a_finished_flows_bandwidth_goes_to_the_other():
    """One link of 1 byte/s, flows of 1 and 3 bytes: both at 0.5 until the first ends
    at 2 s; the second then has the link alone for its last 2 bytes: done at 4 s, not
    the 6 s of keeping its first rate."""
    finish, solves = completions([[0], [0]], [1.0], [1.0, 3.0])
    assert finish.tolist() == [2.0, 4.0] and solves == 2
    ptr, links = csr_from_lists([[0], [0]])
    assert phase_time(ptr, links, [1.0], [1.0, 3.0]) == 6.0      # no redistribution


def test_equal_flows_that_start_together_cost_one_solve():
    finish, solves = completions([[0, 1], [1, 2], [2, 0]], [2.0, 2.0, 2.0], [3.0] * 3)
    assert finish.tolist() == [3.0] * 3 and solves == 1


def test_a_parking_lot():
    """Links 0 and 1 of 1 byte/s. A (2 bytes) crosses both, B (1 byte) link 0, C (3
    bytes) link 1. All at 0.5; B ends at 2 s. Then A and C share link 1 at 0.5 (link 0
    no longer limits A): A has 1 byte left, ends at 4 s; C, 1 byte left, then alone at
    1.0: 5 s."""
    finish, _ = completions([[0, 1], [0], [1]], [1.0, 1.0], [2.0, 1.0, 3.0])
    assert finish.tolist() == [4.0, 2.0, 5.0]


def test_staggered_starts_share_from_when_they_start():
    """2 bytes each on a 1 byte/s link, the second starting at 1 s: the first alone
    for 1 s, then both at 0.5: the first ends at 3 s; the second, 1 byte left, alone:
    4 s. A flow that starts after the others have ended waits for its start."""
    finish, _ = completions([[0], [0]], [1.0], [2.0, 2.0], start=[0.0, 1.0])
    assert finish.tolist() == [3.0, 4.0]
    finish, _ = completions([[0], [0]], [1.0], [1.0, 1.0], start=[0.0, 5.0])
    assert finish.tolist() == [1.0, 6.0]


def test_edge_cases():
    finish, _ = completions([[0], [0]], [1.0], [0.0, 1.0], start=[2.0, 0.0])
    assert finish.tolist() == [2.0, 1.0]                   # 0 bytes: done when it starts
    finish, _ = completions([[0], [1]], [0.0, 1.0], [1.0, 1.0])
    assert finish.tolist() == [np.inf, 1.0]                # a dead link: never
    finish, _ = completions([[0], []], [np.inf], [5.0, 5.0])
    assert finish.tolist() == [0.0, 0.0]                   # never a bottleneck
    with pytest.raises(ValueError, match="flow_bytes"):
        completions([[0]], [1.0], [np.nan])
    with pytest.raises(ValueError, match="start"):
        completions([[0]], [1.0], [1.0], start=[-1.0])


# ------------------------------------------------- against an independent loop
def reference(routes, capacity, nbytes, start):
    """Finish times by a plain event loop: water-filling over Python sets, one flow
    at a time, no numpy (an independent implementation of the same definition)."""
    remaining = list(nbytes)
    finish = [None] * len(routes)
    now = 0.0
    pending = sorted(range(len(routes)), key=lambda f: start[f])
    active = []
    while pending or active:
        if not active:
            now = max(now, start[pending[0]])
        while pending and start[pending[0]] <= now:
            active.append(pending.pop(0))
        for f in [f for f in active if remaining[f] <= 0]:
            finish[f] = now
            active.remove(f)
        if not active:
            continue
        rate = {}
        left = dict(enumerate(capacity))
        growing = set(active)
        level = 0.0
        while growing:
            users = {l: [f for f in growing if l in routes[f]] for l in left}
            step = min((left[l] / len(u) for l, u in users.items() if u), default=None)
            level += step
            for l, u in users.items():
                left[l] -= step * len(u)
            full = {l for l, u in users.items() if u and left[l] <= 1e-12 * capacity[l]}
            for f in [f for f in growing if set(routes[f]) & full]:
                rate[f] = level
                growing.discard(f)
        until = min(remaining[f] / rate[f] for f in active)
        step = min([until] + ([start[pending[0]] - now] if pending else []))
        for f in active:
            remaining[f] = 0.0 if remaining[f] / rate[f] <= step * (1 + 1e-12) \
                else remaining[f] - rate[f] * step
        now += step
    return finish


@pytest.mark.parametrize("seed", range(6))
def test_the_same_finish_times_as_an_independent_event_loop(seed):
    rng = random.Random(seed)
    torus = torus_from_text(rng.choice(["4x3", "3x3x2", "5x2:mesh", "2x2x2"]))
    n = rng.randint(3, 12)
    src = np.array([rng.randrange(torus.nodes) for _ in range(n)])
    dst = np.array([(s + rng.randrange(1, torus.nodes)) % torus.nodes for s in src])
    nbytes = [rng.choice([1.0, 2.0, 3.5, 7.0]) for _ in range(n)]
    start = [rng.choice([0.0, 0.0, 0.5, 2.0]) for _ in range(n)]
    ptr, links = route(torus, src, dst)
    capacity = np.where(torus.link_exists, 1.0, 0.0)
    finish, _ = flow_completions(ptr, links, capacity, nbytes, start)
    routes = [set(links[ptr[f]:ptr[f + 1]].tolist()) for f in range(n)]
    expected = reference(routes, capacity.tolist(), nbytes, start)
    assert finish == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_reusing_the_slower_flows_rates_changes_no_finish(seed):
    """Many flows of distinct sizes that start together: each finish re-solves only
    the flows at or above the finished flow's rate (the slower ones keep theirs), on
    the capacity the kept ones leave; the finish times are the independent loop's."""
    rng = random.Random(100 + seed)
    torus = torus_from_text(rng.choice(["4x4x2", "3x4x3", "6x4:mesh"]))
    n = 40
    src = np.array([rng.randrange(torus.nodes) for _ in range(n)])
    dst = np.array([(s + rng.randrange(1, torus.nodes)) % torus.nodes for s in src])
    nbytes = [rng.uniform(1.0, 9.0) for _ in range(n)]
    ptr, links = route(torus, src, dst)
    capacity = np.where(torus.link_exists, 1.0, 0.0)
    finish, solves = flow_completions(ptr, links, capacity, nbytes)
    routes = [set(links[ptr[f]:ptr[f + 1]].tolist()) for f in range(n)]
    assert finish == pytest.approx(reference(routes, capacity.tolist(), nbytes, [0.0] * n),
                                   rel=1e-9)
    assert solves == n                     # distinct sizes: one event per flow
    again, _ = flow_completions(ptr, links, capacity, nbytes, reuse=False)
    assert finish == pytest.approx(again, rel=1e-12)


# --------------------------------------------------------------------- the CLI
def run(tmp_path, flows, *args):
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(flows))
    return CliRunner().invoke(main, ["flows", str(path), *args])


def test_flows_prints_each_finish_and_the_makespan(tmp_path):
    """Nodes 0 -> 1 on a 4x2 torus are one hop on axis 1 (C order: the last axis is
    fastest); two flows of 1 and 3 GB over one 1 GB/s link end at 2 s and 4 s."""
    result = run(tmp_path, [[0, 1, 1e9], [0, 1, 3e9], [2, 2, 5]], "--shape", "4x2",
                 "--link-gbs", "1", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["finish_s"] == [2.0, 4.0, 0.0] and d["hops"] == [1, 1, 0]
    assert d["makespan_s"] == 4.0
    text = run(tmp_path, [[0, 1, 1e9]], "--shape", "4x2", "--link-gbs", "1").stdout
    assert "makespan 1.00 s" in text and "last axis varies fastest" in text
    # microseconds in the makespan's unit, never an exponent
    text = run(tmp_path, [[0, 1, 1e3], [0, 1, 3e3]], "--shape", "4x2", "--link-gbs", "1").stdout
    assert "makespan 4.00 us" in text and "finish us" in text
    assert "2.000000" in text and "e-0" not in text


def test_injection_bandwidth_is_shared_by_a_nodes_flows(tmp_path):
    """Two flows out of node 0 on different links: free on the links, they share its
    0.5 GB/s injection: 1 GB each ends at 4 s."""
    result = run(tmp_path, [[0, 1, 1e9], [0, 2, 1e9]], "--shape", "4x2", "--link-gbs", "1",
                 "--injection-gbs", "0.5", "--json")
    assert json.loads(result.stdout)["finish_s"] == [4.0, 4.0]


def test_the_simgrid_convention_numbers_and_breaks_ties_as_simgrid(tmp_path):
    """On a 4-ring a flow 2 -> 0 is half-way round: ours goes "+" (2-3-0), SimGrid's
    torus sends a tie from coordinate n/2 = 2 "-" (2-1-0), onto the link 1 -> 0 that a
    second flow uses, so both take twice as long; from coordinate 1 both go "+". On
    4x2, SimGrid numbers the first axis fastest: node 4 is (0, 1), one hop away, where
    in C order it is (2, 0), two."""
    def finish(flows, *extra):
        return json.loads(run(tmp_path, flows, "--shape", "4", "--link-gbs", "1", "--json",
                              *extra).stdout)["finish_s"]
    tie_from_half = [[2, 0, 1e9], [1, 0, 1e9]]
    assert finish(tie_from_half) == [1.0, 1.0]
    assert finish(tie_from_half, "--convention", "simgrid") == [2.0, 2.0]
    tie_from_one = [[1, 3, 1e9], [1, 2, 1e9]]          # "+" both: shares the link 1 -> 2
    assert finish(tie_from_one) == finish(tie_from_one, "--convention", "simgrid") == [2.0, 2.0]
    hops = [json.loads(run(tmp_path, [[0, 4, 1]], "--shape", "4x2", "--link-gbs", "1",
                               "--json", *extra).stdout)["hops"]
            for extra in ((), ("--convention", "simgrid"))]
    assert hops == [[2], [1]]


@pytest.mark.parametrize("flows,args,field", [
    ([[0, 9, 1]], ("--shape", "4x2"), "flows"),
    ([[0, 1, -1]], ("--shape", "4x2"), "flows"),
    ([[0, 1, 1e19]], ("--shape", "4x2"), "flows"),        # its finish time could overflow
    ([[0, 1, 10 ** 400]], ("--shape", "4x2"), "flows"),   # an int no float holds
    ([[0, 1, 1, "soon"]], ("--shape", "4x2"), "flows"),
    ({"flows": []}, ("--shape", "4x2"), "flows"),
    ([[0, 1, 1]], ("--shape", "4y2"), "shape"),
    ([[0, 1, 1]], ("--shape", "4x2", "--wrap", "1"), "wrap"),
    ([[0, 1, 1]], ("--shape", "4x2:ring"), "shape"),
    ([[0, 1, 1]], ("--shape", "4x2", "--convention", "ns3"), "--convention"),
])
def test_bad_input_is_one_line_naming_the_field(tmp_path, flows, args, field):
    result = run(tmp_path, flows, *args, "--link-gbs", "1")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field}") and len(result.stderr.splitlines()) == 1


# ------------------------------------------------- the heap for large problems
@pytest.mark.parametrize("seed", range(4))
def test_the_compiled_heap_filling_gives_the_vectorised_fillings_rates(seed, monkeypatch):
    """Above HEAP_ENTRIES route entries the filling pops one saturated link at a time
    from a heap; the rates are the vectorised filling's, equal links and dead links
    (capacity 0) and links that never limit (inf) included."""
    import topologies.flows as flows
    rng = np.random.default_rng(seed)
    torus = torus_from_text("6x5x4:torus" if seed % 2 else "5x4x3:mesh")
    src = rng.choice(torus.nodes, 40, replace=True)
    dst = (src + rng.integers(1, torus.nodes, src.size)) % torus.nodes
    ptr, links = route(torus, src, dst)
    cap = np.where(torus.link_exists, 1.0, 0.0)
    cap[rng.choice(cap.size, 20)] = rng.choice([0.0, 0.5, 2.0, np.inf], 20)
    monkeypatch.setattr(flows, "HEAP_ENTRIES", 10**12)
    vectorised, levels = flows.progressive_filling(ptr, links, cap)
    monkeypatch.setattr(flows, "HEAP_ENTRIES", 0)
    heap, heap_levels = flows.progressive_filling(ptr, links, cap)
    assert np.array_equal(np.isinf(heap), np.isinf(vectorised))
    finite = np.isfinite(heap)
    assert heap[finite] == pytest.approx(vectorised[finite], rel=1e-12, abs=1e-300)
    assert heap_levels == levels
