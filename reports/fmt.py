"""A capacity report for people: number formats, and the outline both writers render.

``sections(report, image_names)`` turns report.json (reports/schema.md) into ten sections of
plain-text blocks (paragraphs, bullet lists, headline figures, tables, images) with every
number already formatted here; ``reports.html`` and ``reports.markdown`` only lay the blocks
out (and escape them), so the two pages always say the same thing. A section whose data is
missing keeps its place and says so in one sentence (``not_available``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .numbers import NA, big, count, days, duration, gb, near_one_pct, num, pct, signed_pct, value

REFERENCE_LABEL = "Fugaku-LLM's layout"

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


def _verdict(verdict: str | None, fraction: float | None) -> str:
    """A memory verdict with its share of usable memory: 'tight (97.6%)'."""
    if verdict is None:
        return NA if fraction is None else pct(fraction)
    return verdict if fraction is None else f"{verdict} ({pct(fraction)})"


def _with_share(text: str, fraction: float | None) -> str:
    """'24.4 (97.6%)': a figure with its share of usable memory, when known."""
    return text if fraction is None else f"{text} ({pct(fraction)})"


def _memory_sentence(s: dict) -> str:
    """What the memory rule says of the recommended layout, and (tight) the fastest layout
    with headroom, as ``plan`` says it."""
    frac, verdict = s.get("memory_fraction_of_usable"), s.get("memory_verdict")
    text = f"the peak pipeline stage uses {pct(frac)} of the node's usable memory"
    if verdict is None:
        return text + "."
    text += f": {verdict}."
    rule = s.get("memory_rule")
    if verdict == "tight":
        alt = s.get("headroom_alternative")
        if alt:
            text += (f" With headroom, the fastest layout listed is #{count(alt.get('rank'))}, "
                     f"{value(alt.get('label'))} on {count(alt.get('nodes'))} nodes: "
                     f"{num(alt.get('tokens_per_s'))} tokens/s, "
                     f"{days(alt.get('time_to_train_s'))} days, "
                     f"{pct(alt.get('memory_fraction_of_usable'))} of usable memory.")
        else:
            text += " None of the layouts listed leaves that headroom."
    return text + (f" Memory rule: {rule.rstrip('.')}." if rule else "")


def _summary(r: dict, images: set[str]) -> tuple:
    from perfmodel.layout import pins_text
    s = r["summary"]
    m, sysd = r.get("model") or {}, r.get("system") or {}
    frac = s.get("memory_fraction_of_usable")
    pins = r.get("pins") or {}
    pinned = ("" if not pins else
              f" The layout studied is the best with {pins_text(pins)}"
              + _ranked(r.get("comparison")) + ".")
    blocks = [
        Para(f"Training {m.get('name') or 'the model'} ({big(m.get('params'))} parameters) on "
             f"{big(r.get('tokens'))} tokens, global batch {count(r.get('global_batch'))} "
             f"sequences, on {sysd.get('name') or 'the system'}." + pinned),
        Stats((
            ("Nodes" if pins else "Recommended nodes", count(s.get("nodes"))),
            ("Layout", value(s.get("layout_label"))),
            ("Tokens/s", num(s.get("tokens_per_s"))),
            ("MFU", pct(s.get("mfu"))),
            ("Time to train (days)", days(s.get("time_to_train_s"))),
            ("Node-hours", num(s.get("node_hours"))),
            ("Energy (MWh)", num(s.get("energy_mwh"))),
            ("Memory (of usable)", _verdict(s.get("memory_verdict"), frac)),
        )),
        Para(f"One iteration takes {num(s.get('iteration_s'))} s by the analytic model and "
             f"{num(s.get('des_iteration_s'))} s by the event simulation; "
             + _memory_sentence(s)),
    ]
    if s.get("sureness"):
        blocks.insert(2, Bullets(tuple(s["sureness"])))
    if s.get("confidence"):
        blocks += [Para("How far to trust these figures:"), Bullets(tuple(s["confidence"]))]
    return tuple(blocks)


def _ranked(c: dict | None) -> str:
    """How a pinned layout ranks among all at its node count (plan's comparison)."""
    if not c:
        return ""
    best = c.get("best_unpinned") or {}
    return (f": by predicted iteration time it ranks {count(c.get('rank'))} of "
            f"{count(c.get('of'))} fitting layouts on "
            f"{count((c.get('pinned') or {}).get('nodes'))} nodes, where the best unpinned, "
            f"{value((c.get('labels') or {}).get('best_unpinned'))}, takes "
            f"{num(best.get('iteration_s'))} s per iteration")


def _threshold(fraction: float | None) -> str:
    """A rule's threshold as written in the rule: 0.5 -> '50%'."""
    return NA if fraction is None else f"{100 * fraction:g}%"


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
                     pct(p.get("marginal_efficiency")) if i else "-",
                     pct(p.get("mfu")), days(p.get("time_to_train_s")), num(p.get("node_hours"))])
    rule = (sc.get("knee_rule") or NA).rstrip(".") + "."
    rule = rule[0].upper() + rule[1:]
    sizes = [p.get("nodes") for p in sc["points"] if p.get("nodes") is not None]
    if knee is not None:
        knee_text = f"The knee of the curve is at {count(knee)} nodes (highlighted). {rule}"
    elif len(sizes) < 2:
        knee_text = f"One job size only: no knee can be found. {rule}"
    else:
        knee_text = (f"No knee between {count(min(sizes))} and {count(max(sizes))} nodes: every "
                     f"step up keeps a marginal efficiency of at least "
                     f"{_threshold(sc.get('knee_threshold'))}, so adding nodes still pays at the "
                     f"largest size shown. {rule}")
    return (_figure("scaling.png", images), _figure("time_cost.png", images), Para(knee_text),
            _table([("up to nodes", NUM), ("nodes", NUM), ("layout", LABEL),
                    ("iteration (s)", NUM), ("tokens/s", NUM), ("ideal tokens/s", NUM),
                    ("scaling efficiency", NUM), ("marginal efficiency", NUM), ("MFU", NUM),
                    ("days", NUM), ("node-hours", NUM)], rows, marked,
                   "Best layout per job size; scaling efficiency is tokens/s over ideal linear "
                   "scaling from the smallest size, marginal efficiency the step from the row "
                   "above"))


MEMORY_KINDS = ("weights", "gradients", "optimizer", "activations", "buffers")


def _memory(r: dict, images: set[str]) -> tuple:
    rows = []
    for m in r["memory"]:
        total = sum(m.get(k) or 0 for k in MEMORY_KINDS)
        usable = m.get("usable")
        rows.append([count(m.get("nodes")), value(m.get("layout_label")),
                     *[gb(m.get(k)) for k in MEMORY_KINDS], gb(total), gb(usable),
                     pct(total / usable) if usable else NA, value(m.get("memory_verdict"))])
    return (_figure("memory.png", images),
            _table([("nodes", NUM), ("layout", LABEL), *[(k, NUM) for k in MEMORY_KINDS],
                    ("total", NUM), ("usable", NUM), ("of usable", NUM), ("verdict", LABEL)],
                   rows, caption="GB per node, peak pipeline stage; verdict by the memory rule "
                                 "(see the summary)"))


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
                     _with_share(gb(lay.get("memory_bytes_per_node")),
                                 lay.get("memory_fraction_of_usable")),
                     value(lay.get("memory_verdict")),
                     days(lay.get("time_to_train_s")), note])
    intro = (f"The highlighted row is {REFERENCE_LABEL}."
             if marked else f"{REFERENCE_LABEL} is not among these layouts.")
    return (Para(intro),
            _table([("#", NUM), ("layout", LABEL), ("nodes", NUM), ("iteration (s)", NUM),
                    ("DES iteration (s)", NUM), ("tokens/s", NUM), ("MFU", NUM),
                    ("memory GB/node (% usable)", NUM), ("memory", LABEL), ("days", NUM),
                    ("note", TEXT)], rows, marked,
                   "The best layouts, in the order the plan ranks them (the slow end of each "
                   "layout's 80% band, by default)"))


SPAN_KINDS = ("F", "B", "W", "send", "dp", "optimizer")   # W: only where a schedule runs it
# the data-parallel stream's spans, told apart in the figure (reports.build), one column
DP_KINDS = ("dp_reduce", "dp_gather")


def _timeline(r: dict, images: set[str]) -> tuple:
    t = r["timeline"]
    busy: dict[int, dict[str, float]] = {}
    end: dict[int, float] = {}
    for sp in t.get("spans") or ():
        st = int(sp["stage"])
        busy.setdefault(st, dict.fromkeys(SPAN_KINDS, 0.0))
        kind = "dp" if sp["kind"] in DP_KINDS else sp["kind"]
        busy[st][kind] = busy[st].get(kind, 0.0) + sp["end"] - sp["start"]
        end[st] = max(end.get(st, 0.0), sp["end"])
    split = (" (B the input gradient, W the weight gradients, apart)"
             if any(b.get("W") for b in busy.values()) else "")
    blocks = [_figure("timeline.png", images),
              Para(f"{count(t.get('stages'))} pipeline stage{'' if t.get('stages') == 1 else 's'}; "
                   f"one iteration takes "
                   f"{num(t.get('iteration_s'))} s. F and B are forward and backward passes of "
                   f"micro-batches{split}, send the activations between stages, dp the "
                   "data-parallel stream: gradient reductions and, with ZeRO, weight gathers.")]
    if busy:
        kinds = [k for k in SPAN_KINDS if k != "W" or any(b["W"] for b in busy.values())]
        rows = [[count(st), *[num(busy[st][k]) for k in kinds], num(end[st])]
                for st in sorted(busy)]
        blocks.append(_table([("stage", NUM), *[(f"{k} (s)", NUM) for k in kinds],
                              ("last end (s)", NUM)], rows,
                             caption="Busy time per stage by kind, seconds"))
    return tuple(blocks)


def _network(r: dict, images: set[str]) -> tuple:
    n = r["network"]
    if n.get("fabric"):
        return (Para(f"The network is {n['fabric']}: no torus, so no map of link loads; the "
                     f"flow model shares its links max-min between concurrent groups."),
                Para("Placement:"), Bullets(tuple(n.get("placement") or ())))
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
    by = next((x.get("objective") for x in r["sensitivity"] if x.get("objective")), "model")
    what = "Time to train" if by == "model" else f"The {by} time to train"
    return (_figure("sensitivity.png", images),
            _table([("parameter", LABEL), ("change", TEXT),
                    ("days" if by == "model" else f"{by} days", NUM),
                    ("vs base", NUM), ("best layout", LABEL)], rows,
                   caption=f"{what} when one input changes (+ is slower)"))


def _gbs(bandwidth: float | None) -> str:
    """Bytes/s as GB/s or, from 1 TB/s, TB/s, with the unit: '6.80 GB/s', '1.40 TB/s'."""
    if bandwidth is None:
        return NA
    return f"{num(bandwidth / 1e12)} TB/s" if bandwidth >= 1e12 else f"{num(bandwidth / 1e9)} GB/s"


def _reliability(r: dict, images: set[str]) -> tuple:
    x = r["reliability"]
    none = "no source given"
    mtbf_source = x.get("mtbf_source") or none
    limit = x.get("checkpoint_limit") or NA
    words = (f"Each node fails on average once every {num(x.get('node_mtbf_h'))} hours, so a "
             f"job on {count(x.get('nodes'))} nodes is interrupted on average every "
             f"{duration(x.get('job_mtbf_s'))}. A checkpoint holds every weight and optimizer "
             f"state once: {gb(x.get('checkpoint_bytes_total'))} GB in total, at most "
             f"{gb(x.get('checkpoint_bytes_per_node'))} GB on one node. Every node writes its "
             f"share at once, so a checkpoint takes {duration(x.get('checkpoint_s'))}, the "
             f"slower of a node's own write ({gb(x.get('checkpoint_bytes_per_node'))} GB at "
             f"{_gbs(x.get('checkpoint_bandwidth_per_node'))}: "
             f"{duration(x.get('checkpoint_node_s'))}) and the file system's aggregate "
             f"({gb(x.get('checkpoint_bytes_total'))} GB at {_gbs(x.get('fs_bandwidth'))}: "
             f"{duration(x.get('checkpoint_fs_s'))}); here the {limit} sets it. A restart is "
             f"a relaunch of {duration(x.get('relaunch_s'))} and reading the checkpoint back "
             f"(assumed as fast as writing it): {duration(x.get('restart_s'))}. The Young/Daly "
             f"optimal interval between checkpoints is {duration(x.get('interval_s'))}. Over "
             f"the run expect {num(x.get('expected_interruptions'))} interruptions; goodput is "
             f"{near_one_pct(x.get('goodput'))}, so the {days(x.get('time_to_train_s'))} days of "
             f"failure-free training become {days(x.get('time_with_failures_s'))} days "
             f"({duration(_lost(x))} more). Where each input comes from is in the table; "
             f"the assumed ones say so.")
    rows = [
        ["Node MTBF (hours)", num(x.get("node_mtbf_h")), mtbf_source],
        ["Nodes", count(x.get("nodes")), "the recommended layout"],
        ["Job MTBF", duration(x.get("job_mtbf_s")), "node MTBF / nodes"],
        ["Checkpoint size, total (GB)", gb(x.get("checkpoint_bytes_total")),
         "every weight and optimizer state once (no gradients)"],
        ["Checkpoint size, per node (GB)", gb(x.get("checkpoint_bytes_per_node")),
         "the largest share one node writes: its peak stage's weights and optimizer states"],
        ["Write bandwidth per node", _gbs(x.get("checkpoint_bandwidth_per_node")),
         x.get("checkpoint_source") or none],
        ["File-system bandwidth, aggregate", _gbs(x.get("fs_bandwidth")),
         x.get("fs_bandwidth_source") or none],
        ["Checkpoint write time", duration(x.get("checkpoint_s")),
         f"max(per-node size / per-node bandwidth, total size / file-system bandwidth); "
         f"set by the {limit}"],
        ["Relaunch time", duration(x.get("relaunch_s")), x.get("relaunch_source") or none],
        ["Restart time", duration(x.get("restart_s")),
         "relaunch + reading the checkpoint back (as fast as the write)"],
        ["Optimal checkpoint interval", duration(x.get("interval_s")),
         "Young/Daly: sqrt(2 x write time x job MTBF) - write time"],
        ["Expected interruptions", num(x.get("expected_interruptions")),
         "time with failures / job MTBF"],
        ["Goodput", near_one_pct(x.get("goodput")),
         "1 - write time / (interval + write time) - (interval / 2 + restart) / job MTBF"],
        ["Time to train without failures (days)", days(x.get("time_to_train_s")),
         "the recommended layout"],
        ["Time to train with failures (days)", days(x.get("time_with_failures_s")),
         "without failures / goodput"],
        ["Time lost to failures", duration(_lost(x)), "checkpoints, lost work, restarts"],
    ]
    return (Para(words), _table([("quantity", LABEL), ("value", NUM), ("source", TEXT)], rows))


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
    by = v.get("objective", "model")
    sure = "" if by == "model" or v.get("objective_time_to_train_s") is None else (
        f" ({days(v['objective_time_to_train_s'])} days at the {by} of its band, which is "
        f"what must fit)")
    return (Para(f"The largest model that trains within {budget} has "
                 f"{big(v['params'])} parameters ({count(v['params'])}): {shape}. Its best "
                 f"layout is {value(v.get('layout_label'))}, which trains in "
                 f"{days(v.get('time_to_train_s'))} days{sure}."),)


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
        return any((data or {}).get(k) for k in ("heatmap", "hottest", "placement", "fabric"))
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
