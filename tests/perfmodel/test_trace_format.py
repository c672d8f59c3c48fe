"""The simulator's trace in the Chrome Trace Event Format that Perfetto's JSON importer
reads: the events' schema, and what a user opening it sees (a process per pipeline
stage, a thread per stream, flow arrows from each send to the step it feeds, a memory
counter per stage)."""

import json

import pytest

from perfmodel.des import THREADS, Trace, simulate
from perfmodel.layout import Layout
from perfmodel.presets import load_model
from perfmodel.system import load_system

PHASES = {"X", "M", "C", "s", "f"}
METADATA = {"process_name": "name", "process_sort_index": "sort_index",
            "thread_name": "name", "thread_sort_index": "sort_index"}


def check_schema(data: dict) -> dict:
    """Every event well formed, every flow bound to a slice on both ends, every process
    and thread named; returns the events by phase."""
    assert set(data) == {"traceEvents", "displayTimeUnit"} and data["displayTimeUnit"] == "ms"
    by = {ph: [] for ph in PHASES}
    for e in data["traceEvents"]:
        assert e["ph"] in PHASES, e
        assert isinstance(e["name"], str) and e["name"]
        assert isinstance(e["pid"], int) and e["pid"] >= 1
        by[e["ph"]].append(e)
        if e["ph"] == "M":
            key = METADATA[e["name"]]
            assert key in e["args"]
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert isinstance(e["tid"], int) and e["dur"] >= 0 and isinstance(e["args"], dict)
        if e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) and v >= 0
                                     for v in e["args"].values())
        if e["ph"] in "sf":
            assert isinstance(e["id"], int) and isinstance(e["cat"], str)
            assert e["ph"] == "s" or e.get("bp") == "e"
    named_pids = {e["pid"] for e in by["M"] if e["name"] == "process_name"}
    named_threads = {(e["pid"], e["tid"]) for e in by["M"] if e["name"] == "thread_name"}
    assert {e["pid"] for e in by["X"] + by["C"]} <= named_pids
    assert {(e["pid"], e["tid"]) for e in by["X"]} <= named_threads
    starts = {e["id"]: e for e in by["s"]}
    ends = {e["id"]: e for e in by["f"]}
    assert starts.keys() == ends.keys() and len(starts) == len(by["s"])
    for k, s in starts.items():
        f = ends[k]
        assert s["ts"] <= f["ts"]
        for end in (s, f):            # each end inside a slice of its thread
            assert any(x["pid"] == end["pid"] and x["tid"] == end["tid"]
                       and x["ts"] <= end["ts"] <= x["ts"] + x["dur"] for x in by["X"]), end
    return by


@pytest.fixture(scope="module")
def fugaku_llm():
    model = load_model("fugaku-llm-13b")
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full",
                    recompute_stages=4)
    trace = Trace()
    sim = simulate(model, load_system(), layout, trace=trace)
    return json.loads(json.dumps(trace.to_json())), sim


def test_the_trace_is_well_formed(fugaku_llm):
    check_schema(fugaku_llm[0])


def test_a_process_per_stage_and_a_thread_per_stream(fugaku_llm):
    by = check_schema(fugaku_llm[0])
    processes = {e["pid"]: e["args"]["name"] for e in by["M"] if e["name"] == "process_name"}
    assert processes == {i + 1: f"pipeline stage {i}" for i in range(8)}
    threads = {e["args"]["name"] for e in by["M"] if e["name"] == "thread_name"}
    assert threads == set(THREADS)
    used = {(e["pid"], e["tid"]) for e in by["X"]}
    assert {tid for _, tid in used} == {1, 2, 3, 4}          # every stream has work


def test_every_pipeline_send_has_an_arrow_to_the_step_it_feeds(fugaku_llm):
    by = check_schema(fugaku_llm[0])
    sends = [e for e in by["X"] if e["name"].startswith("send ")]
    # 7 forward sends per micro-batch (stages 0-6) and 7 backward (stages 1-7), 7 each
    assert len(sends) == len(by["s"]) == 2 * 7 * 7
    for f in by["f"]:
        fed = [x for x in by["X"] if x["pid"] == f["pid"] and x["tid"] == 1
               and x["ts"] == f["ts"]]
        assert fed and fed[0]["name"].split()[0] in ("forward", "backward")


def test_each_stage_has_its_memory_over_time(fugaku_llm):
    data, sim = fugaku_llm
    by = check_schema(data)
    peaks = {}
    for c in by["C"]:
        assert c["name"] == "memory"
        peaks[c["pid"]] = max(peaks.get(c["pid"], 0.0), c["args"]["GB"])
    assert set(peaks) == set(range(1, 9))
    assert max(peaks.values()) == pytest.approx(sim.peak_memory_bytes / 1e9)


def test_an_interleaved_schedule_links_chunks_across_the_pipeline():
    """With virtual stages the last stage's forward feeds the first stage's next chunk:
    the arrow goes from "send F0" on stage 1 to "forward F0.1" on stage 0."""
    model = load_model("fugaku-llm-13b").replace(layers=8)
    layout = Layout(tp=6, pp=2, dp=4, global_batch=8, schedule="interleaved",
                    virtual_stages=2)
    trace = Trace()
    simulate(model, load_system(), layout, trace=trace)
    by = check_schema(json.loads(json.dumps(trace.to_json())))
    names = {(x["pid"], x["ts"]): x["name"] for x in by["X"] if x["tid"] == 1}
    first = next(s for s in by["s"] if s["pid"] == 2)       # stage 1's first send
    f = next(f for f in by["f"] if f["id"] == first["id"])
    assert f["pid"] == 1 and names[(1, f["ts"])] == "forward F0.1"
