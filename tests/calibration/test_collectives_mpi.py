"""measure_collectives under a real ``mpiexec -n 2``, and a fit of what it measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.collectives import fit_collectives, quick_sizes, round_size
from topologies.fitted import FITTED_OPS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import json
from mpi4py import MPI
from calibration.collectives import measure_collectives, quick_sizes
rows = measure_collectives(MPI.COMM_WORLD, sizes=quick_sizes(), repeat=2)
if MPI.COMM_WORLD.Get_rank() == 0:
    print(json.dumps(rows))
"""

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def test_two_ranks_measure_every_operation_at_every_size(mpiexec):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", SCRIPT], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    lines = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 1, run.stdout                  # rank 0 alone prints
    rows = json.loads(lines[0])

    sizes = [round_size(s, 2) for s in quick_sizes()]
    assert sorted((r["op"], r["bytes"]) for r in rows) == sorted(
        (op, b) for op in FITTED_OPS for b in sizes)
    for r in rows:
        assert r["kind"] == "collective" and r["ranks"] == 2, r
        assert r["seconds"] > 0, r

    fits = fit_collectives(rows)
    assert set(fits) == set(FITTED_OPS)
    for op, f in fits.items():
        assert f["status"] > 0, (op, f)
        assert f["alpha_s"] > 0 and f["bandwidth_bytes_per_s"] > 0, (op, f)


def test_calibrate_with_a_model_measures_its_own_messages(mpiexec, tmp_path):
    """Under mpiexec, ``calibrate --model`` also times the collectives at the model's TP
    all-reduce and pipeline-send sizes (measure.message_sizes), besides the sweep."""
    from calibration.measure import message_sizes
    from perfmodel.presets import load_model
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "cal.json"
    run = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "fugakuperf", "calibrate",
                          "--quick", "--model", "gpt3-125m", "--allow-contention", "--threads",
                          "1", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    rows = [m for m in json.loads(out.read_text())["measurements"] if m["kind"] == "collective"]
    model = message_sizes(load_model("gpt3-125m"), quick=True)
    assert model and all(size not in quick_sizes() for size in model)
    for op in ("allreduce", "p2p"):
        measured = {r["bytes"] for r in rows if r["op"] == op}
        assert {round_size(size, 2) for size in model} <= measured, (op, sorted(measured))
