"""Data parallelism under a real ``mpiexec``: 2 ranks train what 1 rank trains.

The sampler gives rank r of w its contiguous share of each step's global batch and the
gradients are summed across ranks, so a 2-rank run and a 1-rank run with the same
global batch take the same steps (up to float summation order).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from trainer_runs import train

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def load(path: Path) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as z:
        return z["params"].copy(), json.loads(bytes(z["meta"]).decode("utf-8"))


def test_two_ranks_train_what_one_rank_trains(tmp_path, mpiexec):
    d1, d2 = tmp_path / "D1", tmp_path / "D2"
    one = train([], "--checkpoint-dir", str(d1))
    assert one.returncode == 0, one.stderr
    record = tmp_path / "run.json"
    two = train([mpiexec, "-n", "2"], "--checkpoint-dir", str(d2), "--measurements",
                str(record))
    assert two.returncode == 0, f"stdout:\n{two.stdout}\nstderr:\n{two.stderr}"
    # the record holds every rank's timers, its gradient all-reduce among them
    ranks = json.loads(record.read_text())["ranks"]
    assert [part["rank"] for part in ranks] == [0, 1]
    for part in ranks:
        kernels = {k["kernel"] for k in part["kernels"]}
        assert {"attention_forward", "matmul_backward", "allreduce"} <= kernels, kernels
        assert len(part["step_seconds"]) == 3

    assert "1 rank(s)" in one.stdout + one.stderr
    assert "2 rank(s)" in two.stdout + two.stderr

    # Only rank 0 prints and writes.
    done = [line for line in two.stdout.splitlines() if line.startswith("done:")]
    assert len(done) == 1, two.stdout
    assert done[0].startswith("done: step 3")
    assert (two.stdout + two.stderr).count("training custom:") == 1
    assert sorted(p.name for p in d2.iterdir()) == ["step_00000003.npz"]

    p1, meta1 = load(d1 / "step_00000003.npz")
    p2, meta2 = load(d2 / "step_00000003.npz")
    # Computed by different worlds, with the same run otherwise...
    assert (meta1["settings"]["world"], meta2["settings"]["world"]) == (1, 2)
    assert meta1["settings"]["global_batch"] == meta2["settings"]["global_batch"] == 8
    assert meta1["step"] == meta2["step"] == 3
    # ...to the same parameters (up to the order of the gradient sums).
    np.testing.assert_allclose(p2, p1, rtol=1e-5, atol=1e-6)
    # Training moved them (runs that did nothing would agree trivially).
    from perfmodel.model import ModelSpec
    from trainer.params import initialize
    start = initialize(ModelSpec(**meta1["model"]), seed=0).buffer
    assert start.shape == p1.shape
    assert np.abs(p1 - start).max() > 1e-4
