"""The calibration file: JSON with provenance, raw measurements and the fit.

    {"format": "fugakuperf-calibration", "version": 1, "tool_version": "...",
     "created": "...", "host": {cpu, machine, cores, threads, ranks, numpy, numba, mpi,
     date...}, "measurements": [{"kind", "name", "ops": [...], "seconds", "rank"}, ...],
     "fit": {"compute": {...}, "collectives": {...}, "storage": {...}},
     "contention": {verdict, steal_fraction, other_cores, ...}}

``contention`` (calibration.contention.assess) says how quiet the machine was while
it was measured; files written before it existed have none. Measurements are kept
raw, so files from several runs (other nodes, other days) can be fitted together
(``merge``). Written atomically; a damaged, foreign or other-version file is refused
with a message naming it and the key at fault (every value is checked:
calibration.schema).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from fpcore.atomic import atomic_write
from fpcore.errors import SpecError, check_str
from fpcore.readers import dumps, read_json

from . import schema

FORMAT = "fugakuperf-calibration"
VERSION = 1
REQUIRED = ("format", "version", "tool_version", "created", "host", "measurements", "fit")
VERDICT_ORDER = ("quiet", "unknown", "noisy", "contended")


def new(host: dict, measurements: list[dict], fit: dict, contention: dict | None = None) -> dict:
    from fpcore import version
    data = {"format": FORMAT, "version": VERSION, "tool_version": version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": host, "measurements": measurements, "fit": fit}
    if contention is not None:
        data["contention"] = contention
    return data


def save(path: str | Path, data: dict) -> None:
    atomic_write(path, (dumps(data, indent=1) + "\n").encode("utf-8"), field="out")


def load(path: str | Path) -> dict:
    """Read and check a calibration file."""
    import os
    path = Path(path)
    if not os.path.isfile(path):             # os.path: False, never an error, for any name
        try:
            read_json(path)                  # why not: missing, a directory, too long a name
        except SpecError as e:
            raise SpecError("calibration", e.message if e.message.startswith(str(path))
                            else f"{path}: {e.message}") from None
        raise SpecError("calibration", f"{path}: not a regular file")
    try:
        data = read_json(path)
    except SpecError as e:
        raise SpecError("calibration", f"{path}: damaged (unreadable as JSON: {e.message})") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SpecError("calibration", f"{path}: not a fugakuperf calibration file")
    if data.get("version") != VERSION or isinstance(data.get("version"), bool):
        raise SpecError("calibration", f"{path}: calibration format version "
                                       f"{str(data.get('version'))[:40]}; this fugakuperf reads "
                                       f"version {VERSION} (run `fugakuperf calibrate` again)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise SpecError("calibration", f"{path}: damaged (missing {', '.join(missing)})")
    try:
        check_str("tool_version", data["tool_version"], max_len=200)
        check_str("created", data["created"], max_len=200)
        schema.check_host(data["host"])
        schema.check_measurements(data["measurements"])
        schema.check_fit(data["fit"])
        schema.check_contention(data.get("contention"))
    except SpecError as e:
        raise SpecError("calibration", f"{path}: damaged ({e.field}: {e.message})") from None
    return data


def merge(files: list[dict]) -> tuple[dict, list[dict], dict | None]:
    """The host facts of the first file, the measurements of all (each tagged with the
    file it came from) and the worst of their recorded contention. All must come from
    one kind of CPU and have used the same threads and ranks per node."""
    if not files:
        raise SpecError("calibration", "no calibration files given")
    first = files[0]["host"]
    measurements = []
    for i, f in enumerate(files):
        for key in ("cpu", "machine", "threads", "ranks"):
            if f["host"].get(key) != first.get(key):
                raise SpecError("calibration", f"file {i + 1} was measured with {key} "
                                               f"{f['host'].get(key)}, file 1 with "
                                               f"{first.get(key)}; fit files of one setting")
        measurements += [dict(m, file=i) for m in f["measurements"]]
    recorded = [dict(f["contention"], file=i) for i, f in enumerate(files)
                if f.get("contention")]
    worst = max(recorded, key=lambda c: VERDICT_ORDER.index(c["verdict"]), default=None)
    return first, measurements, worst
