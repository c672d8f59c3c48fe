"""The network model against RIKEN's MPI measurements on Fugaku (target: within 25%)."""

import pytest

from perfmodel.system import load_system
from perfmodel.validation import fugaku_mpi_rows, fugaku_mpi_validation

TARGET = 0.25
RESULTS = {(r["test"], r["bytes"]): r for r in fugaku_mpi_validation(load_system())}


def test_every_row_of_the_shipped_table_is_predicted():
    assert len(RESULTS) == len(fugaku_mpi_rows()) == 5


@pytest.mark.parametrize("key", [
    ("pingpong_latency", 0.0),
    ("pingpong_throughput", 4194304.0),
    ("allreduce", 8.0),
    ("barrier", 0.0),
    pytest.param(("allreduce", 4194304.0), marks=pytest.mark.xfail(strict=True, reason=(
        "predicted 1.13 ms with the torus (multi-dimensional) algorithm vs 2.02 ms measured "
        "(-44%): the model assumes the library runs the cheapest algorithm it knows; the "
        "algorithm Fujitsu MPI ran at this size is not published (rank-order rings, the "
        "next cheapest, predict 2.82 ms, +40%)"))),
])
def test_within_target(key):
    row = RESULTS[key]
    assert abs(row["error"]) <= TARGET, row


def test_the_latency_row_is_the_preset_input_and_matches_exactly():
    # the MPI latency parameter is this measurement (a calibration input, not a test)
    assert RESULTS[("pingpong_latency", 0.0)]["error"] == pytest.approx(0.0, abs=1e-12)
