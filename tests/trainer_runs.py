"""``fugakuperf train`` as a subprocess, alone or under mpiexec: the tiny run the trainer's
MPI tests compare layouts on."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "trainer" / "data" / "corpus.txt"
TINY = ["--layers", "2", "--hidden", "32", "--heads", "4", "--seq", "32"]
RUN = ["--data", str(CORPUS), "--steps", "3", "--micro-batch", "2", "--global-batch", "8",
       "--threads", "1"]


def train(prefix: list[str], *extra: str) -> subprocess.CompletedProcess:
    """TINY trained for RUN's 3 steps, after ``prefix`` (e.g. [mpiexec, "-n", "2"]) and
    with ``extra`` options (the last of a repeated option wins)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [*prefix, sys.executable, "-m", "fugakuperf", "train", *TINY, *RUN, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
