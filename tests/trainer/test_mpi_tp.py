"""Tensor parallelism under a real ``mpiexec``: TP2, TP4 and TP2 x DP2 train what one
rank trains.

Every rank initialises the whole model and keeps its part; the row-parallel outputs,
the embedding and the input gradients of the column-parallel GEMMs are summed over the
TP group, the cross-entropy over its vocabulary slices; checkpoints hold the whole
model. So after the same steps the parameters and AdamW's moments equal the one-rank
run's, up to the order of float32 sums (measured: 1.6e-6 at most on parameters of
order 1).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "trainer" / "data" / "corpus.txt"
TINY = ["--layers", "2", "--hidden", "32", "--heads", "4", "--seq", "32"]
RUN = ["--data", str(CORPUS), "--steps", "3", "--micro-batch", "2", "--global-batch", "8",
       "--threads", "1"]

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def train(prefix: list[str], *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [*prefix, sys.executable, "-m", "fugakuperf", "train", *TINY, *RUN, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def state(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].copy() for k in ("params", "m", "v")}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    run = train([], "--checkpoint-dir", str(d))
    assert run.returncode == 0, run.stderr
    return state(d / "step_00000003.npz")


@pytest.mark.parametrize("ranks, tp", [(2, 2), (4, 4), (4, 2)])
def test_tensor_parallel_ranks_train_what_one_rank_trains(one_rank, mpiexec, tmp_path, ranks, tp):
    record = tmp_path / "run.json"
    run = train([mpiexec, "-n", str(ranks)], "--tp", str(tp), "--checkpoint-dir",
                str(tmp_path), "--measurements", str(record))
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    mine = state(tmp_path / "step_00000003.npz")
    for key in ("params", "m", "v"):
        np.testing.assert_allclose(mine[key], one_rank[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # every rank's record has its TP all-reduces (forward and backward, every layer)
    for part in json.loads(record.read_text())["ranks"]:
        kernels = {k["kernel"]: k["calls"] for k in part["kernels"]}
        assert kernels.get("tp_allreduce", 0) > 0, kernels


def test_a_tensor_parallel_run_resumes_exactly(mpiexec, tmp_path):
    """Two steps and a resume for the third give bit for bit the three steps' state."""
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    tp = [mpiexec, "-n", "2"]
    assert train(tp, "--tp", "2", "--checkpoint-dir", str(straight)).returncode == 0
    first = train(tp, "--tp", "2", "--checkpoint-dir", str(parts), "--checkpoint-every", "1",
                  "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    second = train(tp, "--tp", "2", "--checkpoint-dir", str(parts), "--resume", str(parts))
    assert second.returncode == 0, second.stderr
    a, b = state(straight / "step_00000003.npz"), state(parts / "step_00000003.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("ranks, extra, says", [
    (2, ["--tp", "3"], "tp: 3 tensor-parallel ranks must divide the 2 ranks"),
    (2, ["--tp", "2", "--heads", "1"], "tp: 2 ranks cannot split"),
])
def test_a_layout_that_cannot_run_is_one_line(mpiexec, ranks, extra, says):
    run = train([mpiexec, "-n", str(ranks)], *extra)
    assert run.returncode == 2
    assert says in run.stderr and "Traceback" not in run.stderr, run.stderr
