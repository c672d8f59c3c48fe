"""--stack and fit-stack from the command line."""

import csv
import json
from importlib import resources

from click.testing import CliRunner

from fugakuperf.cli import main

VALIDATION = resources.files("perfmodel.data") / "validation"
OLD = "deepspeedfugaku-2023"


def test_fit_stack_json_gives_values_rows_and_preset_lines():
    result = CliRunner().invoke(main, ["fit-stack", "fugaku_fit", "--stack", OLD, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["params"]) == {"kernel_bytes_per_cycle"}
    assert len(data["rows"]) == 19 and data["converged"]
    assert data["toml"].startswith(f"[fugaku.stacks.{OLD}]")


def test_fit_stack_refuses_an_unknown_stack_and_parameter():
    result = CliRunner().invoke(main, ["fit-stack", "fugaku_fit", "--stack", "nope"])
    assert result.exit_code == 2 and "error: stack:" in result.stderr
    result = CliRunner().invoke(main, ["fit-stack", "fugaku_fit", "--stack", OLD,
                                       "--param", "clock"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --param: 'clock' is not")
    assert "attention_efficiency" in result.stderr           # every fittable value is named


def test_validate_stack_applies_to_rows_that_name_none(tmp_path):
    with (VALIDATION / "runs_fugaku.csv").open() as f:
        rows = list(csv.DictReader(f))
    path = tmp_path / "log.csv"
    fields = [k for k in rows[0] if k != "stack"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows[:2])
    plain = json.loads(CliRunner().invoke(main, ["validate", "--against", str(path),
                                                 "--json"]).stdout)
    old = json.loads(CliRunner().invoke(main, ["validate", "--against", str(path), "--stack",
                                               OLD, "--json"]).stdout)
    assert {r["stack"] for r in plain["rows"]} == {"fugaku-llm"}
    assert {r["stack"] for r in old["rows"]} == {OLD}
    assert old["mean_abs_error"] < 0.1 < plain["mean_abs_error"]


def test_validate_refuses_stack_without_against(tmp_path):
    result = CliRunner().invoke(main, ["validate", "--calibration", str(tmp_path / "c.json"),
                                       "--stack", OLD])
    assert result.exit_code == 2 and "error: stack:" in result.stderr


def test_plan_takes_a_stack():
    args = ["--params", "1.3e9", "--nodes", "48", "--stack", OLD, "--json"]
    result = CliRunner().invoke(main, ["plan"] + args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["system"]["stack"] == OLD
    result = CliRunner().invoke(main, ["plan", "--params", "1.3e9", "--stack", "nope"])
    assert result.exit_code == 2 and "its stacks: fugaku-llm" in result.stderr


def test_presets_lists_the_stacks_with_sources():
    result = CliRunner().invoke(main, ["presets", "--system", "fugaku"])
    assert result.exit_code == 0
    assert f"stacks.{OLD}.kernel_bytes_per_cycle" in result.stdout


def test_validate_prints_the_run_log_schema():
    result = CliRunner().invoke(main, ["validate", "--schema"])
    assert result.exit_code == 0
    for column in ("micro_batch", "flops_convention", "stack", "source"):
        assert column in result.stdout
