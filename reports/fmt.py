"""A capacity report for people: number formats, and the outline both writers render.

``sections(report, image_names)`` turns report.json (reports/schema.md) into ten sections of
plain-text blocks (paragraphs, bullet lists, headline figures, tables, images) with every
number already formatted here; ``reports.html`` and ``reports.markdown`` only lay the blocks
out (and escape them), so the two pages always say the same thing. A section whose data is
missing keeps its place and says so in one sentence (``not_available``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY = 86400.0
HOUR = 3600.0
NA = "n/a"
REFERENCE_LABEL = "Fugaku-LLM's layout"

# ---------------------------------------------------------------------------------------------
# Numbers. Every helper takes None (a field the report left out) and answers NA.


def num(x: float | None) -> str:
    """3 significant digits with thousands separators and no exponent above 0.001:
    1234567 -> '1,230,000', 41.23 -> '41.2', 0.04567 -> '0.0457'."""
    if x is None:
        return NA
    x = float(x)
    if math.isnan(x):
        return NA
    if math.isinf(x):
        return "infinite" if x > 0 else "-infinite"
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.2e}"
    exp = math.floor(math.log10(abs(x)))
    digits = 2 - exp                                       # decimals for 3 significant digits
    r = round(x, digits)
    if r and math.floor(math.log10(abs(r))) > exp:         # 9.996 rounds up to 10.0: one fewer
        digits -= 1
        r = round(x, digits)
    return f"{r:,.{max(digits, 0)}f}"


def count(n: int | None) -> str:
    """An exact whole number with thousands separators: 13824 -> '13,824'."""
    if n is None:
        return NA
    if isinstance(n, float) and not n.is_integer():
        return num(n)
    return f"{int(n):,}"


def pct(fraction: float | None) -> str:
    """A fraction as a percentage, 3 significant digits: 0.4123 -> '41.2%'."""
    return NA if fraction is None else num(100 * fraction) + "%"


def signed_pct(fraction: float | None) -> str:
    """A change as a signed percentage: 0.052 -> '+5.20%', -0.1 -> '-10.0%'."""
    if fraction is None:
        return NA
    return ("+" if fraction > 0 else "") + pct(fraction)


def days(seconds: float | None) -> str:
    """Seconds as a number of days (the unit goes in the label): 3.11e6 -> '36.0'."""
    return NA if seconds is None else num(seconds / DAY)


def gb(nbytes: float | None) -> str:
    """Bytes as SI gigabytes (the unit goes in the label): 2.63e10 -> '26.3'."""
    return NA if nbytes is None else num(nbytes / 1e9)


def duration(seconds: float | None) -> str:
    """A time span with the unit that reads best: '131 us', '45.0 s', '12.5 min', '6.34 h',
    '36.0 days'."""
    if seconds is None:
        return NA
    if seconds < 1e-3:
        return f"{num(seconds * 1e6)} us"
    if seconds < 1:
        return f"{num(seconds * 1e3)} ms"
    if seconds < 120:
        return f"{num(seconds)} s"
    if seconds < 2 * HOUR:
        return f"{num(seconds / 60)} min"
    if seconds < 2 * DAY:
        return f"{num(seconds / HOUR)} h"
    return f"{num(seconds / DAY)} days"


def big(x: float | None) -> str:
    """A large count with a word-sized suffix: 1.3168e10 -> '13.2 B', 3.8e11 -> '380 B'."""
    if x is None:
        return NA
    for div, suffix in ((1e12, " T"), (1e9, " B"), (1e6, " M")):
        if abs(x) >= div:
            return num(x / div) + suffix
    return num(x)


def value(v: object) -> str:
    """Any JSON value for a table cell, as given rather than rounded (provenance values are
    inputs: numbers, strings, lists or tables): 1024.0 -> '1,024', 0.934 -> '0.934'."""
    if v is None:
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return count(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(value(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {value(x)}" for k, x in v.items())
    return str(v)


# ---------------------------------------------------------------------------------------------
# The outline: plain strings only; the writers escape and lay them out.


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Stats:
    """Headline figures: (label, formatted value) pairs."""
    items: tuple[tuple[str, str], ...]


NUM, LABEL, TEXT = "num", "label", "text"   # column kinds: right-aligned, one line, may wrap


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    kinds: tuple[str, ...]             # NUM, LABEL or TEXT per column
    rows: tuple[tuple[str, ...], ...]
    marked: frozenset[int] = frozenset()   # rows to highlight (the reference layout, the knee)
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    name: str                          # the image file name, e.g. "scaling.png"
    caption: str


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple


SECTIONS = (  # id, heading, what a report without that data lacks
    ("summary", "Summary", "summary"),
    ("scaling", "Scaling", "scaling data"),
    ("memory", "Memory", "memory breakdown"),
    ("layouts", "Layouts", "layout comparison"),
    ("timeline", "Timeline", "iteration timeline"),
    ("network", "Network", "network analysis"),
    ("sensitivity", "Sensitivity", "sensitivity analysis"),
    ("reliability", "Reliability", "reliability estimate"),
    ("inverse", "The inverse question", "answer to the inverse question"),
    ("assumptions", "Assumptions and provenance", "assumptions or provenance"),
)
_LACKS = {sid: lacks for sid, _, lacks in SECTIONS}

FIGURES = {  # image file -> caption
    "scaling.png": "Tokens per second against nodes, with ideal linear scaling",
    "time_cost.png": "Time to train against node-hours for each job size",
    "memory.png": "Memory per node of the peak pipeline stage, by kind, for each job size",
    "timeline.png": "One training iteration, stage by stage",
    "network.png": "Flows per node on the busiest dimension's ring step",
    "sensitivity.png": "Change in time to train when one assumption changes",
}


def not_available(section_id: str) -> str:
    """The one sentence a section says when the report has no data for it."""
    return f"This report has no {_LACKS[section_id]}."


def _table(columns: list[tuple[str, str]], rows: list[list[str]], marked=(), caption="") -> Table:
    """``columns`` are (header, kind) pairs."""
    return Table(tuple(h for h, _ in columns), tuple(n for _, n in columns),
                 tuple(tuple(r) for r in rows), frozenset(marked), caption)


def _figure(name: str, image_names: set[str]) -> Figure | Para:
    if name in image_names:
        return Figure(name, FIGURES[name])
    return Para(f"The figure {name} ({FIGURES[name].lower()}) is not available.")


def _summary(r: dict, images: set[str]) -> tuple:
    s = r["summary"]
    m, sysd = r.get("model") or {}, r.get("system") or {}
    frac = s.get("memory_fraction_of_usable")
    blocks = [
        Para(f"Training {m.get('name') or 'the model'} ({big(m.get('params'))} parameters) on "
             f"{big(r.get('tokens'))} tokens, global batch {count(r.get('global_batch'))} "
             f"sequences, on {sysd.get('name') or 'the system'}."),
        Stats((
            ("Recommended nodes", count(s.get("nodes"))),
            ("Layout", value(s.get("layout_label"))),
            ("Tokens/s", num(s.get("tokens_per_s"))),
            ("MFU", pct(s.get("mfu"))),
            ("Time to train (days)", days(s.get("time_to_train_s"))),
            ("Node-hours", num(s.get("node_hours"))),
            ("Energy (MWh)", num(s.get("energy_mwh"))),
            ("Memory headroom", NA if frac is None else pct(1 - frac)),
        )),
        Para(f"One iteration takes {num(s.get('iteration_s'))} s by the analytic model and "
             f"{num(s.get('des_iteration_s'))} s by the event simulation; the peak pipeline "
             f"stage uses {pct(frac)} of the node's usable memory."),
    ]
    if s.get("confidence"):
        blocks += [Para("How far to trust these figures:"), Bullets(tuple(s["confidence"]))]
    return tuple(blocks)


def _scaling(r: dict, images: set[str]) -> tuple:
    sc = r["scaling"]
    knee = sc.get("knee_nodes")
    rows, marked = [], []
    for i, p in enumerate(sc["points"]):
        tps, ideal = p.get("tokens_per_s"), p.get("ideal_tokens_per_s")
        eff = tps / ideal if tps is not None and ideal else None
        if knee is not None and p.get("nodes") == knee and not marked:
            marked.append(i)
        rows.append([count(p.get("max_nodes")), count(p.get("nodes")), value(p.get("layout_label")),
                     num(p.get("iteration_s")), num(tps), num(ideal), pct(eff),
                     pct(p.get("mfu")), days(p.get("time_to_train_s")), num(p.get("node_hours"))])
    rule = (sc.get("knee_rule") or NA).rstrip(".") + "."
    knee_text = (f"The knee of the curve is at {count(knee)} nodes (highlighted). Rule: {rule}"
                 if knee is not None else f"No rung passes the knee rule: {rule}")
    return (_figure("scaling.png", images), _figure("time_cost.png", images), Para(knee_text),
            _table([("up to nodes", NUM), ("nodes", NUM), ("layout", LABEL),
                    ("iteration (s)", NUM), ("tokens/s", NUM), ("ideal tokens/s", NUM),
                    ("scaling efficiency", NUM), ("MFU", NUM), ("days", NUM),
                    ("node-hours", NUM)], rows, marked,
                   "Best layout per job size; efficiency is tokens/s over ideal linear scaling"))


MEMORY_KINDS = ("weights", "gradients", "optimizer", "activations", "buffers")


def _memory(r: dict, images: set[str]) -> tuple:
    rows = []
    for m in r["memory"]:
        total = sum(m.get(k) or 0 for k in MEMORY_KINDS)
        usable = m.get("usable")
        rows.append([count(m.get("nodes")), value(m.get("layout_label")),
                     *[gb(m.get(k)) for k in MEMORY_KINDS], gb(total), gb(usable),
                     pct(total / usable) if usable else NA])
    return (_figure("memory.png", images),
            _table([("nodes", NUM), ("layout", LABEL), *[(k, NUM) for k in MEMORY_KINDS],
                    ("total", NUM), ("usable", NUM), ("of usable", NUM)], rows,
                   caption="GB per node, peak pipeline stage"))


def _layouts(r: dict, images: set[str]) -> tuple:
    rows, marked = [], []
    for i, lay in enumerate(r["layouts"]):
        note = lay.get("note") or ""
        if lay.get("reference"):
            marked.append(i)
            if REFERENCE_LABEL not in note:
                note = REFERENCE_LABEL + (f"; {note}" if note else "")
        rows.append([count(lay.get("rank")), value(lay.get("label")), count(lay.get("nodes")),
                     num(lay.get("iteration_s")), num(lay.get("des_iteration_s")),
                     num(lay.get("tokens_per_s")), pct(lay.get("mfu")),
                     gb(lay.get("memory_bytes_per_node")), value(lay.get("fits")),
                     days(lay.get("time_to_train_s")), note])
    intro = (f"The highlighted row is {REFERENCE_LABEL}."
             if marked else f"{REFERENCE_LABEL} is not among these layouts.")
    return (Para(intro),
            _table([("#", NUM), ("layout", LABEL), ("nodes", NUM), ("iteration (s)", NUM),
                    ("DES iteration (s)", NUM), ("tokens/s", NUM), ("MFU", NUM),
                    ("memory (GB/node)", NUM), ("fits", LABEL), ("days", NUM),
                    ("note", TEXT)], rows, marked, "Fastest layouts, best first"))


SPAN_KINDS = ("F", "B", "send", "dp", "optimizer")


def _timeline(r: dict, images: set[str]) -> tuple:
    t = r["timeline"]
    busy: dict[int, dict[str, float]] = {}
    end: dict[int, float] = {}
    for sp in t.get("spans") or ():
        st = int(sp["stage"])
        busy.setdefault(st, dict.fromkeys(SPAN_KINDS, 0.0))
        busy[st][sp["kind"]] = busy[st].get(sp["kind"], 0.0) + sp["end"] - sp["start"]
        end[st] = max(end.get(st, 0.0), sp["end"])
    blocks = [_figure("timeline.png", images),
              Para(f"{count(t.get('stages'))} pipeline stage{'' if t.get('stages') == 1 else 's'}; "
                   f"one iteration takes "
                   f"{num(t.get('iteration_s'))} s. F and B are forward and backward passes of "
                   "micro-batches, send the activations between stages, dp the data-parallel "
                   "gradient reduction.")]
    if busy:
        rows = [[count(st), *[num(busy[st][k]) for k in SPAN_KINDS], num(end[st])]
                for st in sorted(busy)]
        blocks.append(_table([("stage", NUM), *[(f"{k} (s)", NUM) for k in SPAN_KINDS],
                              ("last end (s)", NUM)], rows,
                             caption="Busy time per stage by kind, seconds"))
    return tuple(blocks)


def _network(r: dict, images: set[str]) -> tuple:
    n = r["network"]
    shape = " x ".join(str(x) for x in n.get("shape") or ()) or NA
    axes = " and ".join(n.get("axes") or ()) or NA
    heat = [x for row in n.get("heatmap") or () for x in row or () if x is not None]
    blocks = [_figure("network.png", images),
              Para(f"Job shape {shape}; the map shows the {n.get('dimension') or NA} dimension's "
                   f"ring step over axes {axes}"
                   + _spread(heat))]
    hot = n.get("hottest") or ()
    if hot:
        rows = [[" ".join(f"{a}{c}" for a, c in (h.get("from") or {}).items()),
                 value(h.get("axis")), value(h.get("direction")), count(h.get("flows"))]
                for h in hot]
        blocks.append(_table([("from node", LABEL), ("axis", LABEL), ("direction", LABEL),
                              ("flows", NUM)], rows, caption="Hottest links"))
    if n.get("placement"):
        blocks += [Para("Placement:"), Bullets(tuple(n["placement"]))]
    return tuple(blocks)


def _spread(flows: list) -> str:
    """The end of the network sentence: the range of flows per node on the map."""
    if not flows:
        return "."
    lo, hi = min(flows), max(flows)
    if lo == hi:
        return f", {value(lo)} flows on every node."
    return f", from {value(lo)} to {value(hi)} flows per node."


def _sensitivity(r: dict, images: set[str]) -> tuple:
    rows = [[value(x.get("name")), value(x.get("change")), days(x.get("time_to_train_s")),
             signed_pct(x.get("delta")), value(x.get("layout_label"))] for x in r["sensitivity"]]
    return (_figure("sensitivity.png", images),
            _table([("parameter", LABEL), ("change", TEXT), ("days", NUM),
                    ("vs base", NUM), ("best layout", LABEL)], rows,
                   caption="Time to train when one input changes (+ is slower)"))


def _reliability(r: dict, images: set[str]) -> tuple:
    x = r["reliability"]
    mtbf_source = x.get("mtbf_source") or "no source given"
    ckpt_source = x.get("checkpoint_source") or "no source given"
    words = (f"Each node fails on average once every {num(x.get('node_mtbf_h'))} hours "
             f"({mtbf_source}), so a job on {count(x.get('nodes'))} nodes is interrupted on "
             f"average every {duration(x.get('job_mtbf_s'))}. ")
    if x.get("checkpoint_bandwidth") is None:
        words += (f"The checkpoint write bandwidth is not known ({ckpt_source}), so the time to "
                  f"write a {gb(x.get('checkpoint_bytes'))} GB checkpoint, the checkpoint "
                  f"interval and the goodput are not computed; over the "
                  f"{days(x.get('time_to_train_s'))} days of failure-free training expect "
                  f"{num(x.get('expected_interruptions'))} interruptions.")
    else:
        words += (f"Writing a {gb(x.get('checkpoint_bytes'))} GB checkpoint at "
                  f"{gb(x.get('checkpoint_bandwidth'))} GB/s ({ckpt_source}) takes "
                  f"{duration(x.get('checkpoint_s'))}, and a restart "
                  f"{duration(x.get('restart_s'))}. The Young/Daly optimal interval between "
                  f"checkpoints is {duration(x.get('interval_s'))}. Over the run expect "
                  f"{num(x.get('expected_interruptions'))} interruptions; goodput is "
                  f"{pct(x.get('goodput'))}, so the {days(x.get('time_to_train_s'))} days of "
                  f"failure-free training become {days(x.get('time_with_failures_s'))} days "
                  f"({duration(_lost(x))} more).")
    rows = [
        ["Node MTBF (hours)", num(x.get("node_mtbf_h")), mtbf_source],
        ["Nodes", count(x.get("nodes")), ""],
        ["Job MTBF (hours)", num(_div(x.get("job_mtbf_s"), HOUR)), "node MTBF / nodes"],
        ["Checkpoint size (GB)", gb(x.get("checkpoint_bytes")), ""],
        ["Checkpoint bandwidth (GB/s)", gb(x.get("checkpoint_bandwidth")),
         ckpt_source],
        ["Checkpoint time (s)", num(x.get("checkpoint_s")), "size / bandwidth"],
        ["Restart time (s)", num(x.get("restart_s")), ""],
        ["Optimal interval (minutes)", num(_div(x.get("interval_s"), 60)), "Young/Daly"],
        ["Expected interruptions", num(x.get("expected_interruptions")), ""],
        ["Goodput", pct(x.get("goodput")), ""],
        ["Time to train without failures (days)", days(x.get("time_to_train_s")), ""],
        ["Time to train with failures (days)", days(x.get("time_with_failures_s")), ""],
        ["Time lost to failures (hours)", num(_div(_lost(x), HOUR)),
         "checkpoints, lost work, restarts"],
    ]
    return (Para(words), _table([("quantity", LABEL), ("value", NUM), ("source", TEXT)], rows))


def _div(a: float | None, b: float) -> float | None:
    return None if a is None else a / b


def _lost(x: dict) -> float | None:
    """Wall time the failures add (3 significant digits of days can hide it)."""
    t, tf = x.get("time_to_train_s"), x.get("time_with_failures_s")
    return None if t is None or tf is None else tf - t


def _inverse(r: dict, images: set[str]) -> tuple:
    v = r["inverse"]
    budget = f"{num(v.get('days'))} days on {count(v.get('nodes'))} nodes"
    if v.get("params") is None:
        return (Para(f"No model of this family trains within {budget}."),)
    m = v.get("model") or {}
    shape = ", ".join(f"{count(m[k])} {label}" for k, label in
                      (("layers", "layers"), ("hidden", "hidden"), ("heads", "heads"),
                       ("ffn", "FFN"), ("seq", "sequence"), ("vocab", "vocabulary"))
                      if m.get(k) is not None) or NA
    return (Para(f"The largest model that trains within {budget} has "
                 f"{big(v['params'])} parameters ({count(v['params'])}): {shape}. Its best "
                 f"layout is {value(v.get('layout_label'))}, which trains in "
                 f"{days(v.get('time_to_train_s'))} days."),)


def _assumptions(r: dict, images: set[str]) -> tuple:
    blocks = []
    if r.get("assumptions"):
        blocks.append(Bullets(tuple(r["assumptions"])))
    if r.get("provenance"):
        rows = [[value(p.get("parameter")), value(p.get("value")), value(p.get("source"))]
                for p in r["provenance"]]
        blocks.append(_table([("parameter", LABEL), ("value", TEXT), ("source", TEXT)], rows,
                             caption="Where every input comes from"))
    return tuple(blocks)


_BUILDERS = {"summary": _summary, "scaling": _scaling, "memory": _memory, "layouts": _layouts,
             "timeline": _timeline, "network": _network, "sensitivity": _sensitivity,
             "reliability": _reliability, "inverse": _inverse, "assumptions": _assumptions}


def _has_data(report: dict, section_id: str) -> bool:
    """Whether the section has anything to show (absent, null and empty all mean no)."""
    if section_id == "assumptions":
        return bool(report.get("assumptions") or report.get("provenance"))
    data = report.get(section_id)
    if section_id == "scaling":
        return bool((data or {}).get("points"))
    if section_id == "timeline":
        return bool((data or {}).get("spans"))
    if section_id == "network":
        return any((data or {}).get(k) for k in ("heatmap", "hottest", "placement"))
    return bool(data)


def sections(report: dict, image_names) -> list[Section]:
    """The ten sections of ``report`` in order; ``image_names`` are the image files at hand."""
    images = set(image_names)
    out = []
    for sid, title, _ in SECTIONS:
        blocks = (_BUILDERS[sid](report, images) if _has_data(report, sid)
                  else (Para(not_available(sid)),))
        out.append(Section(sid, title, blocks))
    return out
