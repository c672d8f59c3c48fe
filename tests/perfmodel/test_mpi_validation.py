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
    ("allreduce", 4194304.0),   # -44% until MPI's reduction arithmetic was modelled
])
def test_within_target(key):
    row = RESULTS[key]
    assert abs(row["error"]) <= TARGET, row


def test_the_latency_row_is_the_preset_input_and_matches_exactly():
    # the MPI latency parameter is this measurement (a calibration input, not a test)
    assert RESULTS[("pingpong_latency", 0.0)]["error"] == pytest.approx(0.0, abs=1e-12)


def test_the_large_allreduce_pays_for_its_reduction_arithmetic():
    # each rank reduces (n-1)/n of the 4 MiB at one core's share of a CMG's STREAM
    # (207.69 GB/s / 12): 3 arrays moved per reduced byte
    row = RESULTS[("allreduce", 4194304.0)]
    arithmetic = 3 * 4194304 * (1535 / 1536) / (207.69e9 / 12) * 1e3      # ms
    without = fugaku_mpi_validation(_without_reduction_cost())
    other = {(r["test"], r["bytes"]): r for r in without}[("allreduce", 4194304.0)]
    assert row["predicted"] - other["predicted"] == pytest.approx(arithmetic, rel=0.02)
    assert other["error"] < -0.4        # the miss it explains


def _without_reduction_cost():
    import dataclasses
    system = load_system()
    return dataclasses.replace(system, node=dataclasses.replace(system.node, reduce_bandwidth=0.0))
