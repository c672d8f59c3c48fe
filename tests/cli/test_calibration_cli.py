"""``fugakuperf calibrate`` and ``fugakuperf validate`` through the CLI (in-process,
CliRunner), the ``--calibration`` overlay on plan/simulate/report, and the one-line
refusals of bad calibration files.

One quick calibration (~6 s here) and one quick JSON validation (~9 s) are shared by
the whole module. The machine is shared and its speed drifts, so no measured time and
no predicted-vs-measured error is held to a bound: only the files' and outputs' shape,
internal consistency (error == predicted / measured - 1) and the refusals are asserted.
"""

import json
import os
import re
from pathlib import Path

import numba
import numpy
import pytest
from click.testing import CliRunner

from calibration import calfile
from calibration.collectives import default_sizes
from calibration.contention import VERDICTS
from calibration.measure import FIT_CONFIGS
from fugakuperf import __version__
from fugakuperf.cli import main
from perfmodel.compute import KERNEL_CLASSES

KINDS = {"gemm", "kernel", "trainer-kernel", "step"}
HOST_KEYS = {"cpu", "cores", "threads", "numpy", "numba", "date"}
# --params 13e9 cannot run on exactly 13,824 nodes (40 heads, 40 layers, batch 2016);
# 13,440 can (plan suggests it), so the overlay is compared there.
PLAN13 = ["plan", "--params", "13e9", "--nodes", "13440", "--top", "2"]
TINY_HOST = ["simulate", "--system", "host", "--layers", "2", "--hidden", "128", "--heads",
             "4", "--vocab", "256", "--seq", "128", "--nodes", "1", "--micro-batch", "2",
             "--global-batch", "2"]
# --params 1e9 on exactly 348 nodes has layouts (384 and 396 have none).
REPORT1B = ["report", "--params", "1e9", "--nodes", "348", "--top", "2"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def ok_json(*args) -> dict:
    return json.loads(ok(*args, "--json").stdout)


def assert_refused(result, field: str, *mentions: str) -> str:
    """Exit 2 and exactly one line on stderr, ``error: FIELD: ...``; no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: {field}: "), line
    for text in mentions:
        assert text in line, (text, line)
    return line


def write_variant(src: Path, dst: Path, change) -> Path:
    data = json.loads(src.read_text())
    change(data)
    dst.write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One quick calibration: (path, CliRunner result). --allow-contention: a CI machine's
    hypervisor may steal enough to be refused; the refusal has its own test below."""
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    result = run("calibrate", "--quick", "--allow-contention", "--out", path)
    assert result.exit_code == 0, (result.output, result.exception)
    return path, result


@pytest.fixture(scope="module")
def cal(calibrated) -> Path:
    return calibrated[0]


@pytest.fixture(scope="module")
def cal_data(cal) -> dict:
    return calfile.load(cal)


@pytest.fixture(scope="module")
def validated(cal) -> dict:
    """One quick validation of the calibration, as JSON."""
    return ok_json("validate", "--quick", "--calibration", cal)


# ---------------------------------------------------------------------- calibrate


def test_calibrate_writes_a_loadable_file_and_says_so(calibrated):
    path, result = calibrated
    assert path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]   # atomic
    assert "wrote" in result.stdout and str(path) in result.stdout
    assert "GFLOP/s" in result.stdout
    assert "bandwidth GB/s" in result.stdout
    assert "calibrating (quick)" in result.stderr         # progress is on stderr
    assert "calibrating" not in result.stdout


def test_calibration_file_has_provenance_and_host_facts(cal_data):
    assert cal_data["format"] == calfile.FORMAT == "fugakuperf-calibration"
    assert cal_data["version"] == calfile.VERSION
    assert cal_data["tool_version"] == __version__
    assert set(calfile.REQUIRED) <= set(cal_data)
    host = cal_data["host"]
    assert HOST_KEYS <= set(host)
    assert host["cpu"]
    assert host["cores"] == os.cpu_count()
    assert isinstance(host["threads"], int) and host["threads"] >= 1
    assert host["ranks"] == 1 and host["quick"] is True
    assert host["numpy"] == numpy.__version__ and host["numba"] == numba.__version__
    assert host["date"][:4].isdigit()


def test_calibration_file_keeps_every_kind_of_raw_measurement(cal_data):
    ms = cal_data["measurements"]
    assert isinstance(ms, list) and ms
    assert KINDS <= {m["kind"] for m in ms}
    assert all(m["seconds"] > 0 for m in ms)
    steps = [m for m in ms if m["kind"] == "step"]
    assert sorted(json.dumps(m["config"], sort_keys=True) for m in steps) == sorted(
        json.dumps(c, sort_keys=True) for c in FIT_CONFIGS)
    assert not [m for m in ms if m["kind"] == "collective"]    # one rank: no collectives
    assert cal_data["fit"]["collectives"] == {}


def test_calibration_file_has_a_converged_compute_fit(cal_data):
    c = cal_data["fit"]["compute"]
    assert c["status"] > 0 and c["success"] is True
    assert c["residual_norm"] >= 0
    # every measurement is fitted but the checkpoint write (a storage figure, not compute)
    assert c["records"] == len([m for m in cal_data["measurements"] if m["kind"] != "checkpoint"])
    storage = cal_data["fit"]["storage"]
    assert storage["checkpoint_write_bytes_per_s"] > 0 and storage["bytes"] > 0
    assert 0 <= c["median_abs_error"] <= c["max_abs_error"]
    p = c["parameters"]
    assert p["gemm_rate"] > 0
    assert set(p["bandwidth"]) == set(KERNEL_CLASSES) and len(KERNEL_CLASSES) == 7
    assert all(v > 0 for v in p["bandwidth"].values())
    assert p["threads"] == cal_data["host"]["threads"] and p["ranks_per_node"] == 1


def test_calibration_file_records_how_busy_the_machine_was(cal_data):
    c = cal_data["contention"]
    assert c["verdict"] in VERDICTS
    assert c["cores"] == os.cpu_count() and c["threads"] == cal_data["host"]["threads"]
    assert c["wall_s"] > 0
    if c["steal_fraction"] is not None:                 # Linux: /proc/stat
        assert 0 <= c["steal_fraction"] < 1 and c["other_cores"] >= 0
        assert c["slowdown_bound"] >= 1
    assert c["repeat_spread"] >= 1                      # median over fastest repeat


def a_busy_machine(monkeypatch, steal: float = 0.5):
    """/proc/stat as a hypervisor taking ``steal`` of the CPU time would show it, the
    rest busy with other work: every read is one more second of each."""
    from trainer import host
    ticks = iter(range(1, 10**6))

    def cpu_times():
        t = next(ticks)
        return host.CpuTimes(busy=t * (1 - steal), idle=0.0, steal=t * steal)
    monkeypatch.setattr(host, "read_cpu_times", cpu_times)


def test_calibrate_refuses_a_contended_machine_before_measuring(monkeypatch, tmp_path):
    a_busy_machine(monkeypatch)
    out = tmp_path / "busy.json"
    result = run("calibrate", "--quick", "--threads", "1", "--out", out)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the machine is too busy"), lines
    assert "stole 50%" in lines[0] and "--allow-contention" in lines[0]
    assert not out.exists() and "calibrating" not in result.stderr     # nothing measured


def test_calibrate_allow_contention_keeps_and_records_it(monkeypatch, tmp_path):
    a_busy_machine(monkeypatch)
    out = tmp_path / "busy.json"
    result = ok("calibrate", "--quick", "--threads", "1", "--allow-contention", "--out", out)
    assert "warning: before measuring, the machine is contended: " in result.stderr
    assert f"warning: while {out} was measured, the machine was contended: " in result.stderr
    recorded = calfile.load(out)["contention"]
    assert recorded["verdict"] == "contended" and recorded["steal_fraction"] == 0.5
    assert recorded["slowdown_bound"] > 1.2 and recorded["reasons"]


def test_refit_of_two_files_fits_both_files_measurements(cal, cal_data, tmp_path):
    both = tmp_path / "both.json"
    summary = ok_json("calibrate", "--refit", cal, "--refit", cal, "--out", both)
    one = cal_data["fit"]["compute"]["records"]
    assert summary["out"] == str(both)
    assert summary["compute"]["records"] == 2 * one > one
    assert summary["compute"]["status"] > 0
    assert summary["host"]["merged_files"] == 2
    merged = calfile.load(both)
    assert merged["host"]["merged_files"] == 2
    assert len(merged["measurements"]) == 2 * len(cal_data["measurements"])
    assert {m["file"] for m in merged["measurements"]} == {0, 1}


def test_refit_refuses_files_of_other_thread_counts(cal, tmp_path):
    other = write_variant(cal, tmp_path / "t99.json", lambda d: d["host"].update(threads=99))
    result = run("calibrate", "--refit", cal, "--refit", other, "--out", tmp_path / "x.json")
    assert_refused(result, "calibration", "threads", "99")
    assert not (tmp_path / "x.json").exists()


def test_calibrate_refuses_an_unwritable_out(cal, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.json"
    assert_refused(run("calibrate", "--refit", cal, "--out", out), "out", str(out))


# ---------------------------------------------------------------------- validate


def test_validate_json_compares_held_out_cases(validated, cal):
    v = validated
    assert v["system"] == "host" and v["calibration"] == str(cal) and v["ranks"] == 1
    assert v["steps_per_case"] == 12
    cases = v["cases"]
    assert len(cases) >= 6
    fitted = [dict(c) for c in FIT_CONFIGS]
    for c in cases:
        assert c["measured_s"] > 0 and c["predicted_s"] > 0
        assert c["measured_median_s"] >= c["measured_s"]          # fastest <= median
        assert c["error"] == pytest.approx(c["predicted_s"] / c["measured_s"] - 1, abs=1e-9)
        config = dict(c["config"])
        assert config.pop("ranks") == 1
        assert config not in fitted, f"{c['label']} is a fit configuration"
    assert len({c["label"] for c in cases}) == len(cases)


def test_validate_json_summarises_errors_and_the_machine(validated):
    v = validated
    errors = [abs(c["error"]) for c in v["cases"]]
    assert v["max_abs_error"] == pytest.approx(max(errors), abs=1e-12)
    assert 0 <= v["median_abs_error"] <= v["max_abs_error"]
    assert v["drift_since_calibration"] is not None and v["drift_since_calibration"] > 0
    assert isinstance(v["cpu_steal_fraction"], float) and v["cpu_steal_fraction"] >= 0


def test_validate_text_table_and_max_error_zero_exits_1(cal):
    # --steps 1 keeps it short; the error is never exactly 0, so --max-error 0 fails
    result = run("validate", "--steps", "1", "--max-error", "0", "--calibration", cal)
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    out = result.stdout
    assert "measured ms" in out and "predicted ms" in out
    assert f"validation of {cal}" in out
    assert "median |error|" in out
    assert sum(" G" in line and line.strip().startswith("L") for line in out.splitlines()) >= 6
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and "--max-error" in last, result.stderr


def test_validate_refuses_a_calibration_of_another_thread_count(cal, tmp_path):
    other = write_variant(cal, tmp_path / "t99.json", lambda d: d["host"].update(threads=99))
    line = assert_refused(run("validate", "--quick", "--calibration", other), "calibration",
                          str(other), "threads", "99")
    assert "--threads" in line


def test_validate_requires_calibration():
    result = run("validate", "--quick")
    assert result.exit_code == 2 and "--calibration" in result.stderr


# ---------------------------------------------------------------------- overlay


def as_a64fx(cal: Path, tmp_path: Path) -> Path:
    """The calibration as if measured on a whole A64FX node, one rank of 48 threads (the
    host facts are the test's; the fitted rates stay this machine's)."""
    return write_variant(cal, tmp_path / "a64fx.json", lambda d: d["host"].update(
        cpu="Fujitsu A64FX", machine="aarch64", cores=48, threads=48, ranks=1))


def test_a_calibration_of_another_machine_is_refused(cal):
    line = assert_refused(run(*PLAN13, "--calibration", cal), "calibration", str(cal),
                          "does not describe fugaku", "A64FX", "--force-calibration")
    assert "--system host" in line


@pytest.mark.parametrize("change, why", [
    (dict(cores=12, threads=12), "part of"),                    # one CMG of the node
    (dict(cores=48, threads=12), "part of"),                    # 12 of its 48 cores used
    (dict(cores=48, threads=12, ranks=4), "rank(s) per node"),  # 4 ranks; fugaku runs 1
])
def test_a_calibration_of_part_of_a_node_or_other_ranks_is_refused(cal, tmp_path, change, why):
    other = write_variant(as_a64fx(cal, tmp_path), tmp_path / "part.json",
                          lambda d: d["host"].update(change))
    assert_refused(run(*PLAN13, "--calibration", other), "calibration", str(other), why)


def test_a_calibration_of_four_ranks_per_node_applies_to_four_ranks_per_node(cal, tmp_path):
    four = write_variant(as_a64fx(cal, tmp_path), tmp_path / "four.json",
                         lambda d: d["host"].update(threads=12, ranks=4))
    plan = ok_json(*PLAN13, "--ppn", "4", "--calibration", four)
    assert plan["system"]["calibration"] == str(four)


def test_plan_with_a_calibration_of_the_node_uses_the_measured_rates(cal, tmp_path):
    node = as_a64fx(cal, tmp_path)
    calibrated = ok_json(*PLAN13, "--calibration", node)
    preset = ok_json(*PLAN13)
    assert calibrated["system"]["calibration"] == str(node)
    assert preset["system"].get("calibration") is None
    assert calibrated["best"][0]["iteration_s"] > 0
    assert calibrated["best"][0]["iteration_s"] != preset["best"][0]["iteration_s"]


def test_a_forced_calibration_says_so_in_every_output(cal):
    result = ok(*PLAN13, "--calibration", cal, "--force-calibration", "--json")
    assert result.stderr.startswith("warning: calibration:") and "FORCED" in result.stderr
    plan = json.loads(result.stdout)
    assert plan["system"]["calibration"].startswith(f"{cal} (FORCED onto fugaku:")
    header = ok(*PLAN13, "--calibration", cal, "--force-calibration").stdout.split("\n\n")[0]
    system_line = next(line for line in header.splitlines() if line.startswith("system"))
    assert str(cal) in system_line and "FORCED" in system_line


def test_force_calibration_needs_a_calibration():
    assert_refused(run(*PLAN13, "--force-calibration"), "force-calibration", "--calibration")


def test_plan_text_header_names_the_calibration(cal, tmp_path):
    node = as_a64fx(cal, tmp_path)
    out = ok(*PLAN13, "--calibration", node).stdout
    header = out.split("\n\n")[0]
    system_line = next(line for line in header.splitlines() if line.startswith("system"))
    assert "calibration" in system_line and str(node) in system_line
    assert "calibration" not in ok(*PLAN13).stdout.split("\n\n")[0]


def test_simulate_on_the_host_system(cal):
    sim = ok_json(*TINY_HOST, "--calibration", cal)
    assert sim["iteration_s"] > 0
    assert sim["system"]["name"] == "host" and sim["system"]["calibration"] == str(cal)
    assert sim["nodes"] == 1 and sim["layout"]["tp"] == sim["layout"]["pp"] == 1


@pytest.fixture(scope="module")
def reported(cal, tmp_path_factory) -> Path:
    """One small capacity report on the calibrated system (~4 s): its directory."""
    out = tmp_path_factory.mktemp("report") / "rep"
    result = ok(*REPORT1B, "--calibration", cal, "--force-calibration", "--out", out)
    assert "wrote" in result.stdout
    return out


def test_report_with_calibration(reported, cal):
    for name in ("index.html", "report.md", "report.json"):
        assert (reported / name).is_file()
    report = json.loads((reported / "report.json").read_text())
    assert report["system"]["calibration"].startswith(f"{cal} (FORCED onto fugaku:")
    assert f"calibration {cal} (FORCED" in json.dumps(report["provenance"])
    # the checkpoint write the calibration measured sets the Young/Daly interval
    rel = report["reliability"]
    assert rel["checkpoint_bandwidth_per_node"] > 0 and rel["interval_s"] > 0
    assert "measured by `fugakuperf calibrate`" in rel["checkpoint_source"]


def test_report_confidence_names_the_calibration(reported, cal):
    report = json.loads((reported / "report.json").read_text())
    confidence = report["summary"]["confidence"]
    assert not any("no calibration file given" in line for line in confidence)
    assert f"calibrated parameters from {cal}" in confidence[0]
    assert any(line.startswith("FP32 compute from calibration") for line in confidence)


# ---------------------------------------------------------------------- refusals

# Commands that read --calibration; each must refuse a bad file before any work.
READERS = {
    "plan": PLAN13,
    "simulate-host": TINY_HOST,
    "validate": ["validate", "--quick"],
}


def _garbage(path: Path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")


def _not_json(path: Path):
    path.write_text("calibration = {not json")


def _other_format(path: Path):
    path.write_text(json.dumps({"format": "x"}))


def _a_list(path: Path):
    path.write_text("[1, 2, 3]")


BAD_FILES = {
    "garbage-bytes": (_garbage, ("damaged", "JSON")),
    "not-json": (_not_json, ("damaged", "JSON")),
    "other-format": (_other_format, ("not a fugakuperf calibration file",)),
    "json-list": (_a_list, ("not a fugakuperf calibration file",)),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_calibration_file_is_refused(reader, tmp_path):
    missing = tmp_path / "nope.json"
    assert_refused(run(*READERS[reader], "--calibration", missing), "calibration",
                   str(missing), "no such file")


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
@pytest.mark.parametrize("reader", sorted(READERS))
def test_unreadable_calibration_file_is_refused(reader, bad, tmp_path):
    path = tmp_path / f"{bad}.json"
    make, mentions = BAD_FILES[bad]
    make(path)
    assert_refused(run(*READERS[reader], "--calibration", path), "calibration", str(path),
                   *mentions)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_other_version_is_refused(reader, cal, tmp_path):
    path = write_variant(cal, tmp_path / "v99.json", lambda d: d.update(version=99))
    assert_refused(run(*READERS[reader], "--calibration", path), "calibration", str(path),
                   "version", "99")


@pytest.mark.parametrize("measurements", [{"gemm": 1}, "x", [1, 2], [{"kind": "gemm"}]],
                         ids=["object", "string", "numbers", "no-seconds"])
def test_measurements_not_a_list_of_records_are_refused(measurements, cal, tmp_path):
    path = write_variant(cal, tmp_path / "m.json", lambda d: d.update(measurements=measurements))
    assert_refused(run(*PLAN13, "--calibration", path), "calibration", str(path), "damaged",
                   "measurements")


@pytest.mark.parametrize("missing", ["host", "fit", "tool_version"])
def test_missing_sections_are_refused(missing, cal, tmp_path):
    path = write_variant(cal, tmp_path / "s.json", lambda d: d.pop(missing))
    assert_refused(run(*TINY_HOST, "--calibration", path), "calibration", str(path),
                   "damaged", missing)


@pytest.mark.parametrize("change", [
    lambda p: p["bandwidth"].pop("norm"),
    lambda p: p.update(gemm_rate=0),
    lambda p: p.update(gemm_rate="fast"),
    lambda p: p.update(bandwidth=[1, 2]),
], ids=["bandwidth-class-missing", "zero-gemm-rate", "string-gemm-rate", "bandwidth-list"])
def test_damaged_compute_fit_is_refused(change, cal, tmp_path):
    path = write_variant(cal, tmp_path / "f.json",
                         lambda d: change(d["fit"]["compute"]["parameters"]))
    assert_refused(run(*PLAN13, "--calibration", path), "calibration", str(path), "damaged")


@pytest.mark.parametrize("change", [
    lambda d: d["fit"]["compute"]["parameters"]["bandwidth"].update(norm=0),
    lambda d: d["fit"]["compute"]["parameters"]["bandwidth"].update(gelu=-1e9),
    lambda d: d["fit"]["compute"]["parameters"].update(kernel_overhead_s=-1e-3),
    lambda d: d["fit"]["compute"].pop("parameters"),
    lambda d: d["fit"].update(collectives={"p2p": {}}),
    lambda d: d.update(host="x"),
], ids=["zero-bandwidth", "negative-bandwidth", "negative-overhead", "no-parameters",
        "collective-without-alpha", "host-not-object"])
def test_damaged_fit_or_host_is_refused_not_crashed(change, cal, tmp_path):
    path = write_variant(cal, tmp_path / "d.json", change)
    assert_refused(run(*TINY_HOST, "--calibration", path), "calibration", str(path))


def test_system_host_needs_a_calibration():
    assert_refused(run(*TINY_HOST), "system", "--calibration")


@pytest.mark.parametrize("option,field", [(["--clock", "2.0"], "clock"), (["--ppn", "4"], "ppn"),
                                          (["--no-eco"], "eco")])
def test_system_host_refuses_preset_options(option, field, cal):
    assert_refused(run(*TINY_HOST, "--calibration", cal, *option), field, "--system host")


# ---------------------------------------------------------------------- help
# A command's own page is read (``fugakuperf CMD --help``), and an option counts only
# where the page lists it under "Options:": the examples above that list name several
# options too, and the main page's examples name the commands, so a word found
# anywhere on a page proves nothing.
def help_page(*command: str) -> tuple[str, set[str]]:
    """The page's text before "Options:" (whitespace joined) and the options it lists."""
    out = ok(*command, "--help").stdout
    text, options = out.split("\nOptions:\n", 1)
    listed = {m.group(1) for m in re.finditer(r"^  (?:-\w, )?(--[\w-]+)", options, re.M)}
    return " ".join(text.split()), listed


def listed_commands() -> dict[str, str]:
    """The main page's "Commands:" section: name -> its one-line summary."""
    section = ok("--help").stdout.split("\nCommands:\n", 1)[1]
    return {m.group(1): m.group(2)
            for m in re.finditer(r"^  ([\w-]+) {2,}(\S.*)$", section, re.M)}


def test_calibrate_help():
    text, options = help_page("calibrate")
    assert re.match(r"Usage: \S+ calibrate \[OPTIONS\] ", text)
    assert {"--quick", "--refit", "--out", "--model", "--add-record", "--checkpoint-dir",
            "--threads", "--allow-contention", "--json"} <= options
    # what it measures under mpiexec, with the sizes the code really measures
    sizes = default_sizes()
    assert (f"under mpiexec, also MPI collectives between the ranks "
            f"({sizes[0]} B to {sizes[-1] // 2**20} MiB)") in text


def test_validate_help():
    text, options = help_page("validate")
    assert re.match(r"Usage: \S+ validate \[OPTIONS\] ", text)
    assert {"--calibration", "--against", "--stack", "--schema", "--max-error"} <= options
    assert "runs the trainer on held-out configurations" in text
    assert "simulates every logged run of a CSV" in text


def test_main_help_lists_the_commands():
    commands = listed_commands()
    assert commands["calibrate"] == "Measure this node and fit the simulator's parameters to it."
    assert commands["validate"].startswith("Predicted against measured: trainer runs")


def test_a_calibrations_own_iterations_are_evidence_for_predictions_near_them(cal, cal_data):
    """The trainer steps a calibration timed (whole iterations; the fit used op rates)
    are predicted with its measured rates and back the band of a prediction in their
    regime: a small model on the calibrated node."""
    d = ok_json("simulate", "--system", "host", "--calibration", cal, "--layers", "2",
                "--hidden", "192", "--heads", "3", "--vocab", "256", "--seq", "128", "--tp", "1",
                "--pp", "1", "--dp", "1", "--global-batch", "2", "--micro-batch", "2")
    steps = [m for m in cal_data["measurements"] if m["kind"] == "step"
             and m.get("rank", 0) == 0]
    band = d["band"]
    assert f"calibration {cal}" in band["evidence_sources"]
    assert band["evidence_runs"] >= len(steps)
    assert band["iteration_s_low"] < d["iteration_s"] < band["iteration_s_high"]
