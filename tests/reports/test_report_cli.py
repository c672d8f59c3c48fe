"""``fugakuperf report`` end to end on a small model: files, parsing, numbers."""

import base64
import json
import os
import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main
from reports import fmt

SECTIONS = ("summary", "scaling", "memory", "layouts", "timeline", "network", "sensitivity",
            "reliability", "inverse", "assumptions")


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.images, self.tags = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))


def report_at(out, *args):
    """``report --out OUT ARGS`` run to success: (the result, report.json's content)."""
    result = CliRunner().invoke(main, ["report", *map(str, args), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", "--max-nodes", "96",
                                       "--days", "2", "--relaunch-minutes", "5", "--top", "4",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_file_is_written_and_non_empty(built):
    names = {p.name for p in built.iterdir()}
    assert {"index.html", "report.md", "report.json"} <= names
    for p in built.iterdir():
        assert p.stat().st_size > 0, p.name
    assert not [n for n in names if n.startswith(".")]       # no temporary files left


def test_the_page_parses_has_every_section_and_embeds_every_image(built):
    page = Page()
    page.feed((built / "index.html").read_text())
    assert set(SECTIONS) <= page.ids
    assert "script" not in page.tags and "link" not in page.tags
    pngs = {p.name for p in built.glob("*.png")}
    assert len(page.images) == len(pngs) >= 5
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")


def test_markdown_references_exactly_the_images_beside_it(built):
    md = (built / "report.md").read_text()
    referenced = set(re.findall(r"\]\(([\w.-]+\.png)\)", md))
    assert referenced == {p.name for p in built.glob("*.png")}


def test_the_json_holds_the_numbers_the_page_shows(built):
    report = json.loads((built / "report.json").read_text())
    html = (built / "index.html").read_text()
    s = report["summary"]
    for shown in (fmt.count(s["nodes"]), fmt.num(s["tokens_per_s"]), fmt.pct(s["mfu"]),
                  fmt.days(s["time_to_train_s"])):
        assert shown in html, shown
    assert report["reliability"]["goodput"] is not None
    assert report["inverse"]["params"] and report["inverse"]["nodes"] == 96
    assert len(report["layouts"]) >= 1 and report["scaling"]["points"]


def test_confidence_says_how_the_model_did_on_published_measurements(built):
    confidence = json.loads((built / "report.json").read_text())["summary"]["confidence"]
    runs = [line for line in confidence if "published run(s) of fugaku" in line]
    assert len(runs) == 1 and "deepspeedfugaku-2023, not this prediction's fugaku-llm" in runs[0]
    assert any("RIKEN's 5 measured MPI figures" in line for line in confidence)
    assert "checked against 4 published run(s) of fugaku" in (built / "index.html").read_text()


def test_reliability_has_numbers_by_default_each_with_its_source(built):
    rel = json.loads((built / "report.json").read_text())["reliability"]
    for key in ("checkpoint_s", "interval_s", "restart_s", "goodput", "time_with_failures_s",
                "checkpoint_bytes_total", "checkpoint_bytes_per_node", "fs_bandwidth"):
        assert rel[key] is not None and rel[key] > 0, key
    assert rel["checkpoint_source"].startswith("[assumed]")        # no --checkpoint-gbs
    assert rel["fs_bandwidth_source"].startswith("[assumed]")
    assert rel["relaunch_s"] == 300 and rel["relaunch_source"] == "given with --relaunch-minutes"
    assert rel["checkpoint_bytes_total"] >= rel["checkpoint_bytes_per_node"]
    section = (built / "report.md").read_text().split("## 8 Reliability")[1].split("## 9")[0]
    assert "n/a" not in section
    assert "Checkpoint size, total (GB)" in section and "Checkpoint size, per node (GB)" in section


def test_the_report_uses_plans_memory_rule(built):
    report = json.loads((built / "report.json").read_text())
    result = CliRunner().invoke(main, ["plan", "--model", "gpt3-350m", "--max-nodes", "96",
                                       "--top", "4", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)["best"][0]
    s = report["summary"]
    assert s["layout_label"].startswith(f"TP{best['layout']['tp']} PP{best['layout']['pp']} ")
    assert s["memory_fraction_of_usable"] == pytest.approx(best["memory_fraction_of_usable"])
    assert s["memory_verdict"] == best["memory_verdict"]
    from perfmodel.memory import memory_verdict
    for row in report["layouts"] + report["memory"]:
        assert row["memory_verdict"] == memory_verdict(row["memory_fraction_of_usable"])
    md = (built / "report.md").read_text()
    assert f"usable memory: {s['memory_verdict']}." in md


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the report's work starts."""
    import calibration.against
    import reports.build

    def work(*a, **k):
        raise AssertionError("the report's work started")

    monkeypatch.setattr(reports.build, "build_report", work)
    monkeypatch.setattr(calibration.against, "published_checks", work)


def _foreign(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return str(folder)


@pytest.mark.parametrize("out, problem", [
    (lambda t: (t / "f").write_text("x") and str(t / "f"), "is a file"),
    (lambda t: (t / "f").write_text("x") and str(t / "f" / "sub"), "is not a directory"),
    (lambda t: "/dev/null", "not a directory (a device, pipe or socket)"),
    (lambda t: "/proc/fugakuperf-report", "cannot create /proc/fugakuperf-report"),
    (lambda t: str(t / ("x" * 300)), "File name too long"),
    (_foreign, "holds files a report does not write (notes.txt)"),
])
def test_a_bad_out_fails_at_once_with_no_work_done(tmp_path, no_work, out, problem):
    path = out(tmp_path)
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", "--out", path])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out: ") and problem in result.stderr, result.stderr
    assert "[report]" not in result.stderr and "Traceback" not in result.stderr
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


@pytest.mark.parametrize("args, field", [(["--nodes", "99999999"], "nodes"),
                                         (["--tokens", "0"], "tokens"),
                                         (["--max-nodes", "99999999"], "max_nodes")])
def test_plan_inputs_are_refused_before_the_published_checks_run(tmp_path, monkeypatch,
                                                                  args, field):
    import calibration.against

    def work(*a, **k):
        raise AssertionError("the published checks ran")

    monkeypatch.setattr(calibration.against, "published_checks", work)
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", *args,
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1].startswith(f"error: {field}: ")
    assert not (tmp_path / "r").exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("option", ["--fs-bandwidth-gbs", "--relaunch-minutes",
                                    "--checkpoint-gbs"])
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "fast"])
def test_reliability_options_must_be_finite_and_positive(tmp_path, no_work, option, bad):
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", option, bad,
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {option}: "), result.stderr
    assert not (tmp_path / "r").exists()


def test_bad_output_directory_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", "--max-nodes", "24",
                                       "--out", str(blocker)])
    assert result.exit_code == 2                   # refused before any work is done
    assert result.stderr.startswith("error: --out: ") and "is a file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_help_states_the_defaults_the_model_uses():
    from perfmodel.capacity import FS_BANDWIDTH, RELAUNCH_S
    text = " ".join(CliRunner().invoke(main, ["report", "--help"]).output.split())
    assert f"Default: an assumed {FS_BANDWIDTH / 1e9:,.0f} (the K computer's" in text
    assert f"Default: an assumed {RELAUNCH_S / 60:g}." in text


def test_a_fat_tree_report_describes_its_fabric_and_the_stacks_placement(tmp_path):
    """On a switched network there is no torus to map: the network section says what
    the fabric is and where the groups sit, and the assumptions say how the stack
    places layers on pipeline stages."""
    out = tmp_path / "r"
    _, data = report_at(out, "--system", "jeanzay-a100", "--layers", 22, "--hidden", 1024,
                        "--heads", 16, "--max-nodes", 8, "--days", 2, "--top", 3)
    assert data["network"]["fabric"].startswith("a fat tree of 48 nodes, 4 x 12.5 GB/s")
    assert data["network"]["placement"][0].startswith("TP ")
    md = (out / "report.md").read_text()
    assert "no torus, so no map of link loads" in md
    assert "layers placed evenly on the pipeline stages, or by type:transformer" in md


def test_the_layouts_table_leads_with_the_recommendation(built):
    """The table of layouts is in the plan's order (the slow end of each band), so its
    first row is the layout the summary recommends, whatever the model's own times say."""
    report = json.loads((built / "report.json").read_text())
    first = next(row for row in report["layouts"] if not row["reference"])
    assert first["label"] == report["summary"]["layout_label"]
    assert [row["rank"] for row in report["layouts"]] == list(range(1, len(report["layouts"]) + 1))


def test_a_pinned_report_studies_that_layout(tmp_path):
    """`report --tp 2 --pp 2 ...` takes every pin plan takes: the report's layout,
    timeline and sensitivity are the pinned layout's, and its first screen says how it
    ranks against the best unpinned one."""
    out = tmp_path / "pinned"
    _, report = report_at(out, "--model", "gpt3-350m", "--nodes", 48, "--tp", 2, "--pp", 2,
                          "--micro-batch-size", 1, "--days", 2, "--top", 2)
    assert report["pins"] == {"tp": 2, "pp": 2, "micro_batch": 1}
    assert report["summary"]["layout_label"].startswith("TP2 PP2 DP")
    assert report["timeline"]["stages"] == 2
    assert report["comparison"]["rank"] >= 1
    assert all(r["layout_label"].startswith("TP2 PP2") for r in report["sensitivity"]
               if r["time_to_train_s"] is not None)
    html = (out / "index.html").read_text()
    assert "The layout studied is the best with tp = 2, pp = 2" in html


def test_report_json_prints_what_report_json_holds(tmp_path):
    result, written = report_at(tmp_path / "r", "--model", "gpt3-350m", "--max-nodes", 96,
                                "--days", 2, "--top", 2, "--json")
    printed = json.loads(result.stdout)
    assert printed["report"] == written
    assert set(printed["files"]) >= {"index.html", "report.md", "report.json"}
