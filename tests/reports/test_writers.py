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
from fpcore.atomic import host_tag
from fpcore.errors import SpecError
from reports.write import stage, write_report

GB = 1e9
PNG = b"\x89PNG\r\n\x1a\n"
SECTION_IDS = ["summary", "scaling", "memory", "layouts", "timeline", "network", "sensitivity",
               "reliability", "inverse", "assumptions"]
IMAGE_NAMES = ["scaling.png", "time_cost.png", "memory.png", "timeline.png", "network.png",
               "sensitivity.png"]
NASTY = "<script>alert('x')</script> & <b>co</b>"


def fake_images(names=IMAGE_NAMES) -> dict[str, bytes]:
    return {name: PNG + name.encode() + bytes(range(i + 3)) for i, name in enumerate(names)}


def _rung(max_nodes, nodes, label, it, tps, ideal, mfu, marginal=None):
    ttt = 3.8e11 / tps
    return {"max_nodes": max_nodes, "nodes": nodes, "layout_label": label, "iteration_s": it,
            "tokens_per_s": tps, "ideal_tokens_per_s": ideal, "mfu": mfu,
            "time_to_train_s": ttt, "node_hours": ttt * nodes / 3600,
            "marginal_efficiency": marginal}


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
                    "memory_verdict": "fits", "headroom_alternative": None,
                    "memory_rule": "fits: at most 95% of the usable memory; tight: over 95%; "
                                   "does not fit: over 100%",
                    "confidence": ["calibrated parameters: none", "DES within 3% of analytic"]},
        "scaling": {"points": [
            _rung(3456, 3456, "TP6 PP8 DP72 mb1 1f1b", 80.1, 1.03e5, 1.03e5, 0.066),
            _rung(6912, 6912, "TP6 PP8 DP144 mb1 1f1b", 41.0, 2.01e5, 2.06e5, 0.064,
                  marginal=0.951),
            _rung(13824, 13824, ref, 21.37, 3.86e5, 4.12e5, 0.0617, marginal=0.920),
            _rung(27648, 27648, "TP6 PP16 DP288 mb1 1f1b", 16.2, 5.1e5, 8.24e5, 0.041,
                  marginal=0.321)],
            "knee_nodes": 13824, "knee_threshold": 0.5,
            "knee_rule": "the knee is the job size before the first step whose marginal "
                         "efficiency is below 50%"},
        "memory": [{"nodes": n, "layout_label": lab, "weights": 2.19 * GB,
                    "gradients": 2.19 * GB, "optimizer": 4.38 * GB, "activations": a * GB,
                    "buffers": 0.7 * GB, "usable": 25 * GB, "memory_verdict": "fits",
                    "memory_fraction_of_usable": (11.46 + a) / 25}
                   for n, lab, a in ((6912, "TP6 PP8 DP144 mb1 1f1b", 12.4), (13824, ref, 12.4))],
        "layouts": [
            {"rank": 1, "label": "TP4 PP12 DP288 mb1 1f1b", "nodes": 13824, "iteration_s": 19.8,
             "des_iteration_s": 20.3, "tokens_per_s": 417_000.0, "mfu": 0.0666,
             "memory_bytes_per_node": 23.1e9, "fits": True, "memory_fraction_of_usable": 0.924,
             "memory_verdict": "fits", "time_to_train_s": 911_000.0,
             "reference": False, "note": ""},
            {"rank": 2, "label": ref, "nodes": 13824, "iteration_s": 21.37,
             "des_iteration_s": 22.04, "tokens_per_s": 386_412.5, "mfu": 0.0617,
             "memory_bytes_per_node": 21.8e9, "fits": True, "memory_fraction_of_usable": 0.872,
             "memory_verdict": "fits", "time_to_train_s": 983_407.0,
             "reference": True, "note": "global batch 2016"},
            {"rank": 3, "label": "TP12 PP4 DP288 mb1 1f1b", "nodes": 13824,
             "iteration_s": 30.2, "des_iteration_s": 31.0, "tokens_per_s": 273_000.0,
             "mfu": 0.0437, "memory_bytes_per_node": 26.0e9, "fits": False,
             "memory_fraction_of_usable": 1.04, "memory_verdict": "does not fit",
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
                        "nodes": 13824, "job_mtbf_s": 260_416.7,
                        "checkpoint_bytes_per_node": 11.4e9, "checkpoint_bytes_total": 158e9,
                        "checkpoint_bandwidth_per_node": 50e9, "checkpoint_source": "given",
                        "fs_bandwidth": 1.4e12, "fs_bandwidth_source": "[assumed] the K FEFS",
                        "checkpoint_node_s": 0.228, "checkpoint_fs_s": 0.113,
                        "checkpoint_s": 0.228, "checkpoint_limit": "per-node bandwidth",
                        "relaunch_s": 600.0, "relaunch_source": "[assumed] 10 minutes",
                        "restart_s": 600.228, "interval_s": 344.7,
                        "expected_interruptions": 3.81, "goodput": 0.99587,
                        "time_to_train_s": 983_407.0, "time_with_failures_s": 987_485.0},
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
             fmt.num(s["iteration_s"]), fmt.num(s["des_iteration_s"]), *s["confidence"]]
    # the helpers agree with a reader's expectation for this fixture
    assert shown[:10] == ["13,824", "TP6 PP8 DP288 mb1 1f1b", "386,000", "6.17%", "11.4",
                          "3,780,000", "566", "87.3%", "21.4", "22.0"]
    assert "fits (87.3%)" in text and "usable memory: fits." in text
    for value in shown:
        assert value in text, value


def test_reliability_numbers_all_appear(report):
    r = report["reliability"]
    text = page_text(render_html(report, {}))
    for value in [fmt.num(r["node_mtbf_h"]), r["mtbf_source"], fmt.duration(r["job_mtbf_s"]),
                  r["checkpoint_source"], r["fs_bandwidth_source"], r["relaunch_source"],
                  fmt.duration(r["checkpoint_s"]), fmt.duration(r["interval_s"]), "Young/Daly",
                  fmt.num(r["expected_interruptions"]), fmt.days(r["time_to_train_s"]),
                  fmt.days(r["time_with_failures_s"])]:
        assert value in text, value
    assert "3.01 days" in text and "5.75 min" in text and "99.59%" in text
    # both times round to 11.4 days, so the page also says what the failures add
    assert "become 11.4 days (68.0 min more)" in text


def _reliability_rows(report) -> dict[str, tuple[str, str]]:
    section = next(s for s in fmt.sections(report, []) if s.id == "reliability")
    table = next(b for b in section.blocks if isinstance(b, fmt.Table))
    return {row[0]: (row[1], row[2]) for row in table.rows}


def test_reliability_says_total_and_per_node_sizes_both_bandwidths_and_the_relaunch(report):
    rows = _reliability_rows(report)
    assert rows["Checkpoint size, total (GB)"][0] == "158"
    assert rows["Checkpoint size, per node (GB)"][0] == "11.4"
    assert rows["Write bandwidth per node"] == ("50.0 GB/s", "given")
    assert rows["File-system bandwidth, aggregate"] == ("1.40 TB/s", "[assumed] the K FEFS")
    assert rows["Relaunch time"] == ("10.0 min", "[assumed] 10 minutes")
    assert rows["Restart time"][0] == "10.0 min"
    assert "per-node bandwidth" in rows["Checkpoint write time"][1]
    assert all(value != fmt.NA for value, _ in rows.values()), rows
    text = page_text(render_html(report, {}))
    assert ("the slower of a node's own write (11.4 GB at 50.0 GB/s: 228 ms) and the file "
            "system's aggregate (158 GB at 1.40 TB/s: 113 ms); here the per-node bandwidth "
            "sets it") in text


def test_reference_layout_is_highlighted_and_labelled(report):
    page = render_html(report, fake_images())
    marked = re.findall(r'<tr class="mark">(.*?)</tr>', page)
    ref = [row for row in marked if "TP6 PP8 DP288" in row and "Fugaku-LLM&#x27;s layout" in row]
    assert len(ref) == 1 and "global batch 2016" in ref[0]
    # the knee rung is marked in the scaling table too
    assert any("27,648" not in row and "13,824" in row for row in marked)


def _section_table(report, sid: str) -> fmt.Table:
    section = next(s for s in fmt.sections(report, []) if s.id == sid)
    return next(b for b in section.blocks if isinstance(b, fmt.Table))


def test_the_knee_and_each_steps_marginal_efficiency_are_shown(report):
    table = _section_table(report, "scaling")
    col = table.header.index("marginal efficiency")
    assert [row[col] for row in table.rows] == ["-", "95.1%", "92.0%", "32.1%"]
    assert table.marked == {2}                                   # 13,824 nodes
    text = page_text(render_html(report, {}))
    assert "The knee of the curve is at 13,824 nodes (highlighted)." in text
    assert "marginal efficiency is below 50%" in text


def test_a_curve_without_a_knee_says_so_and_marks_no_rung(report):
    report["scaling"]["knee_nodes"] = None
    assert _section_table(report, "scaling").marked == frozenset()
    text = page_text(render_html(report, {}))
    assert ("No knee between 3,456 and 27,648 nodes: every step up keeps a marginal "
            "efficiency of at least 50%, so adding nodes still pays at the largest size "
            "shown.") in text
    assert "The knee of the curve" not in text


def test_a_tight_layout_is_called_tight_and_the_layout_with_headroom_is_named(report):
    s = report["summary"]
    s.update(memory_fraction_of_usable=0.976, memory_verdict="tight", headroom_alternative={
        "rank": 2, "label": "TP6 PP8 DP288 mb1 1f1b", "nodes": 13824, "iteration_s": 21.37,
        "tokens_per_s": 386_412.5, "time_to_train_s": 983_407.0,
        "memory_fraction_of_usable": 0.872})
    report["layouts"][0].update(memory_fraction_of_usable=0.976, memory_verdict="tight")
    summary = next(s for s in fmt.sections(report, []) if s.id == "summary")
    stats = dict(next(b for b in summary.blocks if isinstance(b, fmt.Stats)).items)
    assert stats["Memory (of usable)"] == "tight (97.6%)"
    text = page_text(render_html(report, {}))
    assert ("the peak pipeline stage uses 97.6% of the node's usable memory: tight. With "
            "headroom, the fastest layout listed is #2, TP6 PP8 DP288 mb1 1f1b on 13,824 "
            "nodes: 386,000 tokens/s, 11.4 days, 87.2% of usable memory.") in text
    assert "Memory rule: fits: at most 95% of the usable memory" in text
    table = _section_table(report, "layouts")
    verdicts = [row[table.header.index("memory")] for row in table.rows]
    assert verdicts == ["tight", "fits", "does not fit"]
    assert [row[table.header.index("memory GB/node (% usable)")] for row in table.rows][0] \
        == "23.1 (97.6%)"
    md = render_markdown(report, [])
    assert "usable memory: tight. With headroom" in md


def test_memory_rows_carry_the_verdict(report):
    report["memory"][1].update(memory_verdict="tight", memory_fraction_of_usable=0.97)
    table = _section_table(report, "memory")
    assert [row[-1] for row in table.rows] == ["fits", "tight"]


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


def test_nothing_fits_the_inverse_question(report):
    report["inverse"].update(params=None, model=None, layout_label=None, time_to_train_s=None)
    text = page_text(render_html(report, {}))
    assert "No model of this family trains within 30.0 days on 27,648 nodes." in text


def test_strings_are_escaped(report):
    report["title"] = "A < B & C"
    report["summary"]["layout_label"] = "TP<6> & co"
    page = render_html(report, {})
    assert "<script>" not in page and "<b>co</b>" not in page
    assert escape(NASTY) in page and "A &lt; B &amp; C" in page
    assert "TP&lt;6&gt; &amp; co" in page
    assert NASTY in page_text(page)          # a reader sees the string as written


def test_commands_are_code_and_flags_are_kept_whole_on_a_line(report):
    """A browser breaks a line after the dashes of --a-long-flag; the page keeps each
    flag whole and sets `commands` as code, escaped like the rest."""
    report["assumptions"] = ["measure it: `fugakuperf calibrate <node>`, then plan with "
                             "--calibration FILE or --expert-tensor-parallel-size 1"]
    page = render_html(report, {})
    assert "<code>fugakuperf calibrate &lt;node&gt;</code>" in page
    assert '<span class="flag">--calibration</span> FILE' in page
    assert '<span class="flag">--expert-tensor-parallel-size</span> 1' in page
    assert "fugakuperf calibrate <node>, then plan with --calibration FILE" in page_text(page)
    # a table's cells too (sources name flags: --checkpoint-gbs replaces it)
    report["provenance"][0]["source"] = "--checkpoint-gbs replaces it"
    assert '<span class="flag">--checkpoint-gbs</span> replaces it' in render_html(report, {})


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
            if isinstance(block, fmt.Para):       # (the page sets `commands` as code)
                assert " ".join(block.text.replace("`", "").split()) in text
                assert block.text in md.replace("\\", "")


# --------------------------------------------------------------------------------- writing

def test_write_report_writes_every_file_atomically(report, tmp_path):
    out = tmp_path / "report"
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
    with pytest.raises(SpecError, match=r"^out: .*taken is a file"):
        write_report(f, report, {})
    with pytest.raises(SpecError, match=r"^out: cannot create .*taken/below: .*taken is not a "
                                        r"directory"):
        write_report(f / "below", report, {})
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["../evil.png", "sub/x.png", "report.md", ".hidden.png", ""])
def test_image_names_must_be_plain_files(report, tmp_path, name):
    with pytest.raises(ValueError, match="images"):
        write_report(tmp_path / "out", report, {name: PNG})
    assert not (tmp_path / "out").exists()


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _debris(parent) -> list[str]:
    return [n for n in os.listdir(parent) if n.startswith(".")]


def test_a_report_replaces_the_previous_one_whole(report, tmp_path):
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    report["title"] = "second"
    paths = write_report(out, report, fake_images(IMAGE_NAMES[:2]))
    # the figures the new report lacks are gone with the old report: nothing is mixed
    assert sorted(os.listdir(out)) == sorted(paths) == sorted(
        ["index.html", "report.md", "report.json", *IMAGE_NAMES[:2]])
    assert json.loads((out / "report.json").read_text())["title"] == "second"
    assert _debris(tmp_path) == []


def test_a_write_failing_midway_leaves_the_previous_report_whole(report, tmp_path,
                                                                  monkeypatch):
    import reports.write as writer
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    before = _files(out)
    calls = []
    real = writer._write_file

    def failing(path, data):
        calls.append(path)
        if len(calls) == 3:                 # two new files are already on disk
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(writer, "_write_file", failing)
    report["title"] = "second"
    with pytest.raises(SpecError, match=r"^out: cannot write .*r: No space left on device"):
        write_report(out, report, fake_images(IMAGE_NAMES[:2]))
    assert len(calls) == 3
    assert _files(out) == before            # the whole old report, byte for byte
    assert _debris(tmp_path) == []          # and no staged folder left beside it


KILLED_WRITER = """
import os, sys, time
import reports.write as writer
from fpcore.errors import SpecError
from reports.write import stage, write_report
real = writer._write_file
count = [0]
def slow(path, data):
    real(path, data)
    count[0] += 1
    if count[0] == 2:                       # mid-write: two files of the new report on disk
        print("writing", flush=True)
        time.sleep(60)
writer._write_file = slow
write_report(sys.argv[1], {"title": "second"}, {"scaling.png": b"new"})
"""


def test_a_killed_write_leaves_the_previous_report_whole(report, tmp_path):
    import signal
    import subprocess
    import sys
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    before = _files(out)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)],
                             stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        assert child.stdout.readline().strip() == "writing"
        staged = _debris(tmp_path)
        assert len(staged) == 1 and staged[0].endswith(".report")
        assert len(os.listdir(tmp_path / staged[0])) == 2
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _files(out) == before            # killed mid-write: the old report, whole
    # the dead writer's staged folder goes with the next write of the same target
    write_report(out, report, fake_images(IMAGE_NAMES[:1]))
    assert _debris(tmp_path) == []
    assert sorted(os.listdir(out)) == sorted(["index.html", "report.md", "report.json",
                                              IMAGE_NAMES[0]])


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
     "holds files a report does not write (notes.txt)"),
    (lambda p: (p.mkdir(), (p / "photo.png").write_bytes(PNG)),
     "not a report's folder (it has no report.json)"),
    (lambda p: (p.mkdir(), (p / "report.json").write_text("{}"), (p / "sub").mkdir()),
     "holds files a report does not write (sub)"),
])
def test_out_that_is_not_a_report_folder_is_refused_untouched(tmp_path, make, problem):
    target = tmp_path / "out"
    make(target)
    before = sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()
    with pytest.raises(SpecError) as e:
        stage(target)
    assert e.value.field == "out" and problem in e.value.message
    assert (sorted(os.listdir(target)) if target.is_dir() else target.read_bytes()) == before
    assert _debris(tmp_path) == []


@pytest.mark.parametrize("path, problem", [
    ("/dev/null", "not a directory (a device, pipe or socket)"),
    ("/proc/fugakuperf-report", "cannot create /proc/fugakuperf-report"),
    ("/tmp/" + "x" * 300, "File name too long"),
])
def test_out_that_cannot_be_made_is_refused(path, problem):
    with pytest.raises(SpecError) as e:
        stage(path, field="--out")
    assert e.value.field == "--out" and problem in e.value.message, e.value.message
    if path == "/dev/null":
        assert os.path.exists("/dev/null") and not os.path.isdir("/dev/null")


def test_stage_makes_an_empty_folder_beside_the_target(tmp_path):
    (tmp_path / "a").mkdir()
    staging = stage(tmp_path / "a" / "report")
    assert os.path.dirname(staging.path) == str(tmp_path / "a")
    assert os.listdir(staging.path) == [] and not (tmp_path / "a" / "report").exists()
    staging.discard()
    assert os.listdir(tmp_path / "a") == []


def test_a_report_folder_is_made_only_in_a_folder_that_exists(tmp_path):
    """As every output (and --checkpoint-dir): a typo in a parent is refused, not made."""
    with pytest.raises(SpecError, match="the folder .*/a/b does not exist"):
        stage(tmp_path / "a" / "b" / "report")
    assert os.listdir(tmp_path) == []


def test_files_put_into_the_target_during_the_work_are_not_removed(report, tmp_path):
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    staging = stage(out)                              # the work would run here
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="holds files a report does not write"):
        write_report(out, report, fake_images(), staging=staging)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.json").exists()
    assert _debris(tmp_path) == []


def test_a_previous_report_renamed_aside_by_a_dead_writer_is_put_back(report, tmp_path):
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    before = _files(out)
    dead = 2 ** 22 + 12345                             # above Linux's default pid_max
    aside = tmp_path / f".r.{host_tag()}.{dead}.abcdefgh.old"
    os.rename(out, aside)                              # killed between the two renames
    stage(out).discard()
    assert _files(out) == before and _debris(tmp_path) == []


def test_without_an_atomic_exchange_the_previous_report_is_renamed_aside(report, tmp_path,
                                                                           monkeypatch):
    import reports.write as writer
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    out = tmp_path / "r"
    write_report(out, report, fake_images())
    report["title"] = "second"
    write_report(out, report, fake_images(IMAGE_NAMES[:1]))
    assert json.loads((out / "report.json").read_text())["title"] == "second"
    assert sorted(os.listdir(out)) == sorted(["index.html", "report.md", "report.json",
                                              IMAGE_NAMES[0]])
    assert _debris(tmp_path) == []


def test_the_timeline_table_sums_each_stages_data_parallel_work(report):
    """The stream's reductions and weight gathers (drawn apart since the timeline tells
    them apart) are the table's one dp column: once shown as 0 beside red bars."""
    report["timeline"]["spans"] = [dict(sp, kind="dp_reduce") if sp["kind"] == "dp" else sp
                                   for sp in report["timeline"]["spans"]]
    report["timeline"]["spans"].append({"stage": 1, "kind": "dp_gather", "start": 3.1,
                                        "end": 3.4, "label": "gather"})
    table = _section_table(report, "timeline")
    col = table.header.index("dp (s)")
    assert [row[col] for row in table.rows] == [fmt.num(0.6), fmt.num(0.3)]
