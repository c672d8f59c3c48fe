"""``fugakuperf report`` end to end on a small model: files, parsing, numbers."""

import base64
import json
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


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", "--max-nodes", "96",
                                       "--days", "2", "--checkpoint-gbs", "2", "--top", "4",
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
    assert report["reliability"]["goodput"] is not None          # --checkpoint-gbs given
    assert report["inverse"]["params"] and report["inverse"]["nodes"] == 96
    assert len(report["layouts"]) >= 1 and report["scaling"]["points"]


def test_confidence_says_how_the_model_did_on_published_measurements(built):
    confidence = json.loads((built / "report.json").read_text())["summary"]["confidence"]
    runs = [line for line in confidence if "published run(s) of fugaku" in line]
    assert len(runs) == 1 and "deepspeedfugaku-2023, not this prediction's fugaku-llm" in runs[0]
    assert any("RIKEN's 5 measured MPI figures" in line for line in confidence)
    assert "checked against 4 published run(s) of fugaku" in (built / "index.html").read_text()


def test_bad_output_directory_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["report", "--model", "gpt3-350m", "--max-nodes", "24",
                                       "--out", str(blocker)])
    assert result.exit_code == 2                   # refused before any work is done
    assert result.stderr.startswith("error: --out: ") and "is a file" in result.stderr
    assert "Traceback" not in result.stderr
