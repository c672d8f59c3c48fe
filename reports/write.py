"""Write a capacity report to a folder: index.html, report.md, report.json and the images.

The report is written into a fresh folder beside the target and swapped in with one
rename, so the target always holds either the whole previous report or the whole new one:
a write that fails, or a process killed at any moment, leaves no mixture of the two.

* ``stage(out)`` checks the target before any work and creates the fresh folder
  (``.NAME.HOST.PID.RANDOM.report`` beside it, parents made as needed). A target that is
  not a directory, that holds files a report does not write, or whose folder cannot be
  written is a SpecError naming the output option.
* ``write_report`` renders every page first, writes the files into the staged folder
  (each flushed to disk), then swaps: a new target is the staged folder renamed; an
  existing report is exchanged with it in one ``renameat2(RENAME_EXCHANGE)`` (Linux) and
  the previous report, now in the staged folder's place, removed. Where the exchange is
  not available the previous report is renamed aside first: for the instant between the
  two renames the target is absent (never mixed), and the previous report is beside it.
* A staged folder left by a process that is no longer running (killed with -9) is removed
  by the next ``stage`` of the same target, and a previous report it had renamed aside is
  put back if the target is missing (what another host left is left alone).
* The target is checked again just before the swap, so files put into it during the work
  are never removed with the previous report.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass

from fpcore.atomic import alive, host_tag, os_problem, real_path
from fpcore.errors import SpecError
from fpcore.readers import dumps
from reports.html import render_html
from reports.markdown import render_markdown

PAGES = ("index.html", "report.md", "report.json")
IMAGE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.png$")
# a temporary file an earlier, per-file writer (fpcore.atomic) left in a report's folder
_PAGE_TEMP = re.compile(r"^\.(index\.html|report\.md|report\.json|[A-Za-z0-9_.-]+\.png)\."
                        r".+\.tmp$")
_STAGED = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+"
                     r"\.(report|old)$")
_RENAME_EXCHANGE = 2                   # linux/fs.h


def _check_image_names(images: dict[str, bytes]) -> None:
    for name in images:
        if not name or os.path.basename(name) != name or name.startswith(".") or name in PAGES:
            raise ValueError(f"images: {name!r} is not a plain file name beside report.md")


def is_report_file(name: str) -> bool:
    """Whether a report writes files of this name (a page, a PNG figure, or the temporary
    file of an interrupted earlier write of one)."""
    return name in PAGES or bool(IMAGE.match(name)) or bool(_PAGE_TEMP.match(name))


def check_out(out_dir: str | os.PathLike, field: str = "out") -> str:
    """The absolute path a report to ``out_dir`` replaces, checked before any work: absent
    (in a writable folder that exists), empty, or a report's folder
    (report.json and only files a report writes): none of the user's files is removed."""
    out = real_path(out_dir, field, "the report needs a folder of its own, not the root")
    try:
        st = os.stat(out)
    except (FileNotFoundError, NotADirectoryError):
        st = None                          # absent; what is above it is checked below
    except (OSError, ValueError) as e:     # ValueError: a name the file system cannot encode
        raise SpecError(field, f"{out:.200}: {os_problem(e) if isinstance(e, OSError) else e}") \
            from None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            kind = "a file" if stat.S_ISREG(st.st_mode) else \
                "not a directory (a device, pipe or socket)"
            raise SpecError(field, f"{out} is {kind}; give a folder for the report")
        try:
            names = os.listdir(out)
        except OSError as e:
            raise SpecError(field, f"cannot read {out}: {os_problem(e)}") from None
        foreign = sorted(n for n in names if not is_report_file(n)
                         or not os.path.isfile(os.path.join(out, n)))
        if names and not foreign and "report.json" not in names:
            raise SpecError(field, f"{out} is not empty and not a report's folder (it has no "
                                   f"report.json); give a new or empty folder")
        if foreign:
            raise SpecError(field, f"{out} holds files a report does not write ("
                                   f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"
                                   f"); give a new or empty folder, or a report's own folder "
                                   f"(it is replaced whole)")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):          # as every output: its folder must exist
        why = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise SpecError(field, f"cannot create {out}: the folder {parent} {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(field, f"cannot create {out}: {parent} is not writable")
    return out


@dataclass
class Staging:
    """A fresh folder beside ``out`` that a report is written into, then swapped in."""

    out: str
    path: str
    field: str = "out"

    def discard(self) -> None:
        """Remove the staged folder (a report that will not be written)."""
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale(parent: str, name: str) -> list[str]:
    """Clear what dead writers of reports to ``parent/name`` left beside it: a staged
    folder is removed; a previous report renamed aside (``.old``) is put back when the
    target is missing (the writer died between its two renames), else removed."""
    removed, host = [], host_tag()
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return removed
    for entry in entries:
        m = _STAGED.match(entry)
        if not (m and m.group("name") == name[:100] and m.group("host") == host):
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or alive(pid):
            continue
        path = os.path.join(parent, entry)
        if entry.endswith(".old") and not os.path.lexists(os.path.join(parent, name)):
            os.rename(path, os.path.join(parent, name))
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _prefix(name: str) -> str:
    return f".{name[:100]}.{host_tag()}.{os.getpid()}."


def stage(out_dir: str | os.PathLike, field: str = "out") -> Staging:
    """Check ``out_dir`` (``check_out``) and create the folder the report is written into,
    beside it: everything that can fail about the output fails here, before any work."""
    out = check_out(out_dir, field)
    parent, name = os.path.split(out)
    try:
        remove_stale(parent, name)
        path = tempfile.mkdtemp(prefix=_prefix(name), suffix=".report", dir=parent)
        os.chmod(path, 0o755)              # mkdtemp makes it private
    except (OSError, ValueError) as e:
        problem = os_problem(e) if isinstance(e, OSError) else str(e)
        raise SpecError(field, f"cannot create {out:.200}: {problem}") from None
    return Staging(out, path, field)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap(staging: Staging) -> None:
    """Put the staged folder at the target: the whole old report or the whole new one."""
    out, new = staging.out, staging.path
    parent = os.path.dirname(out)
    if not os.path.lexists(out):
        os.rename(new, out)
    elif _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)     # the previous report, now staged
    else:
        old = tempfile.mkdtemp(prefix=_prefix(os.path.basename(out)), suffix=".old", dir=parent)
        os.rename(out, old)                        # old is an empty folder: replaced
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(parent)


def write_report(out_dir: str | os.PathLike, report: dict, images: dict[str, bytes], *,
                 staging: Staging | None = None, field: str = "out") -> dict:
    """Write the report to ``out_dir`` and return {file name: path}.

    ``images`` maps file names (``scaling.png``, ...) to PNG bytes; each is written beside
    report.md and embedded in index.html. ``staging`` is the folder ``stage(out_dir)``
    made before the work (made here when not given). A folder that cannot be used raises
    SpecError(``field``) naming the path and the problem; the target is then as it was."""
    _check_image_names(images)
    # Render before touching the disk, so a report that cannot be rendered writes nothing.
    present = {name: data for name, data in images.items() if data}
    files = dict(present)
    files["report.md"] = render_markdown(report, list(present)).encode("utf-8")
    files["report.json"] = (dumps(report, indent=2) + "\n").encode("utf-8")
    files["index.html"] = render_html(report, present).encode("utf-8")

    staging = staging or stage(out_dir, field)
    try:
        for name, data in files.items():
            _write_file(os.path.join(staging.path, name), data)
        _fsync_dir(staging.path)
        check_out(staging.out, staging.field)      # as at the start: still only a report
        _swap(staging)
    except BaseException as e:
        staging.discard()
        if isinstance(e, OSError):
            raise SpecError(staging.field, f"cannot write {staging.out}: {os_problem(e)}") from None
        raise
    return {name: os.path.join(staging.out, name) for name in files}
