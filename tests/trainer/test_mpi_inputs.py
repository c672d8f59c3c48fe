"""Under ``mpiexec``, a bad input on one rank stops every rank with one clear line, and
ranks that read different data are refused (instead of one rank waiting forever in
the first all-reduce, or the ranks silently training on different corpora)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "trainer" / "data" / "corpus.txt"
TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--seq", "16", "--steps", "2",
        "--micro-batch", "2", "--global-batch", "4", "--threads", "1"]

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def two_ranks(mpiexec, data0, data1) -> subprocess.CompletedProcess:
    """Rank 0 and rank 1 given different --data (MPMD: one launcher, two command lines)."""
    cmd = [mpiexec]
    for i, data in enumerate((data0, data1)):
        cmd += [*([":"] if i else []), "-n", "1", sys.executable, "-m", "fugakuperf", "train",
                *TINY, "--data", str(data)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_a_bad_input_on_one_rank_stops_every_rank(tmp_path, mpiexec):
    missing = tmp_path / "only-rank-0-has-the-data.txt"
    done = two_ranks(mpiexec, CORPUS, missing)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: data: ") and missing.name in errors[0]
    assert "(on rank 1)" in errors[0] and "Traceback" not in done.stderr


def test_ranks_that_read_different_data_are_refused(tmp_path, mpiexec):
    other = tmp_path / "other.txt"
    other.write_bytes(CORPUS.read_bytes()[:-1000])
    done = two_ranks(mpiexec, CORPUS, other)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: mpi: rank 1 has data 6206:")
    assert ", rank 0 has 7206:" in errors[0]
