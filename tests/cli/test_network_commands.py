"""``fugakuperf collective`` and ``fugakuperf topo`` through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def ok_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_collective_json_has_the_documented_keys():
    d = ok_json("collective", "allreduce", "--nodes", "384", "--ppn", "4", "--bytes", "4MiB")
    assert {"time_s", "algorithm", "bandwidth_bytes_per_s"} <= set(d)
    assert d["ranks"] == 1536 and d["bytes"] == 4 * 2**20
    assert d["bandwidth_bytes_per_s"] == pytest.approx(d["bytes"] / d["time_s"])
    assert d["algorithm"] in d["algorithms_s"]
    assert d["time_s"] == pytest.approx(min(d["algorithms_s"].values()), rel=0.01)


def test_ping_pong_between_two_nodes():
    d = ok_json("collective", "p2p", "--nodes", "2", "--bytes", "0")
    assert d["time_s"] == pytest.approx(1.05e-6)           # the measured MPI latency


def test_collective_text_names_the_algorithm():
    result = run("collective", "barrier", "--nodes", "384", "--ppn", "4", "--bytes", "0")
    assert result.exit_code == 0
    assert "dissemination" in result.output and "placement" in result.output


def test_topo_describes_the_fugaku_llm_job():
    d = ok_json("topo", "--nodes", "13824", "--tp", "6", "--pp", "8", "--shape", "48x6x48:torus")
    assert d["shape"] == [24, 2, 24, 2, 3, 2] and d["virtual_shape"] == [48, 6, 48]
    assert d["layout"] == {"tp": 6, "pp": 8, "dp": 288}
    tp, pp = d["dimensions"]["tp"], d["dimensions"]["pp"]
    assert tp["pieces"] == [["c", 2], ["b", 3]] and tp["max_flows_per_link"] == 1
    assert pp["hops_max"] <= 7 and pp["pieces"] == [["Z", 8]]
    assert d["dimensions"]["dp"]["hottest_links"]


def test_linear_mapping_loads_links_harder():
    tofu = ok_json("topo", "--nodes", "13824", "--tp", "6", "--pp", "8", "--shape", "48x6x48")
    linear = ok_json("topo", "--nodes", "13824", "--tp", "6", "--pp", "8", "--shape", "48x6x48",
                     "--mapping", "linear")
    assert linear["strategy"] == "linear"
    assert linear["dimensions"]["pp"]["hops_mean"] > tofu["dimensions"]["pp"]["hops_mean"]


@pytest.mark.parametrize("args,field", [
    (["collective", "allreduce", "--nodes", "384", "--bytes", "-5"], "bytes"),
    (["collective", "allreduce", "--nodes", "1", "--bytes", "8"], "nodes"),
    (["collective", "allreduce", "--nodes", "200000", "--bytes", "8"], "nodes"),
    (["collective", "allreduce", "--nodes", "384", "--bytes", "8", "--shape", "48x7x48"], "shape"),
    (["collective", "allreduce", "--nodes", "384", "--bytes", "8", "--ppn", "3"], "ppn"),
    (["topo", "--nodes", "384", "--tp", "5"], "tp"),
    (["plan", "--params", "13e9", "--shape", "24x2x24x2x3x3"], "shape"),
])
def test_bad_input_is_one_line_naming_the_field(args, field):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert err.startswith(f"error: {field}"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_collective_is_a_usage_error():
    result = run("collective", "allscatter", "--nodes", "4", "--bytes", "8")
    assert result.exit_code == 2 and "allscatter" in result.output


def test_max_min_rates_agree_with_the_bottleneck_pricing():
    """Two implementations, one answer: the slowest max-min rate of a ring step
    (progressive filling) is the fabric's bottleneck share used to price phases."""
    from perfmodel.estimator import network_for
    from perfmodel.system import load_system
    from topologies import JobShape
    from topologies.collectives import algorithms
    net = network_for(load_system(shape="48x6x48:torus"))
    job = JobShape(6, 8, 288)
    d = ok_json("topo", "--nodes", "13824", "--tp", "6", "--pp", "8", "--shape", "48x6x48:torus")
    pl = net.placement(job)
    for dim in ("tp", "dp", "pp"):
        step = algorithms("allreduce", pl.groups(dim), [n for _, n in pl.pieces[dim]])["ring"][0]
        priced = net.fabric(job).phase(step.src, step.dst)
        assert d["dimensions"][dim]["max_min_rate_bytes_per_s"]["min"] == pytest.approx(priced.rate)
