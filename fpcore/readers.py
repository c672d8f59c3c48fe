"""Reading the files users give: bounded, UTF-8, standard JSON, shallow nesting.

Every problem is a SpecError naming the file (and the option it came from), never a
traceback: a missing or unreadable file, a file too large, bytes that are not
UTF-8, malformed TOML, JSON or CSV, nesting deeper than any real input
(``MAX_DEPTH``), JSON's non-standard ``NaN``/``Infinity``, a CSV field past the
csv module's limit. And every JSON this project writes is standard JSON
(``dumps`` refuses NaN and infinities instead of writing them).
"""

from __future__ import annotations

import json
import os

from .errors import SpecError

# csv and tomllib load inside the readers that use them: the CLI's start-up (--help,
# every error path) imports this module for ``dumps`` alone.

MAX_DEPTH = 32                 # tables, arrays or objects inside each other
MAX_BYTES = 256 * 2**20        # the largest text input read (run logs, calibrations)
MAX_CSV_FIELD = 1 << 20        # characters in one CSV field


def _where(path, field: str | None) -> str:
    return f"{field} {path}" if field else str(path)


def read_bytes(path: str | os.PathLike, field: str | None = None,
               max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``."""
    where = _where(path, field)
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                raise SpecError(where, "is not a regular file")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise SpecError(where, "no such file") from None
    except IsADirectoryError:
        raise SpecError(where, "is a directory, not a file") from None
    except (OSError, ValueError) as e:
        raise SpecError(where, f"cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if len(data) > max_bytes:
        raise SpecError(where, f"is larger than {max_bytes / 2**20:.0f} MiB")
    return data


def decode_text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(where, f"is not UTF-8 text (byte {e.start}: "
                               f"{data[e.start:e.start + 1]!r})") from None


def read_text(path: str | os.PathLike, field: str | None = None,
              max_bytes: int = MAX_BYTES) -> str:
    return decode_text(read_bytes(path, field, max_bytes), _where(path, field))


def depth(value) -> int:
    """How deeply tables (dicts) and arrays (lists) nest in ``value`` (iteratively)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, (list, tuple)):
            continue
        deepest = max(deepest, d + 1)
        if d + 1 > MAX_DEPTH:
            return d + 1
        stack.extend((item, d + 1) for item in v)
    return deepest


def _check_depth(value, where: str):
    if depth(value) > MAX_DEPTH:
        raise SpecError(where, f"nests tables or arrays more than {MAX_DEPTH} deep")
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, where: str):
    """Standard JSON only: ``NaN``, ``Infinity`` and over-deep nesting are refused."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise SpecError(where, f"nests objects or arrays more than {MAX_DEPTH} deep") from None
    except ValueError as e:          # JSONDecodeError is a ValueError
        raise SpecError(where, f"is not valid JSON: {e}") from None
    return _check_depth(value, where)


def read_json(path: str | os.PathLike, field: str | None = None,
              max_bytes: int = MAX_BYTES):
    where = _where(path, field)
    return parse_json(read_text(path, field, max_bytes), where)


def parse_toml(text: str, where: str) -> dict:
    import tomllib
    try:
        value = tomllib.loads(text)
    except RecursionError:
        raise SpecError(where, f"nests tables or arrays more than {MAX_DEPTH} deep") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(where, f"malformed TOML: {e}") from None
    return _check_depth(value, where)


def read_toml(path: str | os.PathLike, field: str | None = None) -> dict:
    """Parse a TOML file; every problem is a SpecError naming it."""
    where = _where(path, field)
    return parse_toml(read_text(path, field, max_bytes=16 * 2**20), where)


def read_csv(path: str | os.PathLike, field: str | None = None) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV file with a header row; every problem names the file."""
    import csv
    import io
    where = _where(path, field)
    text = read_text(path, field)
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_CSV_FIELD)
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    except csv.Error as e:
        raise SpecError(where, f"malformed CSV (line {reader.line_num}): {e}") from None
    finally:
        csv.field_size_limit(limit)
    if not header:
        raise SpecError(where, "is empty (no header row)")
    for i, row in enumerate(rows):
        if None in row:
            raise SpecError(where, f"row {i + 2} has more fields than the header")
    return header, rows


def dumps(data, **kw) -> str:
    """Standard JSON (no NaN or infinities: a value that is not finite is a bug, and
    raises ValueError rather than writing what other tools cannot read)."""
    return json.dumps(data, allow_nan=False, **kw)
