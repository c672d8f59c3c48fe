"""Running a sweep: the same bytes whatever the workers, a killed run resumed to the same
bytes, another sweep's results refused, and mpiexec's ranks as the workers."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from fpcore.errors import SpecError
from perfmodel.sweep import read_sweep
from perfmodel.sweep_run import CHUNK, read_results, run

SWEEP = """
[sweep]
system = "fugaku"
nodes = 96

[vary]
fp16_tflops = [13.5168, 27, 54]
memory_gib = [32, 64]
link_bandwidth_gbs = [6.8, 13.6, 27.2]

[[models]]
params = 1e9
tokens = 20e9
precision = ["fp32", "fp16"]

[[models]]
params = 3e9
precision = "fp16"
"""


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "s.toml"
    path.write_text(SWEEP)
    return str(path)


@pytest.fixture(scope="module")
def reference(sweep_file, tmp_path_factory):
    """The sweep run through in this process: its results file's bytes."""
    out = tmp_path_factory.mktemp("ref") / "r.jsonl"
    records = run(read_sweep(sweep_file), str(out))
    assert len(records) == 18 > 2 * CHUNK
    return out.read_bytes()


def test_a_pool_of_workers_writes_the_same_bytes(sweep_file, reference, tmp_path):
    out = tmp_path / "r.jsonl"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        run(read_sweep(sweep_file), str(out), executor=pool)
    assert out.read_bytes() == reference


@pytest.mark.parametrize("points", [3, CHUNK, CHUNK + 1])
def test_a_run_cut_anywhere_resumes_to_the_same_bytes(sweep_file, reference, tmp_path, points):
    lines = reference.splitlines(keepends=True)
    out = tmp_path / "r.jsonl"
    # a header, some whole points and half of the next, as a kill mid-write leaves it
    out.write_bytes(b"".join(lines[:1 + points]) + lines[1 + points][:40])
    header, records, end = read_results(str(out), read_sweep(sweep_file))
    assert len(records) == points and end < out.stat().st_size
    run(read_sweep(sweep_file), str(out))
    assert out.read_bytes() == reference


def test_a_finished_run_does_nothing_more(sweep_file, reference, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(reference)
    assert len(run(read_sweep(sweep_file), str(out))) == 18
    assert out.read_bytes() == reference


def test_another_sweeps_results_are_refused(sweep_file, reference, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(reference)
    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace("[6.8, 13.6, 27.2]", "[6.8, 13.6]"))
    with pytest.raises(SpecError, match="another sweep.*--restart"):
        run(read_sweep(str(other)), str(out))
    assert out.read_bytes() == reference          # nothing lost
    run(read_sweep(str(other)), str(out), restart=True)
    assert len(out.read_bytes().splitlines()) == 1 + 12


def test_a_file_that_is_not_results_is_refused(sweep_file, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("hello\n")
    with pytest.raises(SpecError, match="not a results file"):
        run(read_sweep(sweep_file), str(out))
    assert out.read_text() == "hello\n"


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "fugakuperf", "sweep", *args]


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_same_bytes(tmp_path):
    # nine chunks, so that the kill lands while some are still running
    sweep_file = tmp_path / "long.toml"
    sweep_file.write_text(SWEEP.replace("memory_gib = [32, 64]", "memory_gib = [32, 48, 64, 96]"))
    sweep_file = str(sweep_file)
    total = read_sweep(sweep_file).points
    assert total == 36 and total > 4 * CHUNK
    run(read_sweep(sweep_file), str(tmp_path / "ref.jsonl"))
    reference = (tmp_path / "ref.jsonl").read_bytes()
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "FUGAKUPERF_WORKERS": "2"}
    proc = subprocess.Popen(_cli(sweep_file, "--out", str(out), "--quiet"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 1 + 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)              # the command and its workers
    proc.wait()
    written = out.read_bytes().count(b"\n") - 1
    assert 2 <= written < total, "the kill should land mid-sweep"
    done = subprocess.run(_cli(sweep_file, "--out", str(out), "--quiet"), env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == reference


@pytest.mark.mpi
@pytest.mark.slow
def test_mpiexec_ranks_write_the_same_bytes(mpiexec, sweep_file, reference, tmp_path):
    out = tmp_path / "r.jsonl"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([mpiexec, "-n", "2", *_cli(sweep_file, "--out", str(out))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "on 2 MPI ranks" in done.stderr
    assert out.read_bytes() == reference
