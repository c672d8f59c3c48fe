"""reports.html, reports.markdown and reports.write on a hand-made report (reports/schema.md)
with tiny fake PNGs: a well-formed self-contained page with all ten sections, embedded images
that decode to the given bytes, people-formatted numbers, escaped strings, missing data said
in one sentence, and atomic writes of every file."""

import base64
import copy
import json
import os
import re
from html import escape
from html.parser import HTMLParser

import pytest

from reports import fmt
from reports.html import render_html
from reports.markdown import render_markdown
from reports.write import write_report

GB = 1e9
PNG = b"\x89PNG\r\n\x1a\n"
SECTION_IDS = ["summary", "scaling", "memory", "layouts", "timeline", "network", "sensitivity",
               "reliability", "inverse", "assumptions"]
IMAGE_NAMES = ["scaling.png", "time_cost.png", "memory.png", "timeline.png", "network.png",
               "sensitivity.png"]
NASTY = "<script>alert('x')</script> & <b>co</b>"


def fake_images(names=IMAGE_NAMES) -> dict[str, bytes]:
    return {name: PNG + name.encode() + bytes(range(i + 3)) for i, name in enumerate(names)}


def _rung(max_nodes, nodes, label, it, tps, ideal, mfu):
    ttt = 3.8e11 / tps
    return {"max_nodes": max_nodes, "nodes": nodes, "layout_label": label, "iteration_s": it,
            "tokens_per_s": tps, "ideal_tokens_per_s": ideal, "mfu": mfu,
            "time_to_train_s": ttt, "node_hours": ttt * nodes / 3600}


@pytest.fixture
def report() -> dict:
    ref = "TP6 PP8 DP288 mb1 1f1b"
    return {
        "title": "Training fugaku-llm-13b (13.2 B parameters) on fugaku",
        "generated_by": "fugakuperf 0.1.0",
        "model": {"name": "fugaku-llm-13b", "params": 13_167_577_728, "layers": 40,
                  "hidden": 5184, "heads": 36, "ffn": 20736, "vocab": 49152, "seq": 2048},
        "system": {"name": "fugaku", "clock_ghz": 2.2, "eco_mode": False, "ranks_per_node": 1,
                   "description": "A64FX, Tofu-D",
                   "peak_tflops_per_node": {"fp32": 6.758, "fp16": 13.517},
                   "usable_memory_bytes_per_node": 25e9, "power_w_per_node": 150.0},
        "tokens": 3.8e11,
        "global_batch": 2016,
        "summary": {"nodes": 13824, "layout_label": ref, "iteration_s": 21.37,
                    "des_iteration_s": 22.04, "tokens_per_s": 386_412.5, "mfu": 0.0617,
                    "time_to_train_s": 983_407.0, "node_hours": 3_776_282.0,
                    "energy_mwh": 566.4, "memory_fraction_of_usable": 0.8731,
                    "confidence": ["calibrated parameters: none", "DES within 3% of analytic"]},
        "scaling": {"points": [
            _rung(3456, 3456, "TP6 PP8 DP72 mb1 1f1b", 80.1, 1.03e5, 1.03e5, 0.066),
            _rung(6912, 6912, "TP6 PP8 DP144 mb1 1f1b", 41.0, 2.01e5, 2.06e5, 0.064),
            _rung(13824, 13824, ref, 21.37, 3.86e5, 4.12e5, 0.0617),
            _rung(27648, 27648, "TP6 PP16 DP288 mb1 1f1b", 16.2, 5.1e5, 8.24e5, 0.041)],
            "knee_nodes": 13824,
            "knee_rule": "the last job size after which the next size up delivers less than "
                         "half of the ideal speed-up"},
        "memory": [{"nodes": n, "layout_label": lab, "weights": 2.19 * GB,
                    "gradients": 2.19 * GB, "optimizer": 4.38 * GB, "activations": a * GB,
                    "buffers": 0.7 * GB, "usable": 25 * GB}
                   for n, lab, a in ((6912, "TP6 PP8 DP144 mb1 1f1b", 12.4), (13824, ref, 12.4))],
        "layouts": [
            {"rank": 1, "label": "TP4 PP12 DP288 mb1 1f1b", "nodes": 13824, "iteration_s": 19.8,
             "des_iteration_s": 20.3, "tokens_per_s": 417_000.0, "mfu": 0.0666,
             "memory_bytes_per_node": 23.1e9, "fits": True, "time_to_train_s": 911_000.0,
             "reference": False, "note": ""},
            {"rank": 2, "label": ref, "nodes": 13824, "iteration_s": 21.37,
             "des_iteration_s": 22.04, "tokens_per_s": 386_412.5, "mfu": 0.0617,
             "memory_bytes_per_node": 21.8e9, "fits": True, "time_to_train_s": 983_407.0,
             "reference": True, "note": "global batch 2016"},
            {"rank": 3, "label": "TP12 PP4 DP288 mb1 1f1b", "nodes": 13824,
             "iteration_s": 30.2, "des_iteration_s": 31.0, "tokens_per_s": 273_000.0,
             "mfu": 0.0437, "memory_bytes_per_node": 26.0e9, "fits": False,
             "time_to_train_s": 1_390_000.0, "reference": False, "note": "over usable memory"}],
        "timeline": {"stages": 2, "iteration_s": 4.0, "spans": [
            {"stage": 0, "kind": "F", "start": 0.0, "end": 1.0, "label": "F0"},
            {"stage": 0, "kind": "send", "start": 1.0, "end": 1.1, "label": "send F0"},
            {"stage": 1, "kind": "F", "start": 1.1, "end": 2.1, "label": "F0"},
            {"stage": 1, "kind": "B", "start": 2.1, "end": 3.1, "label": "B0"},
            {"stage": 0, "kind": "B", "start": 3.2, "end": 3.7, "label": "B0"},
            {"stage": 0, "kind": "dp", "start": 3.2, "end": 3.8, "label": "dp"},
            {"stage": 0, "kind": "optimizer", "start": 3.8, "end": 4.0, "label": "optimizer"}]},
        "network": {"shape": [24, 2, 24, 2, 3, 2], "axes": ["X", "Z"],
                    "heatmap": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "dimension": "dp",
                    "hottest": [{"from": {"X": 3, "Y": 0, "Z": 5, "a": 1, "b": 2, "c": 0},
                                 "axis": "X", "direction": "+", "flows": 12},
                                {"from": {"X": 4, "Y": 1, "Z": 5, "a": 0, "b": 0, "c": 1},
                                 "axis": "Z", "direction": "-", "flows": 11}],
                    "placement": ["tp: 6 nodes along b x a", "pp: 8 stages along Z"]},
        "sensitivity": [
            {"name": "link bandwidth x2", "change": "every link twice as fast",
             "time_to_train_s": 900_000.0, "delta": -0.0848, "layout_label": ref},
            {"name": "eco mode", "change": "one FP pipe: half the FP peak",
             "time_to_train_s": 1_700_000.0, "delta": 0.7287, "layout_label": ref}],
        "reliability": {"node_mtbf_h": 1_000_000.0, "mtbf_source": "assumed: 10^6 h per node",
                        "nodes": 13824, "job_mtbf_s": 260_416.7, "checkpoint_bytes": 158e9,
                        "checkpoint_bandwidth": 50e9, "checkpoint_source": "given",
                        "checkpoint_s": 3.16, "restart_s": 3.16, "interval_s": 1279.7,
                        "expected_interruptions": 3.81, "goodput": 0.9945,
                        "time_to_train_s": 983_407.0, "time_with_failures_s": 988_845.0},
        "inverse": {"nodes": 27648, "days": 30.0, "params": 31_400_000_000,
                    "model": {"name": "gpt-31b", "layers": 60, "hidden": 6656, "heads": 52,
                              "ffn": 26624, "vocab": 49152, "seq": 2048},
                    "layout_label": "TP8 PP16 DP216 mb1 1f1b", "time_to_train_s": 2_560_000.0},
        "assumptions": ["1 MPI rank per node", NASTY],
        "provenance": [{"parameter": "network.link_bandwidth", "value": 6.8e9,
                        "source": "Fujitsu guide"},
                       {"parameter": "node.clock_hz", "value": 2.2e9, "source": NASTY}],
    }


class StrictParser(HTMLParser):
    """Collects elements, ids, attributes and text; records tags that do not nest."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.tags, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack[-1:] != ["style"]:
            self.text.append(data)


def parse(page: str) -> StrictParser:
    p = StrictParser()
    p.feed(page)
    p.close()
    assert p.errors == [] and p.stack == [], (p.errors, p.stack)
    return p


def page_text(page: str) -> str:
    """The text a reader sees (character references decoded), whitespace collapsed."""
    return " ".join("".join(parse(page).text).split())


# --------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("fn, x, want", [
    (fmt.num, 1_234_567, "1,230,000"), (fmt.num, 386_412.5, "386,000"), (fmt.num, 41.23, "41.2"),
    (fmt.num, 0.04567, "0.0457"), (fmt.num, 9.996, "10.0"), (fmt.num, 999.7, "1,000"),
    (fmt.num, -2.5, "-2.50"), (fmt.num, 0, "0"), (fmt.num, None, "n/a"),
    (fmt.num, float("nan"), "n/a"), (fmt.count, 13824, "13,824"), (fmt.count, None, "n/a"),
    (fmt.pct, 0.8731, "87.3%"), (fmt.pct, 1.0, "100%"), (fmt.signed_pct, 0.052, "+5.20%"),
    (fmt.signed_pct, -0.0848, "-8.48%"), (fmt.days, 983_407.0, "11.4"), (fmt.gb, 21.8e9, "21.8"),
    (fmt.duration, 1.31e-4, "131 us"), (fmt.duration, 0.0452, "45.2 ms"),
    (fmt.duration, 3.16, "3.16 s"), (fmt.duration, 1279.7, "21.3 min"),
    (fmt.duration, 22_831.0, "6.34 h"), (fmt.duration, 983_407.0, "11.4 days"),
    (fmt.big, 13_167_577_728, "13.2 B"), (fmt.big, 3.8e11, "380 B"), (fmt.big, 1.2e12, "1.20 T"),
    (fmt.value, True, "yes"), (fmt.value, None, "n/a"),
    (fmt.value, 6.8e9, "6,800,000,000"), (fmt.value, 1024.0, "1,024"), (fmt.value, 0.934, "0.934"),
    (fmt.value, 158976, "158,976"), (fmt.value, "x", "x"), (fmt.value, {"fp32": 64}, "fp32 64"),
    (fmt.value, [2, "mesh"], "2, mesh"),
])
def test_number_formats(fn, x, want):
    assert fn(x) == want


# --------------------------------------------------------------------------------- HTML

def test_html_is_well_formed_with_ten_sections_in_order_and_contents(report):
    p = parse(render_html(report, fake_images()))
    assert len(p.ids) == len(set(p.ids))
    assert [i for i in p.ids if i in SECTION_IDS] == SECTION_IDS
    links = [a["href"] for tag, a in p.tags if tag == "a"]
    assert links == [f"#{i}" for i in SECTION_IDS]
    headings = re.findall(r"<section id=\"(\w+)\"><h2>(.*?)</h2>", render_html(report, {}))
    assert headings == [(sid, f"{i} {escape(title)}")
                        for i, (sid, title, _) in enumerate(fmt.SECTIONS, 1)]


def test_every_image_is_embedded_and_decodes_to_the_given_bytes(report):
    images = fake_images()
    p = parse(render_html(report, images))
    srcs = [a["src"] for tag, a in p.tags if tag == "img"]
    assert len(srcs) == len(images)
    decoded = []
    for src in srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        decoded.append(base64.b64decode(src[len(prefix):], validate=True))
    assert sorted(decoded) == sorted(images.values())


def test_page_is_self_contained(report):
    page = render_html(report, fake_images())
    p = parse(page)
    tags = {tag for tag, _ in p.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    for _, attrs in p.tags:
        for name, val in attrs.items():
            assert not (val or "").startswith(("http:", "https:", "//")), (name, val)
    style = page[page.index("<style>"):page.index("</style>")]
    assert "@import" not in style and "url(" not in style and "@font-face" not in style
    assert "@media print" in style and "max-width: 100%" in style


def test_summary_numbers_appear_as_the_page_formats_them(report):
    s = report["summary"]
    text = page_text(render_html(report, fake_images()))
    shown = [fmt.count(s["nodes"]), s["layout_label"], fmt.num(s["tokens_per_s"]),
             fmt.pct(s["mfu"]), fmt.days(s["time_to_train_s"]), fmt.num(s["node_hours"]),
             fmt.num(s["energy_mwh"]), fmt.pct(s["memory_fraction_of_usable"]),
             fmt.pct(1 - s["memory_fraction_of_usable"]), fmt.num(s["iteration_s"]),
             fmt.num(s["des_iteration_s"]), *s["confidence"]]
    # the helpers agree with a reader's expectation for this fixture
    assert shown[:11] == ["13,824", "TP6 PP8 DP288 mb1 1f1b", "386,000", "6.17%", "11.4",
                          "3,780,000", "566", "87.3%", "12.7%", "21.4", "22.0"]
    for value in shown:
        assert value in text, value


def test_reliability_numbers_all_appear(report):
    r = report["reliability"]
    text = page_text(render_html(report, {}))
    for value in [fmt.num(r["node_mtbf_h"]), r["mtbf_source"], fmt.duration(r["job_mtbf_s"]),
                  fmt.gb(r["checkpoint_bytes"]), fmt.gb(r["checkpoint_bandwidth"]),
                  r["checkpoint_source"], fmt.duration(r["checkpoint_s"]),
                  fmt.duration(r["interval_s"]), "Young/Daly",
                  fmt.num(r["expected_interruptions"]), fmt.pct(r["goodput"]),
                  fmt.days(r["time_to_train_s"]), fmt.days(r["time_with_failures_s"])]:
        assert value in text, value
    assert "3.01 days" in text and "21.3 min" in text and "99.5%" in text
    # both times round to 11.4 days, so the page also says what the failures add
    assert "become 11.4 days (90.6 min more)" in text


def test_reference_layout_is_highlighted_and_labelled(report):
    page = render_html(report, fake_images())
    marked = re.findall(r'<tr class="mark">(.*?)</tr>', page)
    ref = [row for row in marked if "TP6 PP8 DP288" in row and "Fugaku-LLM&#x27;s layout" in row]
    assert len(ref) == 1 and "global batch 2016" in ref[0]
    # the knee rung is marked in the scaling table too
    assert any("27,648" not in row and "13,824" in row for row in marked)


def test_reference_label_is_not_repeated_and_its_absence_is_said(report):
    report["layouts"][1]["note"] = "Fugaku-LLM's layout (global batch 2016)"
    text = page_text(render_html(report, {}))
    assert text.count("Fugaku-LLM's layout") == 2            # the sentence above and the row
    for row in report["layouts"]:
        row["reference"] = False
    page = render_html(report, {})
    assert "Fugaku-LLM&#x27;s layout is not among these layouts." in page
    assert not [r for r in re.findall(r'<tr class="mark">(.*?)</tr>', page) if "TP4" in r]


def test_missing_sections_and_images_say_so_in_one_sentence(report):
    for key in ("reliability", "memory", "timeline", "inverse", "assumptions", "provenance"):
        del report[key]
    report["scaling"]["points"] = []
    report["network"] = {"shape": [], "axes": [], "heatmap": [], "dimension": "",
                         "hottest": [], "placement": []}
    p = parse(render_html(report, fake_images(["sensitivity.png"])))
    text = " ".join("".join(p.text).split())
    assert [i for i in p.ids if i in SECTION_IDS] == SECTION_IDS
    for sid in ("scaling", "memory", "timeline", "network", "reliability", "inverse",
                "assumptions"):
        assert fmt.not_available(sid) in text
    for sid in ("summary", "layouts", "sensitivity"):
        assert fmt.not_available(sid) not in text
    assert fmt.not_available("reliability") == "This report has no reliability estimate."
    assert len([t for t, _ in p.tags if t == "img"]) == 1


def test_figure_missing_with_its_data_present_is_named(report):
    text = page_text(render_html(report, fake_images(["scaling.png"])))
    assert "The figure time_cost.png" in text and "is not available." in text
    assert "The figure scaling.png" not in text


def test_wording_follows_the_data(report):
    report["network"]["heatmap"] = [[162, 162], [162, 162]]
    report["timeline"]["stages"] = 1
    text = page_text(render_html(report, {}))
    assert "over axes X and Z, 162 flows on every node." in text
    assert "1 pipeline stage; one iteration takes 4.00 s." in text


def test_reliability_without_checkpoint_bandwidth_and_nothing_fits(report):
    report["reliability"].update(checkpoint_bandwidth=None, checkpoint_s=None, restart_s=None,
                                 interval_s=None, goodput=None, time_with_failures_s=None)
    report["inverse"].update(params=None, model=None, layout_label=None, time_to_train_s=None)
    text = page_text(render_html(report, {}))
    assert "checkpoint write bandwidth is not known" in text
    assert "No model of this family trains within 30.0 days on 27,648 nodes." in text


def test_strings_are_escaped(report):
    report["title"] = "A < B & C"
    report["summary"]["layout_label"] = "TP<6> & co"
    page = render_html(report, {})
    assert "<script>" not in page and "<b>co</b>" not in page
    assert escape(NASTY) in page and "A &lt; B &amp; C" in page
    assert "TP&lt;6&gt; &amp; co" in page
    assert NASTY in page_text(page)          # a reader sees the string as written


def test_html_tolerates_empty_and_partial_reports():
    for report in ({}, {"summary": {}}, {"summary": {"nodes": 4}, "layouts": [{"label": "x"}]}):
        p = parse(render_html(report, {}))
        assert [i for i in p.ids if i in SECTION_IDS] == SECTION_IDS


# --------------------------------------------------------------------------------- Markdown

IMAGE_REF = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("names", [IMAGE_NAMES, ["memory.png", "network.png"], []])
def test_markdown_references_exactly_the_images_that_exist(report, names):
    md = render_markdown(report, names)
    assert sorted(IMAGE_REF.findall(md)) == sorted(names)


def test_markdown_has_the_same_sections_tables_and_escapes(report):
    md = render_markdown(report, IMAGE_NAMES)
    headings = re.findall(r"^## (.+)$", md, re.M)
    assert headings == [f"{i} {t}" for i, (_, t, _) in enumerate(fmt.SECTIONS, 1)]
    for h in headings:                     # the contents link to GitHub's heading anchors
        assert f"(#{h.lower().replace(' ', '-')})" in md
    for table in re.findall(r"(?:^\|.*\|\n)+", md, re.M):
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table
    assert "| **2** | **TP6 PP8 DP288 mb1 1f1b** |" in md
    assert "Fugaku-LLM's layout; global batch 2016" in md
    assert "<script>" not in md and r"\<script\>" in md and r"\& \<b\>co" in md
    for value in (fmt.count(13824), fmt.num(386_412.5), fmt.pct(0.0617), fmt.days(983_407.0)):
        assert value in md


def test_html_and_markdown_say_the_same_thing(report):
    text = page_text(render_html(report, fake_images()))
    md = render_markdown(report, IMAGE_NAMES)
    for section in fmt.sections(report, IMAGE_NAMES):
        for block in section.blocks:
            if isinstance(block, fmt.Para):
                assert " ".join(block.text.split()) in text
                assert block.text in md.replace("\\", "")


# --------------------------------------------------------------------------------- writing

def test_write_report_writes_every_file_atomically(report, tmp_path):
    out = tmp_path / "new" / "report"
    images = fake_images(IMAGE_NAMES[:4])
    paths = write_report(out, report, images)
    assert set(paths) == {"index.html", "report.md", "report.json", *images}
    assert sorted(os.listdir(out)) == sorted(paths)           # no temporary files left
    for name, path in paths.items():
        assert os.path.dirname(path) == str(out) and os.path.getsize(path) > 0
    for name, data in images.items():
        assert (out / name).read_bytes() == data
    assert json.loads((out / "report.json").read_text()) == report
    md = (out / "report.md").read_text()
    assert sorted(IMAGE_REF.findall(md)) == sorted(images)
    parse((out / "index.html").read_text())
    # writing again replaces the files in place
    report["title"] = "second"
    write_report(out, report, images)
    assert json.loads((out / "report.json").read_text())["title"] == "second"
    assert sorted(os.listdir(out)) == sorted(paths)


def test_write_report_does_not_modify_its_inputs(report, tmp_path):
    before, images = copy.deepcopy(report), fake_images()
    write_report(tmp_path, report, images)
    assert report == before and images == fake_images()


def test_a_file_in_place_of_the_out_dir_is_a_clear_error(report, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"^out: .*taken.*not a directory"):
        write_report(f, report, {})
    with pytest.raises(ValueError, match=r"^out: cannot create .*taken"):
        write_report(f / "below", report, {})
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["../evil.png", "sub/x.png", "report.md", ".hidden.png", ""])
def test_image_names_must_be_plain_files(report, tmp_path, name):
    with pytest.raises(ValueError, match="images"):
        write_report(tmp_path / "out", report, {name: PNG})
    assert not (tmp_path / "out").exists()


def test_a_failed_write_names_the_file_and_leaves_no_temporary_file(report, tmp_path):
    (tmp_path / "report.md").mkdir()                  # os.replace cannot put a file here
    with pytest.raises(ValueError, match=r"^out: cannot write .*report\.md"):
        write_report(tmp_path, report, {})
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
