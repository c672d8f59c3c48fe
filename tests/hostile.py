"""Hostile inputs for the fuzz tests: values no valid input holds, files no reader should
trust, and mutations of valid nested inputs (TOML tables, JSON files, checkpoint metadata).

The fuzz tests run with a fixed budget (``FUZZ`` settings: derandomised, so CI runs the
same cases every time; ``FUGAKUPERF_FUZZ_EXAMPLES`` scales it up for a longer hunt).
"""

from __future__ import annotations

import copy
import math
import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = float(os.environ.get("FUGAKUPERF_FUZZ_EXAMPLES", "1"))


def fuzz_settings(examples: int):
    """A fixed budget of ``examples`` cases (times FUGAKUPERF_FUZZ_EXAMPLES), the same
    cases on every run."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# Numbers written on a command line or in a file that no option may accept.
NOT_FINITE_TEXTS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400"]
NUMBER_TEXTS = NOT_FINITE_TEXTS + ["-1", "0", "-0", "1e-320", "0.5", "3", "99999999999999999999",
                                   "1e30", "", " ", "abc", "1,2", "0x10", "13B", "4KiB", "4M",
                                   "1_000", "\u0661", "1e9"]
INT_TEXTS = ["-1", "0", "1", "2", "3", "7", "12", "48", "1000000000000", "1.5", "nan", "", "x",
             "2,4", "0,0", "-5,3", "4,4"]

# Scalars that replace a value in a mutated table.
HOSTILE_SCALARS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 0.0, -0.5, 1e300, 10**30, 2**63,
                     "", "x" * 300, True, False, [], {}, [1, "a"], {"value": math.nan},
                     {"value": "1"}, None]),
    st.integers(min_value=-10**6, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)


def _slots(value, path=()):
    """Every (path to a container, key) in a nested structure of dicts and lists."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k
            yield from _slots(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield path, i
            yield from _slots(v, path + (i,))


def _at(value, path):
    for k in path:
        value = value[k]
    return value


@st.composite
def mutations(draw, valid, max_changes: int = 3):
    """``valid`` (a nested dict/list) with 1..max_changes changes: a value replaced by a
    hostile scalar, a key removed, or an unknown key added."""
    data = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, max_changes))):
        slots = list(_slots(data))
        if not slots:
            break
        path, key = draw(st.sampled_from(slots))
        container = _at(data, path)
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            container[key] = copy.deepcopy(draw(HOSTILE_SCALARS))
        elif action == "delete":
            if isinstance(container, dict):
                del container[key]
            else:
                container.pop(key)
        elif isinstance(container, dict):
            container[draw(st.text(min_size=1, max_size=8))] = copy.deepcopy(draw(HOSTILE_SCALARS))
        else:
            container.append(copy.deepcopy(draw(HOSTILE_SCALARS)))
    return data


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    """A case that runs longer than ``seconds`` is a hang: fail it instead of waiting."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def hostile_files(folder: Path) -> dict[str, str]:
    """Files that no reader should trust, by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "missing": folder / "missing.toml",
        "directory": folder / "a-directory",
        "empty": folder / "empty.toml",
        "not-utf8": folder / "latin1.toml",
        "binary": folder / "garbage.json",
        "deep-toml": folder / "deep.toml",
        "deep-json": folder / "deep.json",
        "nan-json": folder / "nan.json",
        "not-toml": folder / "passwd.toml",
        "long-path": folder / ("x" * 4000),
        "csv-huge-field": folder / "huge.csv",
    }
    files["directory"].mkdir(exist_ok=True)
    files["empty"].write_bytes(b"")
    files["not-utf8"].write_bytes(b'["caf\xe9"]\nlayers = 2\n')
    files["binary"].write_bytes(bytes(range(256)) * 4)
    files["deep-toml"].write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    files["deep-json"].write_text("[" * 100_000 + "]" * 100_000)
    files["nan-json"].write_text('{"format": "fugakuperf-calibration", "version": 1, "x": NaN}')
    files["not-toml"].write_text("root:x:0:0:root:/root:/bin/bash\n")
    files["csv-huge-field"].write_text("system,model\nfugaku," + "x" * (300_000) + "\n")
    device = folder / "device"
    if not device.exists():
        try:               # a character device of our own (a null device), never a real one
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (PermissionError, OSError):
            os.mkfifo(device)
    files["device"] = device
    return {k: str(v) for k, v in files.items()}
