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
    (["collective", "allreduce", "--nodes", "384", "--bytes", "-5"], "--bytes"),
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


FUGAKU_LLM = ["--model", "fugaku-llm-13b", "--nodes", "13824", "--tp", "6", "--pp", "8",
              "--global-batch", "2016", "--recompute", "full", "--recompute-stages", "4"]


def test_simulate_json_has_the_documented_keys(tmp_path):
    trace = tmp_path / "it.json"
    d = ok_json("simulate", *FUGAKU_LLM, "--trace", str(trace))
    assert {"iteration_s", "tokens_per_s", "bubble_fraction", "breakdown", "peak_memory_bytes",
            "events"} <= set(d)
    assert d["layout"]["recompute_stages"] == 4 and d["layout"]["dp"] == 288
    assert d["tokens_per_s"] == pytest.approx(2016 * 2048 / d["iteration_s"])
    assert sum(d["breakdown"].values()) == pytest.approx(d["iteration_s"])
    assert 0 < d["bubble_fraction"] < 1 and d["events"] > 0 and d["memory_fits"]
    events = json.loads(trace.read_text())["traceEvents"]
    processes = {e["args"]["name"] for e in events
                 if e["ph"] == "M" and e["name"] == "process_name"}
    assert processes == {f"pipeline stage {i}" for i in range(8)}
    names = {e["name"] for e in events if e["ph"] == "X"}
    assert {"forward F0", "optimizer"} <= names
    # fp32 activations of one sequence: 2048 x 5184 x 4 bytes
    assert "TP all-reduce, 2 x 42.5 MB a layer (F0)" in names
    assert any(n.startswith("DP ") for n in names)


def test_simulate_says_which_streams_shared_links():
    """Fugaku-LLM's streams share no link; Jean Zay's pipeline sends and gradient
    reductions share each GPU's NIC, and the text says at what speed."""
    assert ok_json("simulate", *FUGAKU_LLM)["shared_links"] == {}
    args = ["simulate", "--system", "jeanzay-a100", "--model", "megatron-39.1b", "--tp", "8",
            "--pp", "4", "--dp", "8", "--global-batch", "512"]
    shared = ok_json(*args)["shared_links"]
    assert set(shared) == {"pp beside reduce", "reduce beside pp"}
    assert all(0 < speed < 1 for speed in shared.values())
    text = run(*args).output
    assert "links shared while streams overlap" in text
    assert f"pp beside reduce {shared['pp beside reduce']:.2f}x" in text


def test_simulate_is_deterministic_unless_asked_for_noise():
    a, b = (ok_json("simulate", *FUGAKU_LLM) for _ in range(2))
    a.pop("wall_s"), b.pop("wall_s")
    assert a == b
    noisy = ok_json("simulate", *FUGAKU_LLM, "--jitter", "0.05", "--runs", "5")
    v = noisy["variability"]
    assert v["runs"] == 5 and v["min_s"] <= v["mean_s"] <= v["p99_s"] <= v["max_s"]


STRAGGLERS = ["--stragglers", "1e-4", "--straggler-slowdown", "2"]


def test_simulate_with_noise_headlines_the_mean_and_p99_beside_the_noise_free_time():
    quiet = ok_json("simulate", *FUGAKU_LLM)
    d = ok_json("simulate", *FUGAKU_LLM, *STRAGGLERS, "--runs", "20")
    v = d["variability"]
    # the deterministic figures stay the noise-free ones; the runs sit beside them
    assert d["iteration_s"] == v["noise_free_s"] == quiet["iteration_s"]
    assert d["breakdown"] == quiet["breakdown"]
    assert v["runs"] == 20 and v["seeds"] == [0, 19] and not v["one_sample"]
    assert v["noise_free_s"] <= v["min_s"] <= v["mean_s"] <= v["p99_s"] <= v["max_s"]
    assert v["mean_over_noise_free"] == pytest.approx(v["mean_s"] / v["noise_free_s"] - 1)
    text = run("simulate", *FUGAKU_LLM, *STRAGGLERS, "--runs", "20").output
    headline = text.splitlines()[1]
    assert headline.startswith("with 0.0001 of nodes 2x slower, over 20 runs (seeds 0-19): "
                               f"mean {v['mean_s']:.4g} s, p99 {v['p99_s']:.4g} s")
    assert f"vs the noise-free {v['noise_free_s']:.4g} s" in headline
    assert "below 100 runs the p99 is the slowest run" in headline
    assert text.splitlines()[2].startswith(f"noise-free iteration {quiet['iteration_s']:.4g} s")


def test_simulate_with_one_noisy_run_says_it_is_one_sample():
    d = ok_json("simulate", *FUGAKU_LLM, "--jitter", "0.05")
    v = d["variability"]
    assert v["runs"] == 1 and v["one_sample"] and v["mean_s"] == v["p99_s"]
    text = run("simulate", *FUGAKU_LLM, "--jitter", "0.05").output
    assert "one sample (seed 0), not a mean" in text
    assert "--runs N gives the mean and p99" in text


def test_simulate_says_runs_do_nothing_without_noise():
    text = run("simulate", *FUGAKU_LLM, "--runs", "3").output
    assert "--runs has no effect without --jitter or --stragglers" in text


def test_simulate_picks_the_best_layout_when_not_pinned():
    d = ok_json("simulate", "--model", "fugaku-llm-13b", "--nodes", "1536")
    assert d["layout"]["tp"] * d["layout"]["pp"] * d["layout"]["dp"] == 1536


def test_plan_shows_the_simulation_beside_the_estimate():
    d = ok_json("plan", "--model", "fugaku-llm-13b", "--nodes", "13824", "--top", "2")
    assert all(e["des"]["iteration_s"] > 0 for e in d["best"])


@pytest.mark.parametrize("args,field", [
    (["simulate", "--model", "fugaku-llm-13b"], "nodes"),
    (["simulate", "--model", "fugaku-llm-13b", "--nodes", "100", "--tp", "6", "--pp", "8"], "nodes"),
    (["simulate", *FUGAKU_LLM, "--trace", "/nonexistent/dir/t.json"], "trace"),
])
def test_simulate_bad_input(args, field):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field}"), result.stderr


# ------------------------------------------- a job larger than the given --shape
SMALL = ["--shape", "2x3x4"]            # 1x1x2x2x3x2: 24 nodes


@pytest.mark.parametrize("args", [
    ["plan", "--params", "13e9", *SMALL],                              # the default ladder
    ["plan", "--params", "1e9", "--nodes", "48", *SMALL],
    ["plan", "--params", "1e9", "--max-nodes", "48", *SMALL],
    ["simulate", "--params", "13e9", "--nodes", "384", *SMALL],
    ["simulate", "--params", "1e9", "--nodes", "48", "--tp", "1", "--pp", "1", *SMALL],
    ["collective", "allreduce", "--nodes", "384", "--bytes", "4MiB", *SMALL],
    ["topo", "--nodes", "384", *SMALL],
])
def test_a_shape_smaller_than_the_job_is_refused_naming_both(args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("error: shape: 2x3x4 is 1x1x2x2x3x2") and "24 nodes" in err, err
    assert len(err.splitlines()) == 1


def test_report_refuses_a_shape_smaller_than_the_job_before_writing(tmp_path):
    out = tmp_path / "report"
    result = run("report", "--params", "13e9", *SMALL, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: shape: ")
    assert not out.exists()


def test_a_shape_that_holds_the_job_is_used():
    d = ok_json("topo", "--nodes", "24", *SMALL)
    assert d["shape"] == [1, 1, 2, 2, 3, 2]


# ------------------------------------------------------------- odd inputs
@pytest.mark.parametrize("args, field", [
    (["topo", "--nodes", "12", "--shape", "0x0x0"], "shape"),
    (["topo", "--nodes", "12", "--shape", "99999999999x2x2"], "shape"),
    (["topo", "--nodes", "12", "--shape", "2x3x\u00b2"], "shape"),
    (["topo", "--nodes", "12", "--shape", "2x3x" + "9" * 5000], "shape"),
    (["topo", "--nodes", "200000"], "nodes"),
    (["topo", "--nodes", "12", "--system", "selene", "--shape", "2x3x2"], "shape"),
    (["collective", "allreduce", "--nodes", "2", "--bytes", "8", "--system", "selene",
      "--shape", "2x3x2"], "shape"),
    (["collective", "allreduce", "--nodes", "2", "--bytes", "1e30"], "bytes"),
    (["simulate", "--params", "1e9", "--nodes", "999999999"], "nodes"),
    (["simulate", "--params", "1e9", "--nodes", "999999999", "--tp", "1", "--pp", "1"], "nodes"),
    (["plan", "--params", "1e9", "--nodes", "999999999"], "nodes"),
])
def test_odd_input_is_one_line_naming_the_field(args, field):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith(f"error: {field}: ") and len(err.splitlines()) == 1, err


def test_a_system_file_with_nan_is_refused(tmp_path):
    from importlib import resources
    text = (resources.files("perfmodel.data") / "systems" / "fugaku.toml").read_text()
    path = tmp_path / "nan.toml"
    path.write_text(text.replace("large_allocation_threshold_nodes = { value = 384,",
                                 "large_allocation_threshold_nodes = { value = nan,"))
    result = run("topo", "--nodes", "12", "--system", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: {path}:fugaku.network.large_allocation_threshold_nodes: ")


def test_a_torus_without_the_six_tofu_axes_has_no_placement_to_describe(tmp_path):
    from importlib import resources
    text = ((resources.files("perfmodel.data") / "systems" / "fugaku.toml").read_text()
            .replace('["X", "Y", "Z", "a", "b", "c"]', '["X"]')
            .replace("[24, 23, 24, 2, 3, 2]", "[24]")
            .replace("[true, true, true, false, true, false]", "[true]")
            .replace('model = { value = "flow"', 'model = { value = "analytic"'))
    path = tmp_path / "ring.toml"
    path.write_text(text)
    result = run("topo", "--nodes", "12", "--system", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: system: fugaku's torus has 1 axes"), result.stderr


def test_topo_takes_dp_for_the_job_size():
    """`topo --tp 6 --pp 8 --dp 288` is Fugaku-LLM's job (13,824 nodes at one rank a
    node); a --dp that disagrees with --nodes is refused by name."""
    d = ok_json("topo", "--tp", "6", "--pp", "8", "--dp", "288")
    assert d["nodes"] == 13824
    bad = CliRunner().invoke(main, ["topo", "--nodes", "13824", "--tp", "6", "--pp", "8",
                                    "--dp", "200"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: dp")


# --- --nodes a list, as on plan ------------------------------------------------------------

def test_collective_on_several_node_counts_is_a_table_and_each_count_its_own_answer():
    args = ["collective", "allreduce", "--ppn", "4", "--bytes", "8"]
    d = ok_json(*args, "--nodes", "384,27648")
    assert d["nodes"] == [384, 27648]
    alone = [ok_json(*args, "--nodes", n) for n in ("384", "27648")]
    assert d["collectives"] == alone
    assert alone[0]["time_s"] < alone[1]["time_s"]          # latency grows with the machine
    text = run(*args, "--nodes", "384,27648").stdout
    assert "27,648" in text and "4.93 us" in text and "8.07 us" in text


def test_simulate_on_several_node_counts_simulates_each_layout():
    args = ["simulate", "--params", "13e9"]
    d = ok_json(*args, "--nodes", "1536,13440")
    assert d["nodes"] == [1536, 13440]
    assert [x["nodes"] for x in d["simulations"]] == [1536, 13440]
    one = ok_json(*args, "--nodes", "1536")
    first = dict(d["simulations"][0])
    first.pop("wall_s"), one.pop("wall_s")
    assert first == one
    result = run(*args, "--nodes", "1536,13440")
    assert result.exit_code == 0
    assert "one iteration simulated on each node count" in result.stdout
    assert "[2 of 2] 13,440 nodes" in result.stderr


def test_several_node_counts_are_all_checked_before_any_work(tmp_path):
    """A count no layout runs on is refused before the first count is simulated; a
    trace is one iteration."""
    result = run("simulate", "--params", "13e9", "--nodes", "1536,13824")
    assert result.exit_code == 2 and "13,824" in result.stderr
    assert "[1 of" not in result.stderr and result.stdout == ""
    result = run("simulate", "--params", "13e9", "--nodes", "1536,13440",
                 "--trace", str(tmp_path / "t.json"))
    assert result.exit_code == 2 and "trace" in result.stderr
    assert not (tmp_path / "t.json").exists()
    result = run("collective", "allreduce", "--bytes", "8", "--nodes", "384,1")
    assert result.exit_code == 2 and "at least 2 ranks" in result.stderr


def test_topo_describes_each_node_count():
    d = ok_json("topo", "--nodes", "384,768", "--tp", "4")
    assert d["nodes"] == [384, 768] and [j["nodes"] for j in d["jobs"]] == [384, 768]
    text = run("topo", "--nodes", "384,768", "--tp", "4").stdout
    assert "job: 384 nodes" in text and "job: 768 nodes" in text
    result = run("topo", "--nodes", "384,768", "--tp", "4", "--pp", "2", "--dp", "48")
    assert result.exit_code == 2 and "768" in result.stderr
