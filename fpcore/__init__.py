"""The foundation every fugakuperf package may use, importing nothing of the project:
the one error type and the checks every input goes through (``errors``), bounded
readers for the files users give (``readers``), atomic writes (``atomic``), and the
installed version (``version``).
"""

from __future__ import annotations


def version() -> str:
    """The installed fugakuperf version (from the package metadata)."""
    from importlib import metadata
    try:
        return metadata.version("fugakuperf")
    except metadata.PackageNotFoundError:      # run from a source tree, not installed
        return "0+unknown"
