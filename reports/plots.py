"""PNG images for capacity reports (see reports/schema.md).

One pure function per image: each takes the whole report dict (as written to report.json),
reads only its own section, and returns PNG bytes. ``all_images`` renders every image whose
section is present and non-empty.

matplotlib is imported inside the functions so that importing this module (and starting the
CLI) stays fast. Figures are built with the object API on the Agg canvas: no pyplot, no
global figure state. Output is deterministic: fixed size and dpi, and no "Software" tag in
the PNG metadata.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any, Callable

from .numbers import DAY, num

FIGSIZE = (7.5, 4.0)
DPI = 110
TITLE_SIZE = 11
LABEL_SIZE = 9.5
TICK_SIZE = 8.5
SMALL_SIZE = 7.5

# The timeline's span kinds: each schedule step kind as the schedules registry draws it
# (perfmodel.schedules.STEP_KINDS), then the simulator's communication and optimizer.
_OTHER_KINDS = {
    "tp": ("#CCB974", "TP collectives"),
    "send": ("#55A868", "send (pipeline p2p)"),
    "dp_gather": ("#64B5CD", "dp: weights gathered\n(ZeRO-3/FSDP, ZeRO-1/2 update)"),
    "dp_reduce": ("#C44E52", "dp: gradient reduction"),
    "dp": ("#C44E52", "dp (gradient reduction,\nZeRO weight gathers)"),   # older reports
    "optimizer": ("#8172B3", "optimizer"),
}


def _kinds() -> dict[str, tuple[str, str]]:
    """kind -> (colour, legend label), step kinds first."""
    from perfmodel.schedules import STEP_KINDS
    return {**{k.name: (k.colour, k.label) for k in STEP_KINDS.values()}, **_OTHER_KINDS}
MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "buffers")
MEMORY_COLORS = ("#4C72B0", "#55A868", "#8172B3", "#DD8452", "#937860")
FASTER_COLOR = "#2A9D8F"
SLOWER_COLOR = "#E76F51"
KNEE_COLOR = "#555555"
SENSITIVITY_LABEL_WIDTH = 44   # characters per line of a sensitivity row's description

Report = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _figure():
    """A new Figure on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _style(ax, title: str | None = None, xlabel: str | None = None,
           ylabel: str | None = None) -> None:
    if title:
        ax.set_title(title, fontsize=TITLE_SIZE)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def _num(x: Any) -> float | None:
    """A finite float, or None for missing / null / NaN values."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _nodes_axis(ax, nodes: list[float]) -> None:
    """Log-scale node-count axis with plain (comma-separated) tick labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = min(nodes), max(nodes)
    decades = math.log10(hi / lo) if lo > 0 else 0.0
    subs = (1.0,) if decades > 2.5 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if hi > lo:
        pad = (hi / lo) ** 0.04
        ax.set_xlim(lo / pad, hi * pad)
    else:
        ax.set_xlim(lo / 1.5, hi * 1.5)


def _value_axis(ax, values: list[float], formatter, headroom: float = 0.12) -> bool:
    """Linear y from 0, or log y (plain 1-2-5 labels) when values span more than 30x;
    ``headroom`` (fraction of the axis) is left free above the data for labels.

    Returns whether the axis is logarithmic."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(formatter or FuncFormatter(lambda v, _pos: f"{v:,.6g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        lo, hi = min(positive), max(positive)
        span = hi / lo
        ax.set_ylim(lo / span ** 0.04, hi * span ** (headroom / (1 - headroom)))
        return True
    ax.set_ylim(0, max(positive) / (1 - headroom) if positive else 1.0)
    if formatter is not None:
        ax.yaxis.set_major_formatter(formatter)
    return False


def _mark_knee(ax, knee: Any) -> None:
    k = _num(knee)
    if k is None or k <= 0:
        return
    ax.axvline(k, color=KNEE_COLOR, linestyle="--", linewidth=1.2, zorder=1)
    lo, hi = ax.get_xlim()
    frac = math.log(k / lo) / math.log(hi / lo) if k > 0 and hi > lo > 0 else 0.5
    right = frac > 0.7  # near the right edge: label on the line's left
    text = f"knee \n{k:,.0f} nodes " if right else f" knee\n {k:,.0f} nodes"
    ax.text(k, 0.98, text, transform=ax.get_xaxis_transform(), ha="right" if right else "left",
            va="top", fontsize=SMALL_SIZE, color=KNEE_COLOR, zorder=5,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.0})


def _scaling_points(report: Report) -> list[dict]:
    pts = [p for p in (report.get("scaling") or {}).get("points") or []
           if _num(p.get("nodes")) and _num(p.get("nodes")) > 0]
    if not pts:
        raise ValueError("report has no scaling points")
    return sorted(pts, key=lambda p: (float(p["nodes"]), _num(p.get("max_nodes")) or 0.0))


def _series(points: list[dict], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in points:
        y = _num(p.get(key))
        if y is not None:
            xs.append(float(p["nodes"]))
            ys.append(y * scale)
    return xs, ys


def _merge_legends(ax, *axes, loc: str = "best") -> None:
    handles, labels = [], []
    for a in (ax, *axes):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        ax.legend(handles, labels, loc=loc, fontsize=SMALL_SIZE, framealpha=0.9)


# --------------------------------------------------------------------------- images


def scaling_png(report: Report) -> bytes:
    """Tokens/s vs node count (log x) with the ideal line; MFU (%) on a twin axis; the knee."""
    from matplotlib.ticker import EngFormatter, PercentFormatter

    points = _scaling_points(report)
    knee = (report.get("scaling") or {}).get("knee_nodes")
    fig = _figure()
    ax = fig.add_subplot()
    xs, ys = _series(points, "tokens_per_s")
    ax.plot(xs, ys, "o-", color="#4C72B0", linewidth=2, markersize=4.5,
            label="predicted tokens/s", zorder=3)
    banded = [p for p in points if _num(p.get("tokens_per_s_low")) is not None
              and _num(p.get("tokens_per_s_high")) is not None]
    if banded:
        ax.fill_between([float(p["nodes"]) for p in banded],
                        [float(p["tokens_per_s_low"]) for p in banded],
                        [float(p["tokens_per_s_high"]) for p in banded],
                        color="#4C72B0", alpha=0.15, linewidth=0, zorder=1,
                        label="80% band")
    xi, yi = _series(points, "ideal_tokens_per_s")
    if xi:
        ax.plot(xi, yi, "--", color="#4C72B0", alpha=0.55, linewidth=1.4,
                label="ideal (linear scaling)", zorder=2)
    _nodes_axis(ax, [float(p["nodes"]) for p in points])
    band_ys = [float(p[k]) for p in banded for k in ("tokens_per_s_low", "tokens_per_s_high")]
    log_y = _value_axis(ax, ys + yi + band_ys, EngFormatter(sep=""), headroom=0.15)
    ax.grid(True, which="major", alpha=0.3)
    _style(ax, "Throughput scaling", "nodes (log scale)",
           "tokens/s (log scale)" if log_y else "tokens/s")

    ax2 = ax.twinx()
    xm, ym = _series(points, "mfu", 100.0)
    if xm:
        ax2.plot(xm, ym, "s:", color="#C44E52", linewidth=1.5, markersize=4, label="MFU (%)")
        ax2.set_ylim(0, max(max(ym) / 0.8, 1.0))
    top = ax2.get_ylim()[1]
    # enough decimals that neighbouring ticks differ (a 1% axis has 0.2% steps)
    ax2.yaxis.set_major_formatter(PercentFormatter(decimals=0 if top >= 10 else 1))
    _style(ax2, ylabel="MFU (% of peak at the training precision)")
    _tint_y(ax2, "#C44E52")
    _mark_knee(ax, knee)
    _merge_legends(ax, ax2, loc="best")
    return _png(fig)


def _tint_y(ax, color: str) -> None:
    """Colour a y axis (label and ticks) like the series it belongs to."""
    ax.yaxis.label.set_color(color)
    ax.tick_params(axis="y", colors=color)


def time_cost_png(report: Report) -> bytes:
    """Time to train (days) and node-hours (millions) vs node count on two y axes; the knee."""
    points = _scaling_points(report)
    knee = (report.get("scaling") or {}).get("knee_nodes")
    fig = _figure()
    ax = fig.add_subplot()
    xd, yd = _series(points, "time_to_train_s", 1.0 / DAY)
    ax.plot(xd, yd, "o-", color="#4C72B0", linewidth=2, markersize=4.5,
            label="time to train (days)")
    _nodes_axis(ax, [float(p["nodes"]) for p in points])
    log_days = _value_axis(ax, yd, None)
    ax.grid(True, which="major", alpha=0.3)
    _style(ax, "Time to train and cost", "nodes (log scale)",
           "time to train (days, log scale)" if log_days else "time to train (days)")
    _tint_y(ax, "#4C72B0")

    ax2 = ax.twinx()
    xh, yh = _series(points, "node_hours", 1e-6)
    if xh:
        ax2.plot(xh, yh, "s--", color="#DD8452", linewidth=1.8, markersize=4,
                 label="node-hours (millions)")
        ax2.set_ylim(0, max(yh) * 1.2 if max(yh) > 0 else 1.0)
    _style(ax2, ylabel="node-hours (millions)")
    _tint_y(ax2, "#DD8452")
    _mark_knee(ax, knee)
    _merge_legends(ax, ax2, loc="best")
    return _png(fig)


def _rung_label(row: dict, n: int) -> str:
    """x label "N nodes\nlayout" wrapped to the width of one bar slot (n slots), <= 6 lines."""
    nodes = _num(row.get("nodes"))
    count = f"{nodes:,.0f}" if nodes is not None else "?"
    width = max(6, int(85 / max(n, 1)))  # characters per line that fit one slot
    if n > 16:
        return count
    head = f"{count} nodes" if len(count) + 6 <= width else count
    lines = textwrap.wrap(str(row.get("layout_label") or ""), width)
    if len(lines) > 5:
        lines = lines[:4] + [textwrap.shorten(" ".join(lines[4:]), width, placeholder="...")]
    return "\n".join([head, *lines])


def memory_png(report: Report) -> bytes:
    """Stacked memory per node (GB) per rung, with the usable memory per node as a line."""
    rows = [r for r in report.get("memory") or [] if isinstance(r, dict)]
    if not rows:
        raise ValueError("report has no memory rows")
    fig = _figure()
    ax = fig.add_subplot()
    n = len(rows)
    xs = list(range(n))
    width = 0.62
    bottoms = [0.0] * n
    for part, color in zip(MEMORY_PARTS, MEMORY_COLORS):
        heights = [(_num(r.get(part)) or 0.0) / 1e9 for r in rows]
        ax.bar(xs, heights, width, bottom=bottoms, color=color, label=part,
               edgecolor="white", linewidth=0.5, zorder=3)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    usable = [_num(r.get("usable")) for r in rows]
    known = [u for u in usable if u is not None]
    if known and all(u == known[0] for u in known):
        ax.axhline(known[0] / 1e9, color="black", linestyle="--", linewidth=1.2, zorder=4,
                   label=f"usable ({known[0] / 1e9:.3g} GB)")
    elif known:
        first = True
        for i, u in enumerate(usable):
            if u is not None:
                ax.hlines(u / 1e9, i - 0.45, i + 0.45, color="black", linestyle="--",
                          linewidth=1.2, zorder=4, label="usable" if first else None)
                first = False
    top = max(bottoms + [u / 1e9 for u in known] + [0.1])
    ax.set_ylim(0, top * 1.12)
    size = SMALL_SIZE if n <= 8 else 6.5
    ax.set_xticks(xs, [_rung_label(r, n) for r in rows], fontsize=size)
    ax.set_xlim(-0.6, n - 0.4)
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    _style(ax, "Memory per node (peak pipeline stage)", None, "memory per node (GB)")
    ax.tick_params(axis="x", labelsize=size)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL_SIZE, frameon=False)
    return _png(fig)


def timeline_png(report: Report) -> bytes:
    """Gantt chart of one iteration: a row per pipeline stage (stage 0 on top), colored by kind."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    tl = report.get("timeline") or {}
    spans = tl.get("spans") or []
    if not spans:
        raise ValueError("report has no timeline spans")
    stages = int(_num(tl.get("stages")) or 0)
    stages = max(stages, 1 + max(int(s.get("stage", 0)) for s in spans))
    # group spans by (stage, kind); draw one broken_barh per group (fast for many spans)
    groups: dict[tuple[int, str], list[tuple[float, float]]] = {}
    t_end = 0.0
    for s in spans:
        start, end = _num(s.get("start")), _num(s.get("end"))
        if start is None or end is None:
            continue
        groups.setdefault((int(s.get("stage", 0)), str(s.get("kind", "?"))), []).append(
            (start, max(end - start, 0.0)))
        t_end = max(t_end, end)
    iteration = _num(tl.get("iteration_s"))
    # compute fills the row; communication is a thinner band over it (it often overlaps)
    band = {"send": (0.05, 0.30), "dp": (-0.35, 0.30), "dp_reduce": (-0.35, 0.30),
            "dp_gather": (-0.35, 0.30)}
    kinds = _kinds()
    kinds_seen = {k for _, k in groups}
    unknown = sorted(kinds_seen - set(kinds))
    if unknown:
        raise ValueError(f"timeline: span kind {unknown[0]!r} has no colour; known: "
                         f"{', '.join(kinds)}")
    order = [k for k in kinds if k in kinds_seen]
    fig = _figure()
    ax = fig.add_subplot()
    draw_order = sorted(groups, key=lambda sk: (order.index(sk[1]), sk[0]))
    for stage, kind in draw_order:
        ranges = groups[(stage, kind)]
        off, height = band.get(kind, (-0.4, 0.8))
        ax.broken_barh(ranges, (stage + off, height), facecolors=kinds[kind][0],
                       linewidth=0, zorder=3 if kind in band else 2)
    ax.set_ylim(stages - 0.5, -0.5)  # stage 0 on top
    if stages <= 16:
        ax.set_yticks(range(stages), [f"stage {i}" for i in range(stages)])
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ax.set_xlim(0, max(t_end, iteration or 0.0) or 1.0)
    ax.grid(True, axis="x", alpha=0.3, zorder=0)
    it_txt = f"{num(iteration)} s" if iteration is not None else f"{num(t_end)} s (spans)"
    _style(ax, f"Pipeline timeline of one iteration ({it_txt})", "time (s)",
           "pipeline stage" if stages <= 16 else "pipeline stage (0 on top)")
    handles = [Patch(facecolor=kinds[k][0], label=kinds[k][1]) for k in order]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=SMALL_SIZE, frameon=False)
    return _png(fig)


def network_png(report: Report) -> bytes:
    """Heat map of flows per node on the busiest dimension's ring step, over two torus axes."""
    from matplotlib.ticker import MaxNLocator

    net = report.get("network") or {}
    heat = net.get("heatmap") or []
    if not heat or not any(heat):
        raise ValueError("report has no network heat map")
    rows = [[_num(v) if _num(v) is not None else float("nan") for v in row] for row in heat]
    ncols = max(len(r) for r in rows)
    rows = [r + [float("nan")] * (ncols - len(r)) for r in rows]
    axes = list(net.get("axes") or ["axis 0", "axis 1"]) + ["axis 0", "axis 1"]
    dim = net.get("dimension", "?")
    nrows = len(rows)
    fig = _figure()
    ax = fig.add_subplot()
    finite = [v for r in rows for v in r if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    # the scale starts at zero: a spread of a few percent looks like one
    im = ax.imshow(rows, cmap="viridis", origin="upper", interpolation="nearest", aspect="auto",
                   vmin=0.0, vmax=max(hi, 1e-12))
    cbar = fig.colorbar(im, ax=ax, shrink=0.9)
    cbar.set_label("flows per node (ring step)", fontsize=LABEL_SIZE)
    cbar.ax.tick_params(labelsize=TICK_SIZE)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    uniform = bool(finite) and lo == hi
    if nrows <= 16 and ncols <= 16 and not uniform:  # small grid: values in the cells
        mid = hi / 2
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                if math.isfinite(v):
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=SMALL_SIZE,
                            color="black" if v > mid else "white")
    shape = net.get("shape")
    shape_txt = f" (torus {'x'.join(str(s) for s in shape)})" if shape else ""
    title = f"Busiest ring step: dimension {dim}{shape_txt}"
    if uniform:
        title += f"\nuniform: {lo:.4g} flows on every node"
    elif finite:
        title += (f"\n{lo:.4g} to {hi:.4g} flows per node ({(hi - lo) / hi:.0%} below the "
                  f"busiest); the scale starts at 0")
    _style(ax, title, f"{axes[1]} coordinate", f"{axes[0]} coordinate")
    return _png(fig)


def _two_lines(text: str) -> list[str]:
    """``text`` in at most two lines of SENSITIVITY_LABEL_WIDTH (the rest elided)."""
    lines = textwrap.wrap(text, SENSITIVITY_LABEL_WIDTH)
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), SENSITIVITY_LABEL_WIDTH,
                                            placeholder="...")]
    return lines


def sensitivity_png(report: Report) -> bytes:
    """Tornado chart: change in time to train (%) per perturbed parameter, sorted by |delta|."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    rows = [r for r in report.get("sensitivity") or [] if _num(r.get("delta")) is not None]
    if not rows:
        raise ValueError("report has no sensitivity rows")
    rows = sorted(rows, key=lambda r: (-abs(float(r["delta"])), str(r.get("name", ""))))
    n = len(rows)
    ys = list(range(n))  # largest |delta| at the top via the inverted y axis
    deltas = [float(r["delta"]) * 100 for r in rows]
    colors = [SLOWER_COLOR if d > 0 else FASTER_COLOR for d in deltas]
    fig = _figure()
    ax = fig.add_subplot()
    ax.barh(ys, deltas, height=0.6, color=colors, zorder=3)
    lows = [_num(r.get("delta_low")) for r in rows]
    highs = [_num(r.get("delta_high")) for r in rows]
    for y, lo_, hi_ in zip(ys, lows, highs):     # each change's 80% band, shaded
        if lo_ is not None and hi_ is not None:  # (clipped by the axis, set by the bars)
            ax.fill_betweenx([y - 0.12, y + 0.12], lo_ * 100, hi_ * 100, color="#555555",
                             alpha=0.25, linewidth=0, zorder=2)
    ax.axvline(0, color="black", linewidth=0.8, zorder=4)
    span = max(abs(d) for d in deltas) or 1.0
    for y, d in zip(ys, deltas):
        ax.text(d + (0.02 * span if d >= 0 else -0.02 * span), y, f"{d:+.1f}%",
                ha="left" if d >= 0 else "right", va="center", fontsize=SMALL_SIZE, zorder=5)
    lo = min(min(deltas), 0.0)
    hi = max(max(deltas), 0.0)
    ax.set_xlim(lo - 0.45 * span if lo < 0 else -0.05 * span,    # room for the value labels
                hi + 0.45 * span if hi > 0 else 0.05 * span)
    ax.set_ylim(n - 0.5, -0.5)
    # the change wrapped to a few short lines, so the bars keep most of the width
    labels = ["\n".join([str(r.get("name", "?")), *_two_lines(str(r.get("change", "")))])
              for r in rows]
    ylab_size = TICK_SIZE if n <= 8 else SMALL_SIZE if n <= 14 else 6.5
    ax.set_yticks(ys, labels, fontsize=ylab_size)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0 if span >= 5 else 1))
    ax.grid(True, axis="x", alpha=0.3, zorder=0)
    base = _num(rows[0].get("base_time_to_train_s")) or \
        _num((report.get("summary") or {}).get("time_to_train_s"))
    base_txt = f" (base {base / DAY:,.1f} days)" if base else ""
    by = rows[0].get("objective")
    what = "time to train" if by in (None, "model") else f"{by} time to train"
    # the title over the whole figure: over the axes alone, long labels push it off the edge
    fig.suptitle(f"Sensitivity of the {what}{base_txt}", fontsize=TITLE_SIZE)
    _style(ax, None, "change in time to train vs base (%)", None)
    ax.tick_params(axis="y", labelsize=ylab_size)
    ax.legend(handles=[Patch(color=FASTER_COLOR, label="faster"),
                       Patch(color=SLOWER_COLOR, label="slower")]
              + ([Patch(color="#555555", alpha=0.25,
                        label="80% band of its time\n(mostly shared with the base's)")]
                 if any(v is not None for v in lows) else []),
              # below the axes: inside, it covers a bar or a band whichever corner it takes
              loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=SMALL_SIZE,
              frameon=False)
    return _png(fig)


# --------------------------------------------------------------------------- all images


def _has_scaling(r: Report) -> bool:
    return any((_num(p.get("nodes")) or 0) > 0
               for p in (r.get("scaling") or {}).get("points") or [])


def _has_timeline(r: Report) -> bool:
    return any(_num(s.get("start")) is not None and _num(s.get("end")) is not None
               for s in (r.get("timeline") or {}).get("spans") or [])


def _has_network(r: Report) -> bool:
    heat = (r.get("network") or {}).get("heatmap") or []
    return bool(heat) and any(heat)


IMAGES: dict[str, tuple[Callable[[Report], bool], Callable[[Report], bytes]]] = {
    "scaling.png": (_has_scaling, scaling_png),
    "time_cost.png": (_has_scaling, time_cost_png),
    "memory.png": (lambda r: any(isinstance(x, dict) for x in r.get("memory") or []), memory_png),
    "timeline.png": (_has_timeline, timeline_png),
    "network.png": (_has_network, network_png),
    "sensitivity.png": (lambda r: any(_num(x.get("delta")) is not None
                                      for x in r.get("sensitivity") or []), sensitivity_png),
}


def all_images(report: Report) -> dict[str, bytes]:
    """Every image whose section is present and non-empty: {"scaling.png": bytes, ...}."""
    return {name: render(report) for name, (has, render) in IMAGES.items() if has(report)}
