"""Inputs that once ended in an internal error, a hang or a wrong answer, each now one
line of error naming the field (exit 2, before any long work)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main

DATA = Path(__file__).resolve().parents[2] / "perfmodel" / "data"

BIG = 10 ** 400                        # an integer no float holds
SWEEP = ('[sweep]\ntitle = "t"\nsystem = "fugaku"\nnodes = 48\ndesign = "grid"\n'
         'objective = "model"\nnetwork = "analytic"\n[vary]\nfp32_tflops = [6.76, 13.5]\n'
         '[[models]]\npreset = "gpt3-125m"\nlabel = "small"\ntokens = 1e9\nglobal_batch = 48\n')


def refused(args, field):
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()     # (a warning may come before)
    line = lines[-1]
    assert line.startswith(f"error: {field}"), result.stderr
    assert sum(x.startswith("error") for x in lines) == 1 and "Traceback" not in result.output
    assert time.perf_counter() - t0 < 30                       # no hang before it
    return line


@pytest.mark.parametrize("args,field", [
    # context parallelism over more ranks than the job has
    (["simulate", "--model", "gpt3-125m", "--nodes", "12", "--cp", "16"], "nodes"),
    (["plan", "--model", "gpt3-125m", "--nodes", "24", "--cp", "64"], "nodes"),
    # a global batch past the bound before its divisors are listed
    (["simulate", "--model", "gpt3-125m", "--nodes", "12", "--global-batch", str(BIG)],
     "global_batch"),
    (["simulate", "--model", "gpt3-125m", "--nodes", "12", "--global-batch", str(10 ** 20)],
     "global_batch"),
    # more schedule steps than the simulator runs (a million micro-batches; 100,000 seeds)
    (["simulate", "--model", "gpt3-125m", "--tp", "1", "--pp", "4", "--dp", "1",
      "--global-batch", "1000000"], "global_batch"),
    (["simulate", "--model", "gpt3-125m", "--tp", "1", "--pp", "4", "--dp", "2",
      "--global-batch", "16", "--jitter", "0.1", "--runs", "100000"], "global_batch"),
    # a routing skew on a dense model, or past what ep ranks can carry
    (["simulate", "--model", "gpt3-125m", "--global-batch", "64", "--tp", "1", "--pp", "1",
      "--dp", "2", "--moe-load", "3"], "moe_load"),
    (["simulate", "--model", "fugaku-llm-moe-8x", "--global-batch", "64", "--tp", "6", "--pp",
      "4", "--dp", "8", "--ep", "2", "--moe-load", "1000"], "moe_load"),
    (["plan", "--model", "fugaku-llm-moe-8x", "--nodes", "768", "--moe-load", "9"], "moe_load"),
    # expert parallelism that no data-parallel size of this batch can hold
    (["plan", "--model", "deepseek-moe-16b", "--nodes", "12", "--ep", "64"], "ep"),
    # eco mode on a node that has none
    (["simulate", "--system", "dgx-h100", "--model", "gpt3-125m", "--nodes", "1", "--eco"],
     "eco"),
    # an empty value: not "no value", not the working directory
    (["simulate", "--model", "gpt3-125m", "--global-batch", "16", "--tp", "1", "--pp", "4",
      "--dp", "2", "--trace", ""], "--trace"),
    (["presets", "--model", ""], "--model"),
    (["sweep", "fugaku-successor", "--out="], "--out"),
    # training to a number of tokens no plan means, at a price no plan means
    (["plan", "--model", "gpt3-125m", "--nodes", "12", "--tokens", "1e30"], "tokens"),
    (["plan", "--model", "gpt3-125m", "--nodes", "12", "--tokens", "1e-30"], "tokens"),
    (["plan", "--model", "gpt3-125m", "--nodes", "12", "--price-per-node-hour", "1e30"],
     "price_per_node_hour"),
    (["plan", "--days", "1", "--nodes", "384", "--tokens", "1e30"], "tokens"),
    # a fraction of a byte
    (["collective", "allreduce", "--nodes", "12", "--bytes", "1e-3"], "--bytes"),
    # the field that does not fit named
    (["topo", "--nodes", "12", "--pp", "100000"], "pp"),
    # a Megatron launch's MoE with fewer experts than its default top-k
    (["plan", "--nodes", "12", "--from-megatron",
      "--num-layers 4 --hidden-size 256 --num-attention-heads 4 --num-experts 1"],
     "--from-megatron: --num-experts"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x)[:70])
def test_a_found_input_is_one_line_naming_the_field(args, field):
    refused(args, field)


def test_a_system_or_model_file_with_an_integer_past_a_float(tmp_path):
    system = (DATA / "systems" / "dgx-h100.toml").read_text()
    line = next(x for x in system.splitlines() if x.startswith("link_bandwidth_gbs"))
    path = tmp_path / "big.toml"
    path.write_text(system.replace(line, f"link_bandwidth_gbs = {{ value = {BIG}, "
                                         f"source = \"x\" }}"))
    err = refused(["simulate", "--system", path, "--model", "gpt3-125m", "--nodes", "1"],
                  f"{path}:dgx-h100.network.link_bandwidth_gbs: must be a finite number")
    assert err.endswith("... (401 characters)")


def test_a_launch_script_whose_variables_grow_without_end(tmp_path):
    """Each variable four copies of the last: 4^10 characters unless stopped."""
    script = tmp_path / "blow.sh"
    lines = ["A=x"] + [f'{b}="${a} ${a} ${a} ${a}"' for a, b in zip("ABCDEFGHIJ", "BCDEFGHIJK")]
    script.write_text("\n".join(lines + ["python pretrain_gpt.py $K"]) + "\n")
    refused(["simulate", "--nodes", "12", "--from-megatron", script], f"{script}: variable")


def test_an_edited_results_file_is_refused_not_summarised(tmp_path):
    """A resumed sweep summarises every record: one whose figures were edited away, or
    of another hardware point, is said as such (it once ended in a KeyError)."""
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--workers", "1", "--quiet",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    header, first, second = out.read_text().splitlines()
    for edit, why in [(lambda r: r["models"][0].pop("days"), "days is missing"),
                      (lambda r: r["models"][0].update(cost="x"), "cost is missing"),
                      (lambda r: r["hardware"].update(fp32_tflops=99.0), "not a point of")]:
        record = json.loads(first)
        edit(record)
        copy = tmp_path / "edited.jsonl"
        copy.write_text("\n".join([header, json.dumps(record), second]) + "\n")
        line = refused(["sweep", sweep, "--workers", "1", "--quiet", "--out", copy], "out")
        assert why in line, line
    shutil.copy(out, tmp_path / "again.jsonl")            # the file as written resumes
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--workers", "1", "--quiet",
                                       "--out", str(tmp_path / "again.jsonl")])
    assert result.exit_code == 0, result.output


def test_a_plan_of_more_steps_than_it_simulates_answers_by_the_estimate():
    """100,000 micro-batches a pipeline: the plan lists the estimate and no DES time
    (it once simulated each shown layout for a minute)."""
    result = CliRunner().invoke(main, ["plan", "--model", "gpt3-125m", "--tp", "1", "--pp",
                                       "4", "--dp", "3", "--global-batch", "300000", "--nodes",
                                       "12", "--top", "1", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)["best"][0]
    assert best["des"] is None and best["iteration_s"] > 0


# A calibration that fits the allreduce alone (as a hand-made or trimmed file may).
ALLREDUCE_ONLY = (
    {'format': 'fugakuperf-calibration',
     'version': 1,
     'tool_version': '0.1.0',
     'created': '2026-12-07T22:02:51+00:00',
     'host': {'cpu': 'a test CPU',
              'cores': 2,
              'threads': 2,
              'ranks': 1,
              'memory_bytes': 8589934592,
              'numpy': 'x',
              'numba': 'y',
              'date': 'today'},
     'measurements': [{'kind': 'gemm',
                       'name': 'sweep',
                       'ops': [{'name': 'matmul',
                                'kind': 'gemm',
                                'flops': 524288.0,
                                'bytes': 49152.0,
                                'm': 64,
                                'n': 64,
                                'k': 64,
                                'batch': 1,
                                'backward': 2.0,
                                'weighted': False}],
                       'seconds': 0.001,
                       'calls': 1}],
     'fit': {'compute': {'status': 2,
                         'residual_norm': 0.1,
                         'parameters': {'gemm_rate': 120000000000.0,
                                        'gemm_m0': 40.0,
                                        'gemm_n0': 60.0,
                                        'gemm_k0': 80.0,
                                        'gemm_overhead_s': 4e-06,
                                        'bandwidth': {'norm': 4000000000.0,
                                                      'softmax': 3000000000.0,
                                                      'gelu': 1500000000.0,
                                                      'residual': 80000000000.0,
                                                      'embedding': 2000000000.0,
                                                      'cross_entropy': 3500000000.0,
                                                      'optimizer': 7000000000.0},
                                        'kernel_overhead_s': 2e-06,
                                        'glue_s': 3e-05,
                                        'gemm_backward_slowdown': 1.3,
                                        'threads': 1,
                                        'ranks_per_node': 1}},
             'collectives': {'allreduce': {'alpha_s': 1e-06,
                                           'bandwidth_bytes_per_s': 1000000000.0,
                                           'points': 4}}}})


def test_a_calibration_without_the_collective_a_layout_needs(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(ALLREDUCE_ONLY))
    line = refused(["plan", "--calibration", path, "--force-calibration", "--model",
                    "fugaku-llm-13b", "--nodes", "384"], "calibration")
    assert "no fit for 'reduce-scatter' or 'allgather'" in line


def test_an_output_over_an_input_is_refused(tmp_path):
    model = tmp_path / "m.toml"
    model.write_text("[tiny]\nlayers = 4\nhidden = 384\nheads = 6\nvocab = 1000\nseq = 128\n")
    refused(["simulate", "--model", model, "--nodes", "12", "--tp", "6", "--global-batch", "12",
             "--trace", model], "trace")
    assert model.read_text().startswith("[tiny]")
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    refused(["sweep", sweep, "--out", sweep, "--restart"], "out")
    refused(["sweep", sweep, "--out", tmp_path / "r.jsonl", "--html", sweep], "html")
    refused(["sweep", sweep, "--out", tmp_path / "r.jsonl", "--html", tmp_path / "r.jsonl"],
            "html")
    assert sweep.read_text() == SWEEP


@pytest.mark.parametrize("edit,field", [
    (("memory_gib", "[32, 64]\n[cost]\nnode_hour_price = 1e308"), "cost.node_hour_price"),
    (("price_per_node_hour", "[1e308]"), "vary.price_per_node_hour[0]"),
])
def test_a_sweep_price_no_record_can_hold(tmp_path, edit, field):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace("fp32_tflops = [6.76, 13.5]", f"{edit[0]} = {edit[1]}"))
    refused(["sweep", sweep, "--list"], f"{sweep}.{field}")


def test_a_power_limit_on_a_system_without_power_is_refused(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace('system = "fugaku"', 'system = "selene"').replace(
        "fp32_tflops = [6.76, 13.5]", "nodes = [8]\n[constraints]\nmw = 1").replace(
        'preset = "gpt3-125m"', 'preset = "gpt3-125m"\nprecision = "bf16"'))
    refused(["sweep", sweep, "--list"], f"{sweep}.constraints.mw")


def test_a_sweeps_torus_is_the_machine_its_budget_plans_on(tmp_path):
    """A torus of 96 nodes and a budget of 384: the job fits the torus (the budget once
    grew it, and the record said 96 nodes beside a job of 336)."""
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace("fp32_tflops = [6.76, 13.5]",
                                   'torus = ["2x2x2x2x3x2"]\nnodes = [384]'))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["sweep", str(sweep), "--workers", "1", "--quiet",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text().splitlines()[1])
    assert record["models"][0]["nodes"] <= 96


def test_flows_on_a_torus_of_more_axes_than_any_machine(tmp_path):
    flows = tmp_path / "f.json"
    flows.write_text("[[0, 1, 1000]]")
    refused(["flows", flows, "--shape", "x".join(["1"] * 64 + ["4"]), "--link-gbs", "6.8"],
            "shape: has 65 axes")
