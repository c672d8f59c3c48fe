"""validate --against: logged runs predicted from the command line."""

import csv
import json
from importlib import resources

from click.testing import CliRunner

from fugakuperf.cli import main

RUNS = resources.files("perfmodel.data") / "validation" / "runs_selene.csv"


def two_rows(tmp_path):
    with RUNS.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([rows[0], rows[5]])            # a searched micro-batch; a sec_per_iter row
    return path


def test_json_rows_and_summary(tmp_path):
    result = CliRunner().invoke(main, ["validate", "--against", str(two_rows(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"rows", "mean_abs_error", "max_abs_error"} <= set(data)
    first, second = data["rows"]
    assert first["unit"] == "tflops_per_rank" and first["micro_batch_searched"]
    assert second["unit"] == "sec_per_iter" and not second["micro_batch_searched"]
    for r in data["rows"]:
        assert r["error"] == r["predicted"] / r["measured"] - 1
    assert data["max_abs_error"] == max(abs(r["error"]) for r in data["rows"])


def test_text_table_and_max_error(tmp_path):
    result = CliRunner().invoke(main, ["validate", "--against", str(two_rows(tmp_path)),
                                       "--max-error", "0"])
    assert result.exit_code == 1
    assert "tflops_per_rank (hardware)" in result.stdout and "mean |error|" in result.stdout
    assert "max-error" in result.stderr


def test_needs_exactly_one_of_calibration_and_against(tmp_path):
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 2 and "error: calibration:" in result.stderr
    result = CliRunner().invoke(main, ["validate", "--against", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_topo_says_a_fat_tree_is_not_a_torus():
    result = CliRunner().invoke(main, ["topo", "--system", "selene", "--nodes", "4"])
    assert result.exit_code == 2 and "error: system:" in result.stderr


def test_a_row_that_cannot_be_predicted_is_said_and_the_rest_printed(tmp_path):
    with RUNS.open() as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([rows[0], dict(rows[5], measured="-1"), rows[5]])
    result = CliRunner().invoke(main, ["validate", "--against", str(path)])
    assert result.exit_code == 2
    out = result.stdout.splitlines()
    assert ("  log.csv row 3: not predicted: measured: must be >= 1e-09 and <= 1e+12 "
            "sec_per_iter, got -1") in out
    assert sum(line.startswith("  selene ") for line in out) == 2       # both other rows
    assert out[-2].startswith("  mean |error|") and "over 2 predicted row(s); 1 not" in out[-2]
    assert out[-1].startswith("  the measured time fell inside its 80% band for")
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: against: 1 of 3 row(s) of {path} could not be predicted (log.csv row 3); "
        f"each says why above")
    data = json.loads(CliRunner().invoke(main, ["validate", "--against", str(path),
                                                "--json"]).stdout)
    assert [r["error"] is None for r in data["rows"]] == [False, True, False]


def test_fit_rows_are_marked_layouts_are_whole_and_numbers_plain(tmp_path):
    """A *_fit log's rows are marked as used for fitting; a layout longer than any
    column limit prints whole; figures never print in exponent form."""
    with RUNS.open() as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames
    path = tmp_path / "mine_fit.csv"
    row = dict(rows[5])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerow(row)
    result = CliRunner().invoke(main, ["validate", "--against", str(path)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "used to fit" in text and text.splitlines()[2].rstrip().endswith("fit")
    data = json.loads(CliRunner().invoke(main, ["validate", "--against", str(path),
                                                "--json"]).stdout)
    assert data["used_for_fit"] and data["rows"][0]["used_for_fit"]
    assert data["rows"][0]["layout"] in text
    assert "e+" not in text.splitlines()[2]
    from reports.text import plain
    assert [plain(v) for v in (11728.3, 2533, 3.564, 0.01234, 0)] == \
        ["11,728", "2,533", "3.564", "0.01234", "0"]
