"""Every failure of the command line is one line on stderr and a non-zero exit."""

import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel import parallel


@pytest.fixture
def broken_command():
    """A command that fails in a way no input check foresaw."""
    @main.command("broken-for-test")
    @click.option("--kind", default="bug")
    def broken(kind):
        if kind == "bug":
            return {}["missing"]
        if kind == "spec":
            raise SpecError("thing", "must be blue")
        if kind == "memory":
            raise MemoryError()
        raise OSError(28, "No space left on device", "/tmp/x")
    yield "broken-for-test"
    main.commands.pop("broken-for-test")


@pytest.mark.parametrize("kind,code,start", [
    ("bug", 70, "fugakuperf: internal error (KeyError: 'missing') while running `fugakuperf "
                "broken-for-test --kind bug`. This is a bug: please report it"),
    ("spec", 2, "error: thing: must be blue"),
    ("memory", 1, "error: out of memory"),
    ("disk", 1, "error: /tmp/x: No space left on device"),
])
def test_failures_are_one_line(broken_command, kind, code, start):
    result = CliRunner().invoke(main, [broken_command, "--kind", kind])
    assert result.exit_code == code
    assert result.stderr.startswith(start), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, says", [
    (["collective", "allreduce", "--nodes", "12"], "Missing option '--bytes'"),
    (["report", "--params", "1e9"], "Missing option '--out'"),
    (["collective", "--nodes", "12", "--bytes", "1"], "Missing argument '{allreduce"),
])
def test_a_missing_option_is_named(args, says):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {says}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_huge_value_is_shortened_in_the_middle(tmp_path):
    """A 5,000-character path is one readable line: its start and its end (the file's
    name), with the number of characters left out."""
    path = str(tmp_path / ("x" * 5000)) + ".toml"
    result = CliRunner().invoke(main, ["plan", "--model", path])
    line = result.stderr.strip()
    assert result.exit_code == 2 and len(line.splitlines()) == 1
    assert len(line) < 400 and line.startswith(f"error: {tmp_path}")
    assert "characters)...xxx" in line and "x.toml: cannot be read" in line


def test_debug_shows_the_traceback(broken_command, monkeypatch):
    monkeypatch.setenv("FUGAKUPERF_DEBUG", "1")
    result = CliRunner().invoke(main, [broken_command])
    assert isinstance(result.exception, KeyError)


def test_usage_errors_name_the_option_in_one_line():
    result = CliRunner().invoke(main, ["simulate", "--params", "13e9", "--jitter", "nan"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --jitter: must be a finite number, got nan")
    assert len(result.stderr.strip().splitlines()) == 1


def _raise_in_worker(context, item):
    if item == 3:
        raise SpecError("nodes", f"no layout on {item} nodes")
    return item


def test_a_workers_spec_error_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("FUGAKUPERF_WORKERS", "2")
    with pytest.raises(SpecError, match="^nodes: no layout on 3 nodes$"):
        parallel.map_items(_raise_in_worker, [1, 2, 3, 4], context=None)


def test_workers_end_with_their_parent(tmp_path):
    """A parent killed with -9 while its pool works leaves no worker behind."""
    pids = tmp_path / "pids"
    code = f"""
import os, time
os.environ["FUGAKUPERF_WORKERS"] = "2"
from perfmodel import parallel
def work(context, item):
    with open({str(pids)!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(60)
parallel.map_items(work, [1, 2], context=None)
"""
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not pids.exists() or
                                           len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in workers if _alive(p)]
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                    # a zombie waiting for its (new) parent is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
