"""Shared test fixtures."""

import os
import shutil
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mpiexec() -> str:
    """The MPI launcher the project installs (the mpich wheel puts it beside Python);
    missing is a failure, not a skip: CI installs the mpi extra."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        pytest.fail(f"mpiexec not found (next to {sys.executable} or on PATH): install the "
                    "mpi extra, pip install 'fugakuperf[mpi]' (mpi4py and the mpich wheel)")
    return found
