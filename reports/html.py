"""The capacity report as one self-contained HTML page.

Everything the page needs is inside it: images as ``data:image/png;base64`` URIs, one inline
style sheet with the system font stack, no scripts, fonts or links to fetch. It prints on A4 or
Letter: no background colours, tables and figures kept whole where they fit on a page. The
content comes from ``reports.fmt.sections``; this module lays it out and escapes every string.
"""

from __future__ import annotations

import base64
import re
from html import escape

from reports.fmt import LABEL, NUM, TEXT, Bullets, Figure, Para, Stats, Table, sections

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --accent: #0b5cad;
        --mark: #fff3c4; --mark-edge: #c99a00; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 72rem; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 .25rem; }
h2 { font-size: 1.4rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem;
     border-bottom: 1px solid var(--line); }
.byline { color: var(--muted); margin: 0 0 1.5rem; }
nav { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1.25rem;
      margin-bottom: 1rem; }
nav h2 { font-size: 1rem; margin: 0 0 .25rem; border: 0; padding: 0; }
nav ol { margin: 0; padding-left: 1.5rem; columns: 2; }
a { color: var(--accent); }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr));
         gap: .75rem; margin: 1rem 0; }
.stats div { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
             padding: .6rem .8rem; }
.stats .wide { grid-column: span 2; }
.stats dt { color: var(--muted); font-size: .85rem; }
.stats dd { margin: 0; font-size: 1.3rem; font-weight: 600; font-variant-numeric: tabular-nums;
            overflow-wrap: anywhere; }
.table { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .875rem; font-variant-numeric: tabular-nums; }
figure.tbl { margin: 1rem 0; }
figure.tbl > figcaption { color: var(--muted); font-size: 1rem; margin: 0 0 .35rem; }
figure.tbl .table { margin: 0; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
thead th { border-bottom: 2px solid var(--fg); white-space: normal; vertical-align: bottom; }
.n { text-align: right; white-space: nowrap; }
thead th.n { white-space: normal; }
td.w { min-width: 8rem; }
td.l { min-width: 16rem; }
tr.mark td { background: var(--mark); font-weight: 600; }
tr.mark td:first-child { border-left: 4px solid var(--mark-edge); }
figure { margin: 1.25rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .35rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
       font-size: .9em; }
code, .flag { white-space: nowrap; }
@media print {
  @page { margin: 15mm; }
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  *, *::before, *::after { background: transparent !important; box-shadow: none !important; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, figure, .stats, nav { break-inside: avoid; page-break-inside: avoid; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  .table { overflow: visible; }
  table { font-size: 8pt; }
  th, td { padding: .15rem .3rem; }
  td.l { min-width: 9rem; }
  td.w { min-width: 6rem; }
  tr.mark td { border-top: 1.5pt solid #000; border-bottom: 1.5pt solid #000; }
  tr.mark td:first-child { border-left: 3pt solid #000; }
  figure img { max-width: 100%; border: 0; }
}
"""


_CELL_CLASS = {NUM: ' class="n"', LABEL: "", TEXT: ' class="w"'}
LONG_LABEL = 20  # characters: a label column with a longer cell gets a minimum width


def _table(t: Table) -> str:
    cls = [' class="l"' if k == LABEL and any(len(r[i]) > LONG_LABEL for r in t.rows)
           else _CELL_CLASS[k] for i, k in enumerate(t.kinds)]
    head = "".join(f'<th scope="col"{c}>{escape(h)}</th>' for c, h in zip(cls, t.header))
    mark = ' class="mark"'
    body = "".join(
        f"<tr{mark if r in t.marked else ''}>"
        + "".join(f"<td{c}>{_prose(v)}</td>" for c, v in zip(cls, row)) + "</tr>\n"
        for r, row in enumerate(t.rows))
    table = (f'<div class="table"><table><thead><tr>{head}</tr></thead>\n'
             f"<tbody>\n{body}</tbody></table></div>")
    if not t.caption:
        return table
    # the caption outside the scrolling box: inside, a table wider than the page would
    # take it out of view with its right-hand columns
    return (f'<figure class="tbl"><figcaption>{escape(t.caption)}</figcaption>{table}'
            f"</figure>")


_CODE = re.compile(r"`([^`]+)`")
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _prose(text: str) -> str:
    """A sentence, escaped, its `commands` as code and its --flags kept whole on a line
    (a browser would break one after its leading dashes)."""
    parts = _CODE.split(text)
    return "".join(f"<code>{escape(part)}</code>" if i % 2 else
                   _FLAG.sub(r'<span class="flag">\1</span>', escape(part))
                   for i, part in enumerate(parts))


def _block(b, images: dict[str, bytes]) -> str:
    if isinstance(b, Para):
        return f"<p>{_prose(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{_prose(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Stats):       # a long value (the layout label) gets a double-width card
        wide = ' class="wide"'
        return ('<dl class="stats">' + "".join(
            f"<div{wide if len(v) > 12 else ''}><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
            for k, v in b.items) + "</dl>")
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        data = base64.b64encode(images[b.name]).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(b.caption)}">'
                f"<figcaption>{escape(b.caption)} ({escape(b.name)})</figcaption></figure>")
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """The report as one HTML page; ``images`` maps file names (``scaling.png``, ...) to PNG
    bytes, and a figure that is absent or empty is named as missing on the page."""
    present = {name: data for name, data in images.items() if data}
    return page(report.get("title") or "Capacity report", report.get("generated_by") or "",
                sections(report, present), present)


def page(title: str, byline: str, secs: list, images: dict[str, bytes]) -> str:
    """One self-contained page of ``secs`` (reports.fmt.Section), numbered, with a
    table of contents; ``images`` maps each Figure's name to its PNG bytes."""
    toc = "".join(f'<li><a href="#{s.id}">{escape(s.title)}</a></li>' for s in secs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head>",
        "<body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="byline">{escape(byline)}</p>',
        f'<nav id="contents" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>',
    ]
    for i, s in enumerate(secs, 1):
        parts.append(f'<section id="{s.id}"><h2>{i} {escape(s.title)}</h2>')
        parts += [_block(b, images) for b in s.blocks]
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
