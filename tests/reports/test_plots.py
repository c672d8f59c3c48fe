"""reports.plots: every image renders to deterministic PNG bytes from a hand-built
report dict (reports/schema.md), decoded here to check what was drawn: the fixed size,
a picture rather than a blank page, a different picture for different data, and the
colours that carry meaning where they do; missing sections are skipped."""

import copy
import io

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from reports import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Every image has the module's fixed size (no tight bounding box): width x height pixels.
HEIGHT, WIDTH = round(plots.FIGSIZE[1] * plots.DPI), round(plots.FIGSIZE[0] * plots.DPI)
NAMES = {"scaling.png", "time_cost.png", "memory.png", "timeline.png", "network.png",
         "sensitivity.png"}
GB = 1e9
DAY = 86400.0


def _timeline(stages: int, microbatches: int, f: float = 0.5, b: float = 1.0) -> dict:
    """A 1F1B-like schedule with every span kind: F, B, send, dp, optimizer."""
    spans = []
    end_of_stage = []
    for s in range(stages):
        t = s * f
        for m in range(microbatches):
            spans.append({"stage": s, "kind": "F", "start": t, "end": t + f, "label": f"F{m}"})
            spans.append({"stage": s, "kind": "send", "start": t + f, "end": t + f + 0.05,
                          "label": f"send F{m}"})
            t += f
        for m in range(microbatches):
            spans.append({"stage": s, "kind": "B", "start": t, "end": t + b, "label": f"B{m}"})
            t += b
        spans.append({"stage": s, "kind": "dp", "start": t - 0.5, "end": t + 0.8, "label": "dp"})
        spans.append({"stage": s, "kind": "optimizer", "start": t + 0.8, "end": t + 1.0,
                      "label": "optimizer"})
        end_of_stage.append(t + 1.0)
    return {"stages": stages, "iteration_s": max(end_of_stage), "spans": spans}


def _rung(nodes: int, label: str, it: float, tps: float, ideal: float, mfu: float) -> dict:
    tokens = 4e11
    ttt = tokens / tps
    return {"max_nodes": nodes, "nodes": nodes, "layout_label": label, "iteration_s": it,
            "tokens_per_s": tps, "ideal_tokens_per_s": ideal, "mfu": mfu,
            "time_to_train_s": ttt, "node_hours": ttt * nodes / 3600}


def _memory(nodes: int, label: str, act: float) -> dict:
    return {"nodes": nodes, "layout_label": label, "weights": 3.1 * GB, "gradients": 3.1 * GB,
            "optimizer": 9.0 * GB / (nodes / 1728), "activations": act * GB,
            "buffers": 0.6 * GB, "usable": 28.0 * GB}


@pytest.fixture
def report() -> dict:
    points = [
        _rung(1728, "TP6 PP8 DP36 mb1 1f1b", 60.0, 1.4e5, 1.4e5, 0.42),
        _rung(3456, "TP6 PP8 DP72 mb1 1f1b", 31.0, 2.7e5, 2.8e5, 0.40),
        _rung(6912, "TP6 PP8 DP144 mb1 1f1b", 17.0, 4.9e5, 5.6e5, 0.36),
        _rung(13824, "TP6 PP8 DP288 mb1 1f1b", 10.5, 7.9e5, 1.12e6, 0.29),
        _rung(27648, "TP6 PP16 DP288 mb1 1f1b", 8.0, 1.0e6, 2.24e6, 0.18),
    ]
    return {
        "title": "fugaku-llm-13b on Fugaku",
        "generated_by": "test",
        "model": {"name": "fugaku-llm-13b", "params": 13e9},
        "system": {"name": "fugaku", "clock_ghz": 2.0, "eco_mode": False, "ranks_per_node": 1,
                   "description": "A64FX", "peak_tflops_per_node": {"fp32": 3.38, "fp16": 6.76},
                   "usable_memory_bytes_per_node": 28 * GB, "power_w_per_node": 110.0},
        "tokens": 4e11,
        "global_batch": 2016,
        "summary": {"nodes": 13824, "layout_label": "TP6 PP8 DP288 mb1 1f1b",
                    "iteration_s": 10.5, "des_iteration_s": 10.9, "tokens_per_s": 7.9e5,
                    "mfu": 0.29, "time_to_train_s": 4e11 / 7.9e5, "node_hours": 1.9e6,
                    "energy_mwh": 210.0, "memory_fraction_of_usable": 0.8,
                    "confidence": ["calibrated"]},
        "scaling": {"points": points, "knee_nodes": 13824,
                    "knee_rule": "last rung with >= 70% scaling efficiency"},
        "memory": [_memory(p["nodes"], p["layout_label"], act)
                   for p, act in zip(points, (14.0, 12.0, 11.0, 10.0, 6.0))],
        "layouts": [],
        "timeline": _timeline(stages=4, microbatches=6),
        "network": {"shape": [24, 23, 24, 2, 3, 2], "axes": ["X", "Z"],
                    "heatmap": [[(i * 6 + j) % 7 + 3 * i for j in range(6)] for i in range(4)],
                    "dimension": "Y", "hottest": [], "placement": []},
        "sensitivity": [
            {"name": "clock", "change": "2.0 -> 2.2 GHz", "time_to_train_s": 4.6e5,
             "delta": -0.09, "layout_label": "TP6 PP8 DP288 mb1 1f1b"},
            {"name": "link bandwidth", "change": "x0.5", "time_to_train_s": 5.9e5,
             "delta": 0.17, "layout_label": "TP6 PP8 DP288 mb1 1f1b"},
            {"name": "kernel efficiency", "change": "-10%", "time_to_train_s": 5.5e5,
             "delta": 0.083, "layout_label": "TP6 PP8 DP288 mb1 1f1b"},
        ],
        "assumptions": [],
        "provenance": [],
    }


FUNCTIONS = [plots.scaling_png, plots.time_cost_png, plots.memory_png, plots.timeline_png,
             plots.network_png, plots.sensitivity_png]


def pixels(png: bytes) -> np.ndarray:
    """The decoded PNG as (HEIGHT, WIDTH, 3) RGB values in [0, 1], checked to be a PNG of
    the fixed size."""
    assert png.startswith(PNG_SIGNATURE)
    image = imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    return image[..., :3]


def drawn(png: bytes) -> float:
    """The share of the image that is not the white page."""
    return float((pixels(png) < 0.98).any(axis=-1).mean())


def coloured(png: bytes, colour: str) -> int:
    """Pixels of exactly ``colour`` (to PNG's 8-bit rounding): a bar's or patch's fill."""
    return int((np.abs(pixels(png) - to_rgb(colour)).max(axis=-1) < 1.5 / 255).sum())


def assert_a_picture(png: bytes) -> None:
    """Axes, labels and data: over 5% of the page (a blank page covers 0%, an empty
    titled and labelled axes about 2.5%; these images 7% and more)."""
    assert drawn(png) > 0.05


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_image_is_png_nontrivial_deterministic_and_pure(fn, report):
    before = copy.deepcopy(report)
    first = fn(report)
    assert_a_picture(first)
    assert report == before  # the report is not modified
    assert fn(copy.deepcopy(report)) == first


def _slower_third_rung(r):
    r["scaling"]["points"][2]["tokens_per_s"] /= 2


def _costlier_last_rung(r):
    r["scaling"]["points"][-1]["time_to_train_s"] *= 3
    r["scaling"]["points"][-1]["node_hours"] *= 3


def _more_activations(r):
    r["memory"][0]["activations"] *= 2


def _shorter_pipeline(r):
    r["timeline"] = _timeline(stages=2, microbatches=3)


def _one_hot_link(r):
    r["network"]["heatmap"][1][2] = 60


def _every_change_slower(r):
    for row in r["sensitivity"]:
        row["delta"] = abs(row["delta"])


CHANGES = [(plots.scaling_png, _slower_third_rung), (plots.time_cost_png, _costlier_last_rung),
           (plots.memory_png, _more_activations), (plots.timeline_png, _shorter_pipeline),
           (plots.network_png, _one_hot_link), (plots.sensitivity_png, _every_change_slower)]


@pytest.mark.parametrize("fn, change", CHANGES, ids=lambda x: x.__name__)
def test_image_follows_its_data(fn, change, report):
    """One value of the image's own section changed: a different picture, not just
    different bytes (at least a thousand pixels differ), still a full picture."""
    changed = copy.deepcopy(report)
    change(changed)
    png = fn(changed)
    assert_a_picture(png)
    assert int((pixels(fn(report)) != pixels(png)).any(axis=-1).sum()) > 1000


def test_sensitivity_bars_are_coloured_by_direction(report):
    """A change that shortens the time to train is drawn in the faster colour, one that
    lengthens it in the slower colour (the legend shows a little of both either way):
    the fixture has one faster row and two slower ones."""
    all_slower, all_faster = copy.deepcopy(report), copy.deepcopy(report)
    for row in all_slower["sensitivity"]:
        row["delta"] = abs(row["delta"])
    for row in all_faster["sensitivity"]:
        row["delta"] = -abs(row["delta"])
    images = [plots.sensitivity_png(r) for r in (all_slower, report, all_faster)]
    faster = [coloured(png, plots.FASTER_COLOR) for png in images]
    slower = [coloured(png, plots.SLOWER_COLOR) for png in images]
    assert faster[0] < faster[1] < faster[2]
    assert slower[0] > slower[1] > slower[2]
    assert faster[0] < slower[0] / 20 and slower[2] < faster[2] / 20


def test_all_images_returns_the_six_names(report):
    images = plots.all_images(report)
    assert set(images) == NAMES
    for png in images.values():
        assert_a_picture(png)
    assert images["scaling.png"] == plots.scaling_png(report)


@pytest.mark.parametrize("section, skipped", [
    ("scaling", {"scaling.png", "time_cost.png"}),
    ("memory", {"memory.png"}),
    ("timeline", {"timeline.png"}),
    ("network", {"network.png"}),
    ("sensitivity", {"sensitivity.png"}),
])
def test_missing_or_empty_section_skips_its_image(report, section, skipped, monkeypatch):
    for name, (has, _render) in list(plots.IMAGES.items()):  # only the selection is under test
        monkeypatch.setitem(plots.IMAGES, name, (has, lambda r, name=name: name.encode()))
    missing = {k: v for k, v in report.items() if k != section}
    assert set(plots.all_images(missing)) == NAMES - skipped
    empty = dict(report)
    empty[section] = {"scaling": {"points": [], "knee_nodes": None, "knee_rule": ""},
                      "memory": [], "timeline": {"stages": 0, "iteration_s": 0.0, "spans": []},
                      "network": {"shape": [], "axes": [], "heatmap": [], "dimension": "",
                                  "hottest": [], "placement": []},
                      "sensitivity": []}[section]
    assert set(plots.all_images(empty)) == NAMES - skipped


def test_all_images_really_renders_without_a_section(report):
    del report["network"]
    images = plots.all_images(report)
    assert set(images) == NAMES - {"network.png"}
    assert images["timeline.png"] == plots.timeline_png(report)


def test_empty_report_gives_no_images():
    assert plots.all_images({}) == {}


def test_direct_call_on_missing_section_raises_clearly():
    with pytest.raises(ValueError, match="scaling"):
        plots.scaling_png({})
    with pytest.raises(ValueError, match="timeline"):
        plots.timeline_png({"timeline": {"stages": 2, "iteration_s": 1.0, "spans": []}})


def test_null_knee_and_missing_optional_values(report):
    report["scaling"]["knee_nodes"] = None
    for p in report["scaling"]["points"]:
        p["mfu"] = None
    report["summary"] = {}
    report["network"]["heatmap"][0][0] = None
    for fn in (plots.scaling_png, plots.time_cost_png, plots.network_png, plots.sensitivity_png):
        assert_a_picture(fn(report))


def test_single_rung_and_mixed_usable(report):
    report["scaling"]["points"] = report["scaling"]["points"][:1]
    report["scaling"]["knee_nodes"] = None
    report["memory"][1]["usable"] = 14 * GB
    assert_a_picture(plots.scaling_png(report))
    assert_a_picture(plots.time_cost_png(report))
    assert_a_picture(plots.memory_png(report))


def test_large_timeline_renders(report):
    small = plots.timeline_png(report)
    report["timeline"] = _timeline(stages=32, microbatches=70, f=0.01, b=0.02)
    assert len(report["timeline"]["spans"]) > 5000
    png = plots.timeline_png(report)
    assert_a_picture(png)
    assert int((pixels(png) != pixels(small)).any(axis=-1).sum()) > 1000


def test_module_import_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, reports.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
