"""``fugakuperf plan`` through click's CliRunner: JSON shape, internal consistency,
the Fugaku-LLM pinned run, and one-line errors for bad input."""

import json

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main
from perfmodel.sizing import model_for_params

FUGAKU_LLM_RUN = ["--model", "fugaku-llm-13b", "--nodes", "13824", "--tp", "6", "--pp", "8",
                  "--global-batch", "2016", "--recompute", "full", "--recompute-stages", "4"]
LAYOUT_KEYS = {"tp", "pp", "dp", "micro_batch", "global_batch", "schedule", "virtual_stages",
               "zero", "recompute", "sequence_parallel", "precision"}
ENTRY_KEYS = {"layout", "iteration_s", "tokens_per_s", "model_tflops_per_node", "mfu",
              "memory_bytes_per_node", "memory_fits", "time_to_train_s", "node_hours",
              "energy_mwh"}


def run(*args: str):
    return CliRunner().invoke(main, ["plan", *args])


def stderr(result) -> str:
    """What the user sees on stderr (click < 8.2 mixes it into ``output``)."""
    try:
        return result.stderr
    except ValueError:
        return result.output


def ok_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def plan13():
    return ok_json("--params", "13e9")


@pytest.fixture(scope="module")
def fugaku_llm():
    return ok_json(*FUGAKU_LLM_RUN)


# ------------------------------------------------------------- plan --params 13e9
def test_json_has_the_documented_keys(plan13):
    assert {"model", "system", "nodes", "candidates_evaluated", "best"} <= set(plan13)
    assert plan13["model"]["params"] == model_for_params(13e9).params
    assert plan13["candidates_evaluated"] > 0
    assert plan13["best"], "no layout found"
    for entry in plan13["best"]:
        assert ENTRY_KEYS <= set(entry)
        assert LAYOUT_KEYS <= set(entry["layout"])


def test_default_plan_echoes_fugaku_llm_defaults(plan13):
    s = plan13["system"]
    assert (s["name"], s["clock_ghz"], s["eco_mode"], s["ranks_per_node"]) == ("fugaku", 2.2,
                                                                                 False, 1)
    assert plan13["global_batch"] == 2016          # 2016 x 2048 tokens, seq 2048
    assert plan13["tokens"] == pytest.approx(20 * plan13["model"]["params"])
    assert max(plan13["nodes"]) == 13824


def test_numbers_are_consistent(plan13):
    seq, nodes_budget = plan13["model"]["seq"], max(plan13["nodes"])
    usable = plan13["system"]["usable_memory_bytes_per_node"]
    for e in plan13["best"]:
        lay = e["layout"]
        assert lay["tp"] * lay["pp"] * lay["dp"] == e["nodes"] <= nodes_budget   # ppn 1
        assert lay["global_batch"] % (lay["dp"] * lay["micro_batch"]) == 0
        assert e["tokens_per_s"] == pytest.approx(lay["global_batch"] * seq / e["iteration_s"],
                                                  rel=1e-9)
        assert e["time_to_train_s"] == pytest.approx(plan13["tokens"] / e["tokens_per_s"],
                                                     rel=1e-9)
        assert e["node_hours"] == pytest.approx(e["nodes"] * e["time_to_train_s"] / 3600,
                                                rel=1e-9)
        assert e["energy_mwh"] == pytest.approx(
            e["node_hours"] * plan13["system"]["power_w_per_node"] / 1e6, rel=1e-9)
        assert e["memory_fits"] is True
        assert 0 < e["memory_bytes_per_node"] <= usable
        assert 0 < e["mfu"] < 1


def test_mfu_counts_korthikanti_model_flops_against_peak(plan13):
    """Model FLOPs per iteration: 72 B s l h^2 (1 + s/6h + V/12lh) (Korthikanti et al. Eq. 7)."""
    m = plan13["model"]
    s, l, h, v = m["seq"], m["layers"], m["hidden"], m["vocab"]
    for e in plan13["best"]:
        flops = 72 * e["layout"]["global_batch"] * s * l * h * h * (1 + s / (6 * h) + v / (12 * l * h))
        tflops = flops / e["iteration_s"] / e["nodes"] / 1e12
        assert e["model_tflops_per_node"] == pytest.approx(tflops, rel=1e-9)
        peak = plan13["system"]["peak_tflops_per_node"][e["layout"]["precision"]]
        assert e["mfu"] == pytest.approx(tflops / peak, rel=1e-9)


def test_best_is_sorted_by_the_slow_end_of_the_band(plan13):
    """Ranked by the objective (p90 by default), not by the model's own time: the
    band's slow end, unless a layout with evidence was preferred among equals."""
    assert plan13["objective"] == "p90" and not plan13["preferred_for_evidence"]
    highs = [e["band"]["iteration_s_high"] for e in plan13["best"]]
    assert highs == sorted(highs)
    times = [e["iteration_s"] for e in plan13["best"]]
    assert times != sorted(times)          # (here the two orders differ)


def test_the_model_objective_sorts_by_iteration_time():
    d = ok_json("--params", "13e9", "--objective", "model", "--top", "4")
    times = [e["iteration_s"] for e in d["best"]]
    assert times == sorted(times)


def test_every_layout_shown_has_a_band_that_contains_its_prediction(plan13):
    for e in plan13["best"] + [g["best"] for g in plan13["ladder"] if g["best"]]:
        b = e["band"]
        assert b["iteration_s_low"] < e["iteration_s"] < b["iteration_s_high"]
        assert b["iteration_s"] == e["iteration_s"]
        assert b["time_to_train_s_high"] == pytest.approx(
            e["time_to_train_s"] * b["iteration_s_high"] / e["iteration_s"])
        # no published run of a 13B model on Fugaku: the wide band, and it says so
        assert b["evidence_runs"] < 3 and b["width"] > 1.0
    first = plan13["best"][0]["band"]
    assert first["parameters"][0]["key"] == "node.gemm_efficiency"


def test_text_report_prints_the_exact_parameter_count():
    result = run("--params", "13e9")
    assert result.exit_code == 0, result.output
    assert f"{model_for_params(13e9).params:,}" in result.stdout
    assert "Assumptions" in result.stdout


def test_four_ranks_per_node_use_four_times_the_ranks():
    d = ok_json("--params", "13e9", "--ppn", "4", "--top", "2")
    assert d["system"]["ranks_per_node"] == 4
    for e in d["best"]:
        lay = e["layout"]
        assert lay["tp"] * lay["pp"] * lay["dp"] == 4 * e["nodes"]
        assert e["memory_bytes_per_node"] <= d["system"]["usable_memory_bytes_per_node"]


def test_price_adds_a_cost_column():
    d = ok_json("--params", "13e9", "--top", "1", "--price-per-node-hour", "2.5")
    e = d["best"][0]
    assert e["cost"] == pytest.approx(2.5 * e["node_hours"], rel=1e-12)


# -------------------------------------------------------- Fugaku-LLM's own run
def test_fugaku_llm_pinned_layout(fugaku_llm):
    lay = fugaku_llm["best"][0]["layout"]
    assert {k: lay[k] for k in ("tp", "pp", "dp", "micro_batch", "recompute",
                                "recompute_stages")} == dict(tp=6, pp=8, dp=288, micro_batch=1,
                                                             recompute="full", recompute_stages=4)
    assert fugaku_llm["best"][0]["nodes"] == 13824
    assert fugaku_llm["best"][0]["memory_fits"] is True
    assert fugaku_llm["model"]["params"] == 13_167_577_728
    assert fugaku_llm["pins"] == dict(tp=6, pp=8, recompute="full", recompute_stages=4)


def test_fugaku_llm_comparison_with_the_best_unpinned_layout(fugaku_llm):
    c = fugaku_llm["comparison"]
    assert 1 <= c["rank"] <= c["of"]
    assert isinstance(c["reasons"], list) and c["reasons"]
    assert all(isinstance(r, str) and r for r in c["reasons"])
    assert c["best_unpinned"]["iteration_s"] <= c["pinned"]["iteration_s"]
    assert c["best_unpinned"]["nodes"] == c["pinned"]["nodes"] == 13824
    assert c["pinned"]["layout"] == fugaku_llm["best"][0]["layout"]
    assert c["slowdown"] == pytest.approx(
        c["pinned"]["iteration_s"] / c["best_unpinned"]["iteration_s"] - 1, rel=1e-9)


def test_fugaku_llm_text_report_ranks_the_pinned_layout():
    result = run(*FUGAKU_LLM_RUN)
    assert result.exit_code == 0, result.output
    assert "Pinned layout ranks" in result.stdout
    assert "13,167,577,728" in result.stdout


def test_recompute_stages_without_pp_searches_pipelines_deep_enough():
    result = run("--model", "fugaku-llm-13b", "--recompute", "full", "--recompute-stages", "4",
                 "--max-nodes", "384", "--top", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best"][0]["layout"]["pp"] >= 4


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("args, field", [
    (["--params", "-5"], "params"),
    (["--model", "nope"], "model"),
    (["--model", "fugaku-llm-13b", "--tp", "7"], "tp"),
    (["--model", "fugaku-llm-13b", "--pp", "3"], "pp"),
    (["--model", "fugaku-llm-13b", "--nodes", "13823"], "nodes"),
    (["--params", "13e9", "--clock", "2.5"], "clock"),
    (["--params", "13e9", "--ppn", "3"], "ppn"),
    (["--params", "13e9", "--model", "gpt3-13b"], "params"),
    (["--params", "13e9", "--layers", "3"], "layers"),
    (["--hidden", "100"], "model"),
    (["--params", "13e9", "--max-nodes", "999999"], "max_nodes"),
    (["--model", "fugaku-llm-13b", "--recompute", "none", "--recompute-stages", "2"],
     "recompute_stages"),
    (["--model", "fugaku-llm-13b", "--tp", "1", "--sequence-parallel"], "sequence_parallel"),
    (["--params", "13e9", "--system", "nope"], "system"),
    # the inverse question (--days) refuses what it cannot answer
    (["--days", "30", "--params", "13e9"], "params"),
    (["--days", "30", "--tp", "6"], "tp"),
    (["--days", "30", "--nodes", "384,768"], "nodes"),
    (["--days", "30", "--max-mw", "0.0001"], "max-mw"),
    (["--days", "30", "--max-mw", "1", "--system", "mosaic-a100"], "max-mw"),  # no power given
    (["--params", "13e9", "--budget-node-hours", "1e6"], "budget-node-hours"),
    (["--days", "0"], "--days"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_bad_input_is_one_line_naming_the_field(args, field):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    err = stderr(result)
    assert err.startswith(f"error: {field}: "), err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_unreachable_node_count_lists_the_nearest_that_work():
    result = run("--model", "fugaku-llm-13b", "--nodes", "13823")
    err = stderr(result)
    assert result.exit_code == 2 and err.startswith("error: nodes: ")
    assert "nearest" in err and "13,824" in err   # 6 x 8 x 288, Fugaku-LLM's own job


def test_malformed_model_file_is_named(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[mymodel]\nlayers = = 3\n")
    result = run("--model", str(path))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    err = stderr(result)
    assert err.startswith(f"error: {path}: ") and "malformed TOML" in err
    assert "Traceback" not in result.output


def test_malformed_system_file_is_named(tmp_path):
    path = tmp_path / "broken-system.toml"
    path.write_text("[sys\n")
    result = run("--params", "13e9", "--system", str(path))
    assert result.exit_code == 2, result.output
    assert stderr(result).startswith(f"error: {path}: ")


@pytest.mark.parametrize("args, flag", [(["--params", "abc"], "--params"),
                                        (["--params", "13e9", "--nodes", "0"], "--nodes"),
                                        (["--params", "13e9", "--zero", "4"], "--zero")])
def test_unparseable_values_are_click_usage_errors(args, flag):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = stderr(result)
    assert err.startswith(f"error: {flag}: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in result.output


# ------------------------------------------------- what the text says is true
def test_price_adds_a_cost_column_to_the_text_table_and_the_recommendation():
    result = run("--params", "13e9", "--top", "2", "--price-per-node-hour", "2.5")
    assert result.exit_code == 0, result.output
    d = ok_json("--params", "13e9", "--top", "2", "--price-per-node-hour", "2.5")
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.startswith("#  ") or line.startswith("up to")]
    assert headers and all(h.split()[-1] == "cost" for h in headers), headers
    recommended = next(line for line in lines if line.startswith("Recommended:"))
    assert f"cost {d['best'][0]['cost']:,.0f}" in recommended
    assert "cost" not in run("--params", "13e9", "--top", "1").stdout.split("Assumptions")[0]


@pytest.mark.parametrize("extra", [[], ["--precision", "fp16"], ["--zero", "0"],
                                   ["--recompute-stages", "8"]],
                         ids=lambda x: " ".join(x) or "fp32")
def test_pinned_comparison_never_says_negative_slower_nor_compares_equal_values(extra):
    import re
    result = run(*FUGAKU_LLM_RUN, *extra)
    assert result.exit_code == 0, result.output
    text = result.stdout.split("Assumptions")[0]
    assert not re.search(r"-\d[\d.]*% slower", text), text
    assert not re.search(r"\b(\S+ \S+) vs \1\b", text), text
    assert not re.search(r"\b(\S+) vs \1\b", text), text
    assert "7 over 8" not in text


@pytest.mark.parametrize("args, field", [
    (["--model", "llama2-70b", "--tp", "16"], "tp"),
    (["--model", "fugaku-llm-13b", "--zero", "3", "--pp", "2"], "zero"),
    (["--model", "fugaku-llm-13b", "--schedule", "interleaved", "--pp", "2"], "schedule"),
    (["--model", "fugaku-llm-13b", "--zero", "1", "--dp", "1"], "zero"),
    (["--params", "13e9", "--top", "5", "--confirm", "1"], "confirm"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_layouts_no_framework_runs_are_one_line_errors(args, field):
    result = run(*args)
    assert result.exit_code == 2, result.output
    err = stderr(result)
    assert err.startswith(f"error: {field}: "), err
    assert len(err.strip().splitlines()) == 1


def test_a_zero_stage_the_stack_does_not_run_is_refused_with_its_source():
    result = run("--params", "13e9", "--zero", "3")
    assert result.exit_code == 2
    err = stderr(result).strip()
    assert err.startswith("error: zero: stack fugaku-llm of fugaku runs ZeRO stage(s) 0 ("), err
    assert "no --deepspeed configuration" in err and err.endswith("got 3")


def test_fp16_states_its_assumptions():
    text = run("--params", "13e9", "--precision", "fp16", "--top", "1").stdout
    assumptions = text.split("Assumptions:")[1]
    assert "FP16" in assumptions and "loss scaling" in assumptions and "18 bytes" in assumptions


def test_the_model_name_is_its_real_size():
    d = ok_json("--params", "20.861e9", "--top", "1", "--max-nodes", "384")
    assert d["model"]["name"] == f"gpt-{d['model']['params'] / 1e9:.3g}B"
    assert "20,861,000,000" in d["model"]["source"]
