"""The capacity report as GitHub-flavoured Markdown: the same sections as the HTML page
(``reports.fmt.sections``), tables in pipe syntax, images as relative files beside report.md."""

from __future__ import annotations

import re

from reports.fmt import NUM, Bullets, Figure, Para, Stats, Table, sections

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#&])")


def escape(text: str) -> str:
    """Text that Markdown shows as written: markup characters backslash-escaped (``|`` too, so
    it is safe inside a table cell) and line breaks folded into spaces."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(t: Table) -> list[str]:
    lines = [f"*{escape(t.caption)}*", ""] if t.caption else []
    lines += [_row(escape(h) for h in t.header),
              _row("---:" if k == NUM else "---" for k in t.kinds)]
    for r, row in enumerate(t.rows):
        cells = [escape(c) for c in row]
        if r in t.marked:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append(_row(cells))
    return lines


def _block(b) -> list[str]:
    if isinstance(b, Para):
        return [escape(b.text)]
    if isinstance(b, Bullets):
        return [f"- {escape(i)}" for i in b.items]
    if isinstance(b, Stats):
        return [_row(["quantity", "value"]), _row(["---", "---:"])] + [
            _row([escape(k), escape(v)]) for k, v in b.items]
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        return [f"![{escape(b.caption)}]({b.name})"]
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(report: dict, image_names: list[str]) -> str:
    """The report as Markdown; ``image_names`` are the image files written beside it (a figure
    not among them is named as missing)."""
    secs = sections(report, image_names)
    headings = [f"{i} {s.title}" for i, s in enumerate(secs, 1)]
    lines = [f"# {escape(report.get('title') or 'Capacity report')}", ""]
    if report.get("generated_by"):
        lines += [f"*{escape(report['generated_by'])}*", ""]
    lines += ["Contents:", ""]
    lines += [f"{i}. [{escape(s.title)}](#{_anchor(h)})"
              for i, (s, h) in enumerate(zip(secs, headings), 1)]
    for s, h in zip(secs, headings):
        lines += ["", f"## {escape(h)}"]
        for b in s.blocks:
            lines += [""] + _block(b)
    return "\n".join(lines) + "\n"
