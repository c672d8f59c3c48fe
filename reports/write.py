"""Write a capacity report to a folder: index.html, report.md, report.json and the images.

Every file is written to a temporary file in the same folder and renamed over its name
(``os.replace``), so a reader never sees half a report file, and an interrupted write leaves
the previous version in place.
"""

from __future__ import annotations

import os

from fpcore.atomic import atomic_write
from fpcore.readers import dumps
from reports.html import render_html
from reports.markdown import render_markdown

PAGES = ("index.html", "report.md", "report.json")


def _check_image_names(images: dict[str, bytes]) -> None:
    for name in images:
        if not name or os.path.basename(name) != name or name.startswith(".") or name in PAGES:
            raise ValueError(f"images: {name!r} is not a plain file name beside report.md")


def write_report(out_dir: str | os.PathLike, report: dict, images: dict[str, bytes]) -> dict:
    """Write the report into ``out_dir`` (created if needed) and return {file name: path}.

    ``images`` maps file names (``scaling.png``, ...) to PNG bytes; each is written beside
    report.md and embedded in index.html. A folder that cannot be used raises
    ``ValueError("out: ...")`` naming the path and the problem."""
    _check_image_names(images)
    # Render before touching the disk, so a report that cannot be rendered writes nothing.
    present = {name: data for name, data in images.items() if data}
    files = dict(present)
    files["report.md"] = render_markdown(report, list(present)).encode("utf-8")
    files["report.json"] = (dumps(report, indent=2) + "\n").encode("utf-8")
    files["index.html"] = render_html(report, present).encode("utf-8")

    out = os.fspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out} exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out: cannot create {out}: {e.strerror or e}") from e
    paths = {}
    for name, data in files.items():
        path = os.path.join(out, name)
        atomic_write(path, data, field="out")
        paths[name] = path
    return paths
