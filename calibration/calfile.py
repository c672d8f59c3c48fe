"""The calibration file: JSON with provenance, raw measurements and the fit.

    {"format": "fugakuperf-calibration", "version": 1, "tool_version": "...",
     "created": "...", "host": {cpu, cores, threads, ranks, numpy, numba, mpi, date...},
     "measurements": [{"kind", "name", "ops": [...], "seconds", "rank"}, ...],
     "fit": {"compute": {...}, "collectives": {...}}}

Measurements are kept raw, so files from several runs (other nodes, other days) can
be fitted together (``merge``). Written atomically; a damaged, foreign or
other-version file is refused with a message naming it.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError
from fpcore.readers import dumps

FORMAT = "fugakuperf-calibration"
VERSION = 1
REQUIRED = ("format", "version", "tool_version", "created", "host", "measurements", "fit")


def new(host: dict, measurements: list[dict], fit: dict) -> dict:
    from fpcore import version
    return {"format": FORMAT, "version": VERSION, "tool_version": version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": host, "measurements": measurements, "fit": fit}


def save(path: str | Path, data: dict) -> None:
    try:
        atomic_write(path, (dumps(data, indent=1) + "\n").encode("utf-8"))
    except OSError as e:
        raise SpecError("out", f"cannot write {path}: {e.strerror or e}") from e


def check_writable(path: str | Path) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    import os
    folder = Path(path).resolve().parent
    if Path(path).is_dir():
        raise SpecError("out", f"{path} is a directory")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise SpecError("out", f"cannot write {path}: {folder} is not a writable directory")


def load(path: str | Path) -> dict:
    """Read and check a calibration file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("calibration", f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpecError("calibration", f"{path}: damaged (not valid JSON: {e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SpecError("calibration", f"{path}: not a fugakuperf calibration file")
    if data.get("version") != VERSION:
        raise SpecError("calibration", f"{path}: calibration format version "
                                       f"{data.get('version')}; this fugakuperf reads "
                                       f"version {VERSION} (run `fugakuperf calibrate` again)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise SpecError("calibration", f"{path}: damaged (missing {', '.join(missing)})")
    if not isinstance(data["measurements"], list) or not all(
            isinstance(m, dict) and "kind" in m and "seconds" in m for m in data["measurements"]):
        raise SpecError("calibration", f"{path}: damaged (measurements are not a list of records)")
    if not isinstance(data["host"], dict):
        raise SpecError("calibration", f"{path}: damaged (host is not a record)")
    fit = data["fit"]
    if not isinstance(fit, dict) or not isinstance(fit.get("compute"), dict) or \
            not isinstance(fit["compute"].get("parameters"), dict):
        raise SpecError("calibration", f"{path}: damaged (no compute fit)")
    collectives = fit.get("collectives", {})
    if not isinstance(collectives, dict) or not all(
            isinstance(f, dict) and all(isinstance(f.get(k), (int, float)) and f[k] > 0
                                        for k in ("alpha_s", "bandwidth_bytes_per_s"))
            for f in collectives.values()):
        raise SpecError("calibration", f"{path}: damaged (a collective fit lacks a positive "
                                       f"alpha_s or bandwidth_bytes_per_s)")
    storage = fit.get("storage") or {}
    rate = storage.get("checkpoint_write_bytes_per_s") if isinstance(storage, dict) else -1
    if rate is not None and not (isinstance(rate, (int, float)) and rate > 0):
        raise SpecError("calibration", f"{path}: damaged (storage.checkpoint_write_bytes_per_s "
                                       f"must be a positive number)")
    from .fit import fit_from_dict
    fit_from_dict(fit["compute"]["parameters"], str(path))      # values in range
    return data


def merge(files: list[dict]) -> tuple[dict, list[dict]]:
    """The host facts of the first file and the measurements of all, each tagged with
    the file it came from. All must have used the same threads and ranks per node."""
    if not files:
        raise SpecError("calibration", "no calibration files given")
    first = files[0]["host"]
    measurements = []
    for i, f in enumerate(files):
        for key in ("threads", "ranks"):
            if f["host"].get(key) != first.get(key):
                raise SpecError("calibration", f"file {i + 1} was measured with {key} "
                                               f"{f['host'].get(key)}, file 1 with "
                                               f"{first.get(key)}; fit files of one setting")
        measurements += [dict(m, file=i) for m in f["measurements"]]
    return first, measurements
