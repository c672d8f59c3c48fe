"""``fugakuperf sweep`` through click's CliRunner: the listing, the summary as text and
JSON, the page, and one-line errors before any work."""

import json

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main

from .test_plan import stderr

SWEEP = """
[sweep]
title = "tiny"
system = "fugaku"
nodes = 96
design = "one-at-a-time"

[vary]
fp16_tflops = [27]
link_bandwidth_gbs = [13.6]

[[models]]
params = 1e9
tokens = 20e9
precision = "fp16"

[cost]
shares = { compute = 0.4, network = 0.2 }

[constraints]
days = 30
"""


def run(*args: str):
    return CliRunner().invoke(main, ["sweep", *args])


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP)
    return path


def test_list_names_the_knobs_models_and_points(sweep_file):
    result = run(str(sweep_file), "--list")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tiny: 3 hardware points (one-at-a-time) on fugaku")
    assert "fp16_tflops" in result.stdout and "(base 13.5168)" in result.stdout
    assert "model gpt-" in result.stdout
    # the same with --json, for scripts
    result = run(str(sweep_file), "--list", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["title"], d["points"], d["design"], d["system"]) == ("tiny", 3, "one-at-a-time",
                                                                   "fugaku")
    fp16 = next(k for k in d["knobs"] if k["name"] == "fp16_tflops")
    assert fp16["base"] == pytest.approx(13.5168) and fp16["unit"] == "TFLOP/s"
    assert d["models"] and d["models"][0]["label"].startswith("gpt-")


def test_json_summary_and_the_results_file(sweep_file, tmp_path):
    out = tmp_path / "r.jsonl"
    result = run(str(sweep_file), "--out", str(out), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["points"] == d["done"] == 3 and d["results_file"] == str(out)
    [m] = d["models"]
    assert m["with_layout"] == 3
    assert [c["knob"] for c in m["changes"]] == sorted(
        [c["knob"] for c in m["changes"]],
        key=lambda k: -next(c["days_per_price_pct"] or 0 for c in m["changes"] if c["knob"] == k))
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["sweep"] == "tiny"
    # run again: nothing left to do, the same summary
    again = run(str(sweep_file), "--out", str(out), "--json", "--quiet")
    assert json.loads(again.stdout)["models"] == d["models"]


def test_text_summary_and_page(sweep_file, tmp_path):
    page = tmp_path / "page.html"
    result = run(str(sweep_file), "--out", str(tmp_path / "r.jsonl"), "--html", str(page))
    assert result.exit_code == 0, result.output
    assert "single changes against the base point" in result.stdout
    assert "Pareto front, time against cost" in result.stdout
    assert "sweep: 3 hardware points x 1 models on" in stderr(result)
    html = page.read_text()
    assert html.count('<img src="data:image/png;base64,') == 2      # Pareto, sensitivity
    assert "Co-design sweep: tiny" in html and "Inputs" in html


@pytest.mark.parametrize("content, words", [
    (SWEEP.replace("[27]", "[0]"), "vary.fp16_tflops[0]"),
    (SWEEP.replace('system = "fugaku"', 'system = "nowhere"'), "sweep.system"),
    ("[sweep\n", "malformed TOML"),
])
def test_bad_sweep_file_is_one_line_exit_2(tmp_path, content, words):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = run(str(path))
    assert result.exit_code == 2
    message = stderr(result).strip()
    assert words in message and "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "bad.results.jsonl").exists()


def test_another_sweeps_results_file_is_refused_before_any_work(sweep_file, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"sweep": "other", "digest": "0"}\n')
    result = run(str(sweep_file), "--out", str(out))
    assert result.exit_code == 2
    assert "another sweep" in stderr(result) and "--restart" in stderr(result)
    assert out.read_text() == '{"sweep": "other", "digest": "0"}\n'
