"""Job allocation on the 6D Tofu torus, checked against brute force and docs/facts.md rows."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.allocation import (MAX_MACHINE_NODES, TOFU_WRAP, AllocationError, JobAllocation,
                                   MachineShape, allocate, diameter, divisors, parse_shape,
                                   wrap_for)

FUGAKU = MachineShape()
FUGAKU_LLM = (24, 2, 24, 2, 3, 2)          # node=48x6x48:torus, 13,824 nodes


def reference_best(nodes, machine=FUGAKU):
    """Brute force over every box, with the diameter written out as a closed form:
    X, Y, Z rings (n//2) + a mesh of 2 (1) + b ring of 3 (1) + c mesh of 2 (1)."""
    units, step = nodes // 12, (4 if nodes > 384 else 1)
    mx, my, mz = machine.shape[:3]
    boxes = [(x, y, z) for x in range(1, mx + 1) for y in range(1, my + 1)
             for z in range(1, mz + 1) if x * y * z == units and z % step == 0]
    if not boxes:
        return None
    key = lambda b: (b[0] // 2 + b[1] // 2 + b[2] // 2 + 3,
                     b[0] * b[1] + b[1] * b[2] + b[2] * b[0], -b[0], -b[1])
    return min(boxes, key=key), min(map(key, boxes))[0]


def check_allocation(nodes, job):
    x, y, z, a, b, c = job.shape
    assert job.nodes == nodes == math.prod(job.shape)
    assert (a, b, c) == (2, 3, 2)
    assert x <= 24 and y <= 23 and z <= 24
    if nodes > 384:
        assert z % 4 == 0
    best, best_diameter = reference_best(nodes)
    assert diameter(job.shape, TOFU_WRAP) == best_diameter
    assert job.shape[:3] == best


# --- JobAllocation and MachineShape -------------------------------------------------------

def test_fugaku_llm_job_describes_itself():
    job = JobAllocation(FUGAKU_LLM)
    assert job.nodes == 13_824 and job.virtual == (48, 6, 48)
    assert job.axes == ("X", "Y", "Z", "a", "b", "c")
    assert job.describe() == "24x2x24x2x3x2 (virtual 48x6x48, 13,824 nodes)"


@pytest.mark.parametrize("shape", [(1, 2, 3), (0, 1, 1, 2, 3, 2), (1.5, 1, 1, 2, 3, 2)])
def test_job_allocation_rejects_bad_shapes(shape):
    with pytest.raises(AllocationError) as e:
        JobAllocation(shape)
    assert e.value.field == "shape"


def test_fugaku_machine_defaults_match_facts():
    assert FUGAKU.nodes == 158_976
    assert FUGAKU.unit_nodes == 12 and FUGAKU.large_unit_nodes == 48


@pytest.mark.parametrize("kwargs, field", [
    ({"unit": (2, 3, 1)}, "unit"),
    ({"unit_nodes": 6}, "unit_nodes"),
    ({"large_threshold": 100}, "large_threshold"),
    ({"large_unit_z": 0}, "large_unit_z"),
    ({"shape": (24, 23, 24)}, "shape"),
])
def test_machine_shape_errors_name_the_field(kwargs, field):
    with pytest.raises(AllocationError) as e:
        MachineShape(**kwargs)
    assert e.value.field == field and str(e.value).startswith(f"{field}: ")


def test_diameter_closed_forms():
    assert diameter(FUGAKU.shape, TOFU_WRAP) == 12 + 11 + 12 + 1 + 1 + 1
    assert diameter((5, 4), (False, False)) == 4 + 3
    assert diameter((5, 4), (True, True)) == 2 + 2
    assert diameter((1, 2), (True, False)) == 0 + 1


# --- allocate -----------------------------------------------------------------------------

def test_one_unit_is_one_tofu_unit():
    assert allocate(12).shape == (1, 1, 1, 2, 3, 2)


@pytest.mark.parametrize("nodes", [12, 96, 384, 432, 1536, 6912, 13_824, 158_976])
def test_allocate_is_the_most_compact_feasible_box(nodes):
    check_allocation(nodes, allocate(nodes))


def test_whole_machine_is_the_machine():
    assert allocate(FUGAKU.nodes).shape == FUGAKU.shape


def test_rule_for_13824_is_more_compact_than_fugaku_llm_shape():
    """The compactness model does not reproduce Fugaku-LLM's 24x2x24 box (diameter 28);
    it picks 12x12x8 (diameter 19). Users who know the shape give it to parse_shape."""
    job = allocate(13_824)
    assert job.shape == (12, 12, 8, 2, 3, 2)
    assert diameter(job.shape, TOFU_WRAP) < diameter(FUGAKU_LLM, TOFU_WRAP)


def test_custom_machine():
    small = MachineShape(shape=(4, 4, 4, 2, 3, 2), large_threshold=48)
    assert allocate(768, small).shape == (4, 4, 4, 2, 3, 2)
    with pytest.raises(AllocationError, match="more than the machine's 768"):
        allocate(816, small)


def test_off_unit_count_suggests_neighbours_in_48_node_units():
    with pytest.raises(AllocationError) as e:
        allocate(390)
    assert e.value.field == "nodes"
    assert "48-node units" in str(e.value) and "384 and 432" in str(e.value)


def test_off_unit_count_below_threshold_uses_12_node_units():
    with pytest.raises(AllocationError, match=r"12-node .* 360 and 372"):
        allocate(370)


@pytest.mark.parametrize("nodes, words", [
    (0, "must be positive"), (-12, "must be positive"),
    (200_000, "more than the machine's 158,976"),
    (348, "no box"),                              # 29 units: a prime above 24
    (12.0, "integer"), (True, "integer"),
])
def test_allocate_errors_name_nodes(nodes, words):
    with pytest.raises(AllocationError, match=words) as e:
        allocate(nodes)
    assert e.value.field == "nodes"


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.integers(1, 32).map(lambda k: 12 * k),
                 st.integers(9, 20_000 // 48).map(lambda k: 48 * k)))
def test_allocate_fits_or_refuses(nodes):
    try:
        job = allocate(nodes)
    except AllocationError as e:
        assert e.field == "nodes"
        assert reference_best(nodes) is None
    else:
        check_allocation(nodes, job)


def brute_force_box(nodes, machine):
    """The split allocate chooses, by trying every X and Y (the search before divisors)."""
    units, step = nodes // machine.unit_nodes, (machine.large_unit_z
                                                if nodes > machine.large_threshold else 1)
    mx, my, mz = machine.shape[:3]
    best = None
    for x in range(1, mx + 1):
        for y in range(1, my + 1):
            if units % (x * y) or units // (x * y) > mz or units // (x * y) % step:
                continue
            z = units // (x * y)
            shape = (x, y, z, *machine.unit)
            key = (diameter(shape, TOFU_WRAP), x * y + y * z + z * x, -x, -y)
            best = min(best or (key, shape), (key, shape))
    return best and best[1]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 30), st.integers(1, 300))
def test_the_divisor_search_finds_the_brute_force_box(mx, my, mz, units):
    machine = MachineShape(shape=(mx, my, mz, 2, 3, 2), large_threshold=48)
    nodes = 12 * units
    if nodes > machine.nodes or (nodes > 48 and nodes % 48):
        return
    expected = brute_force_box(nodes, machine)
    if expected is None:
        with pytest.raises(AllocationError):
            allocate(nodes, machine)
    else:
        assert allocate(nodes, machine).shape == expected


def test_divisors():
    assert divisors(1) == [1]
    assert divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert divisors(97) == [1, 97]


def test_a_machine_too_large_to_model_is_refused():
    """10^6 along X, Y and Z: the old search over X x Y never ended."""
    with pytest.raises(AllocationError) as e:
        MachineShape(shape=(10**6, 10**6, 10**6, 2, 3, 2))
    assert e.value.field == "shape" and f"{MAX_MACHINE_NODES:,}" in str(e.value)


def test_a_long_row_of_units_allocates_by_divisors():
    """80,000 x 1 x 1 Tofu units (960,000 nodes): X has 80,000 values to try, a prime
    number of units one split."""
    row = MachineShape(shape=(80_000, 1, 1, 2, 3, 2), large_threshold=0, large_unit_z=1)
    assert allocate(12 * 79_999, row).shape[:3] == (79_999, 1, 1)
    assert allocate(row.nodes, row).shape == row.shape


# --- parse_shape --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["48x6x48:torus", "48x6x48", "24x2x24x2x3x2",
                                  " 48 X 6 X 48 ", "48x6x48 : TORUS"])
def test_parse_fugaku_llm_shape(text):
    job = parse_shape(text)
    assert job.shape == FUGAKU_LLM and job.nodes == 13_824


def test_parse_round_trips_allocate():
    for nodes in (12, 384, 1536, 6912, 13_824):
        job = allocate(nodes)
        assert parse_shape(job.describe().split()[0]) == job
        assert parse_shape("x".join(map(str, job.virtual))) == job


@pytest.mark.parametrize("text, words", [
    ("48x7x48", r"virtual Y \(7\) must be a multiple of b \(3\)"),
    ("47x6x48", r"virtual X \(47\) must be a multiple of a \(2\)"),
    ("48x6", "2 sizes .* allowed: 3 .* or 6"),
    ("1x2x3x4", "4 sizes"),
    ("axbxc", "not sizes separated by 'x'"),
    ("0x6x48", "not sizes"),
    ("25x2x24x2x3x2", r"X \(25\) exceeds the machine's X \(24\)"),
    ("2x2x2x2x3x1", r"\(a, b, c\) = \(2, 3, 1\) must equal"),
    ("48x6x48:mesh", "mode 'mesh' is not supported"),
    ("48x6x46", "multiple of 4"),                 # 552 nodes, Z = 23: not in 48-node units
    (48, "expected a string"),
    ("0x0x0", "not sizes"),
    ("99999999999x2x2", "at most 8 digits"),
    ("2x3x\u00b2", "not sizes"),                  # superscript two: a digit, not 0-9
    ("2x3x\u0664", "not sizes"),                  # Arabic-Indic four
    ("2x3x" + "9" * 5000, "characters long"),
])
def test_parse_errors_name_shape(text, words):
    with pytest.raises(AllocationError, match=words) as e:
        parse_shape(text)
    assert e.value.field == "shape"


# --- wrap_for -----------------------------------------------------------------------------

def test_torus_job_sees_rings_on_xyz():
    job = parse_shape("24x6x16")                  # 12x2x8: part of every machine axis
    assert wrap_for(job) == TOFU_WRAP
    assert wrap_for(job, job_torus=False) == (False, False, False, False, True, False)


def test_job_spanning_an_axis_wraps_without_torus_mode():
    job = JobAllocation((24, 2, 12, 2, 3, 2))
    assert wrap_for(job, job_torus=False) == (True, False, False, False, True, False)


def test_axes_of_one_node_never_wrap_and_machine_wrap_is_respected():
    assert wrap_for(allocate(12)) == (False, False, False, False, True, False)
    job = JobAllocation(FUGAKU_LLM)
    assert wrap_for(job, machine_wrap=(False,) * 6) == (False,) * 6
    assert wrap_for(job, machine_wrap=(True,) * 6) == (True,) * 6


def test_wrap_for_rejects_bad_machine_wrap():
    with pytest.raises(AllocationError) as e:
        wrap_for(JobAllocation(FUGAKU_LLM), machine_wrap=(True, True, True))
    assert e.value.field == "machine_wrap"
