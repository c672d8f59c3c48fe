"""Atomic file writes: write beside the target, flush to disk, then rename over it.

A reader never sees half a file, and an interrupted write leaves the previous
version in place (``os.replace`` is atomic within one file system).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str | os.PathLike, data: bytes | Callable, mode: int = 0o644) -> None:
    """Write ``data`` (bytes, or a function given the open binary file) to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
