"""Atomic file writes: write beside the target, flush to disk, then rename over it.

A reader never sees half a file, and an interrupted write leaves the previous
version in place (``os.replace`` is atomic within one file system). Only regular
files are replaced: a device, a pipe or a directory at the target is refused
(as root, replacing ``/dev/full`` would replace the device). A link is followed, so
the file it names is the one replaced.

Temporary files are named ``.NAME.HOST.PID.RANDOM.tmp`` (RANDOM: mkstemp's suffix); one written on this host by
a process that is no longer running (killed with -9) is removed by
``remove_stale_temps`` (a file of another host, on a shared file system, is left alone).
"""

from __future__ import annotations

import os
import re
import socket
import stat
import tempfile
from typing import Callable

from .errors import SpecError

_TEMP = re.compile(r"^\..+\.([^.]+)\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def host_tag() -> str:
    """This host's name as it appears in temporary names (letters, digits and dashes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def os_problem(e: OSError) -> str:
    """What went wrong, as the system says it."""
    return e.strerror or str(e)


def real_path(path: str | os.PathLike, field: str, root: str) -> str:
    """``path`` absolute, its links resolved; one that cannot be resolved, or the root
    itself (``root``: what to say of it), is a SpecError naming ``field``."""
    try:
        real = os.path.realpath(os.fspath(path))
    except (OSError, ValueError) as e:
        raise SpecError(field, f"{path!s:.200}: {e}") from None
    if not os.path.basename(real):
        raise SpecError(field, f"{real}: {root}")
    return real


def target(path: str | os.PathLike, field: str = "output") -> str:
    """The path a write to ``path`` replaces, checked before any work: it is a regular
    file or absent, in a directory that exists and can be written."""
    path = real_path(path, field, "names a directory, not a file")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise SpecError(field, f"{path:.200}: {os_problem(e)}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else \
            "not a regular file (a device, pipe or socket)"
        raise SpecError(field, f"cannot write {path}: it is {kind}; give the path of a file")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise SpecError(field, f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise SpecError(field, f"cannot write {path}: the folder {folder} is not writable")
    return path


def not_an_input(path: str | os.PathLike, field: str, inputs: dict) -> None:
    """Refuse an output ``path`` that is one of the command's ``inputs`` ({option: path
    or None}) or would land on one: a write would destroy what it was made from."""
    out = os.path.realpath(os.fspath(path))
    for option, given in inputs.items():
        if given is not None and os.path.exists(given) \
                and os.path.realpath(os.fspath(given)) == out:
            raise SpecError(field, f"{os.fspath(path):.200} is the {option} file this command "
                                   f"reads; give another path")


def atomic_write(path: str | os.PathLike, data: bytes | Callable, mode: int = 0o644,
                 field: str = "output") -> None:
    """Write ``data`` (bytes, or a function given the open binary file) to ``path``.

    A target that is not a regular file, or a folder that cannot be written, is a
    SpecError naming ``field``."""
    path = target(path, field)
    directory, name = os.path.split(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name[:100]}.{host_tag()}.{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as e:
        raise SpecError(field, f"cannot write {path}: {os_problem(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)            # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise SpecError(field, f"cannot write {path}: {os_problem(e)}") from None
        raise


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> list[str]:
    """Remove the temporary files of writes in ``directory`` whose process is gone;
    return their paths."""
    removed, host = [], host_tag()
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m and m.group(1) == host and int(m.group(2)) != os.getpid() \
                and not alive(int(m.group(2))):
            path = os.path.join(directory, name)
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed
