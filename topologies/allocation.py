"""Which part of the 6D Tofu torus a job gets: node counts and shapes -> (X, Y, Z, a, b, c).

Facts (docs/facts.md, "Tofu interconnect D"): a x b x c = 2 x 3 x 2 is the 12-node Tofu
unit (Ajima et al. 2012); Fugaku is 24 x 23 x 24 x 2 x 3 x 2 = 158,976 nodes; torus jobs
are allocated in 12-node units and jobs over 384 nodes in 48-node units of 2 x 3 x 8
virtual nodes (RIKEN user guide); the user names a virtual shape (X*a) x (Y*b) x (Z*c),
e.g. Fugaku-LLM's ``node=48x6x48:torus`` = physical 24x2x24x2x3x2, 13,824 nodes.

``allocate`` is a *model* of the scheduler's choice: the real policy is not published.
It picks the most compact box (see ``allocate``). When the real shape is known, give it
to ``parse_shape`` instead.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import ClassVar

from fpcore.errors import SpecError

AXES = ("X", "Y", "Z", "a", "b", "c")
# Wrap of Fugaku's axes: X, Y, Z rings; classic Tofu a, c 2-long meshes, b a 3-ring
# (docs/facts.md: unconfirmed for Fugaku, hence a parameter).
TOFU_WRAP = (True, True, True, False, True, False)
# The most nodes a machine may have: 6 x Fugaku's 158,976 (docs/facts.md, Tofu D rows), above
# any machine built. It bounds the work of every search over a machine's boxes and of
# pricing a collective over the whole machine.
MAX_MACHINE_NODES = 1_000_000


class AllocationError(SpecError):
    """A node count, shape or machine that cannot be allocated; ``field`` names the input."""


def _positive_ints(field: str, values, length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in values):
        raise AllocationError(field, f"expected {length} positive integers, got {values!r}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class JobAllocation:
    """A job's physical box on the torus: sizes along X, Y, Z, a, b, c."""

    shape: tuple[int, int, int, int, int, int]
    axes: ClassVar[tuple[str, ...]] = AXES

    def __post_init__(self):
        object.__setattr__(self, "shape", _positive_ints("shape", self.shape, 6))

    @property
    def nodes(self) -> int:
        return math.prod(self.shape)

    @property
    def virtual(self) -> tuple[int, int, int]:
        """The 3D shape the user sees: (X*a, Y*b, Z*c)."""
        x, y, z, a, b, c = self.shape
        return (x * a, y * b, z * c)

    def describe(self) -> str:
        return (f"{'x'.join(map(str, self.shape))} "
                f"(virtual {'x'.join(map(str, self.virtual))}, {self.nodes:,} nodes)")


@dataclass(frozen=True)
class MachineShape:
    """The whole torus and its allocation units. Defaults are Fugaku (docs/facts.md, Tofu D rows):
    shape 24x23x24x2x3x2 (node count + coordinate tool), unit a x b x c = 2x3x2 = 12 nodes
    (Ajima et al.), 48-node units (2x3x8 virtual = 4 Tofu units along Z) above 384 nodes
    (RIKEN user guide)."""

    shape: tuple[int, int, int, int, int, int] = (24, 23, 24, 2, 3, 2)
    unit: tuple[int, int, int] = (2, 3, 2)
    unit_nodes: int = 12
    large_threshold: int = 384
    large_unit_z: int = 4

    def __post_init__(self):
        object.__setattr__(self, "shape", _positive_ints("shape", self.shape, 6))
        object.__setattr__(self, "unit", _positive_ints("unit", self.unit, 3))
        if self.unit != self.shape[3:]:
            raise AllocationError("unit", f"{self.unit} must equal the machine's (a, b, c) "
                                          f"{self.shape[3:]}")
        if self.unit_nodes != math.prod(self.unit):
            raise AllocationError("unit_nodes", f"{self.unit_nodes} must be a*b*c = "
                                                f"{math.prod(self.unit)}")
        if math.prod(self.shape) > MAX_MACHINE_NODES:
            raise AllocationError("shape", f"{'x'.join(map(str, self.shape))} is "
                                           f"{math.prod(self.shape):,} nodes; at most "
                                           f"{MAX_MACHINE_NODES:,} are modelled")
        if (not isinstance(self.large_threshold, numbers.Integral)
                or isinstance(self.large_threshold, bool) or self.large_threshold < 0):
            raise AllocationError("large_threshold", f"expected an integer >= 0 (0: every "
                                                     f"job in large units), got "
                                                     f"{self.large_threshold!r}")
        _positive_ints("large_unit_z", (self.large_unit_z,), 1)
        if self.large_threshold % self.unit_nodes:
            raise AllocationError("large_threshold", f"{self.large_threshold} must be a "
                                  f"multiple of unit_nodes ({self.unit_nodes})")

    @property
    def nodes(self) -> int:
        return math.prod(self.shape)

    @property
    def large_unit_nodes(self) -> int:
        return self.unit_nodes * self.large_unit_z


def diameter(sizes, wraps) -> int:
    """Hop diameter of a torus/mesh product: a ring of n has n//2, a mesh of n has n-1."""
    return sum(n // 2 if w else n - 1 for n, w in zip(sizes, wraps, strict=True))


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` >= 1 in increasing order (trial division up to sqrt n)."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def _valid_neighbours(n: int, m: MachineShape) -> list[int]:
    """The nearest valid node counts below and above n (by unit size only)."""
    u, big, thr = m.unit_nodes, m.large_unit_nodes, m.large_threshold
    lo = max(n // big * big, thr) if n > thr else n // u * u
    hi = -(-n // u) * u if -(-n // u) * u <= thr else -(-n // big) * big
    return [c for c in (lo, hi) if 0 < c <= m.nodes]


def allocate(nodes: int, machine: MachineShape = MachineShape()) -> JobAllocation:
    """Model of the box the scheduler gives a torus job of ``nodes`` nodes.

    Units U = nodes / unit_nodes split as X*Y*Z = U inside the machine (Z a multiple of
    ``large_unit_z`` above ``large_threshold``); the most compact split wins: smallest hop
    diameter with X, Y, Z rings and the machine's a, b, c wrap (TOFU_WRAP), then smallest
    surface XY + YZ + ZX, then larger X, then larger Y. This is an assumption, not the
    published policy (there is none); pass a known shape to ``parse_shape`` instead.
    """
    if not isinstance(nodes, numbers.Integral) or isinstance(nodes, bool):
        raise AllocationError("nodes", f"expected an integer node count, got {nodes!r}")
    m, n = machine, int(nodes)
    if n <= 0:
        raise AllocationError("nodes", f"{n} must be positive (a multiple of {m.unit_nodes})")
    if n > m.nodes:
        raise AllocationError("nodes", f"{n:,} is more than the machine's {m.nodes:,} nodes")
    large = n > m.large_threshold
    unit = m.large_unit_nodes if large else m.unit_nodes
    if n % unit:
        rule = (f"jobs over {m.large_threshold} nodes are allocated in {unit}-node units"
                if large else f"torus jobs are allocated in {unit}-node Tofu units")
        near = " and ".join(map(str, _valid_neighbours(n, m)))
        raise AllocationError("nodes", f"{n} is not a multiple of {unit} ({rule}); "
                                       f"nearest valid counts: {near}")
    units, (mx, my, mz) = n // m.unit_nodes, m.shape[:3]
    step = m.large_unit_z if large else 1
    best = None
    factors = divisors(units)        # X and Y divide the units: O(sqrt(units)), not X * Y
    for x in factors:
        if x > mx:
            break
        for y in factors:
            if y > my:
                break
            if units % (x * y) or not (z := units // (x * y)) <= mz or z % step:
                continue
            shape = (x, y, z, *m.unit)
            key = (diameter(shape, TOFU_WRAP), x * y + y * z + z * x, -x, -y)
            if best is None or key < best[0]:
                best = (key, shape)
    if best is None:
        rule = f", Z a multiple of {step}" if large else ""
        raise AllocationError("nodes", f"{n} = {units} Tofu units has no split X*Y*Z with "
                                       f"X <= {mx}, Y <= {my}, Z <= {mz}{rule}; no box "
                                       "of this size fits the machine")
    return JobAllocation(best[1])


_SHAPE = re.compile(r"^(.*?)(?::(\w*))?$")
_MAX_SIZE_DIGITS = 8                            # any axis of a modelled machine fits
_SIZE = re.compile(f"[0-9]{{1,{_MAX_SIZE_DIGITS}}}")
_MAX_SHAPE_TEXT = 200                           # characters: six sizes and a suffix, spaced


def parse_shape(text: str, machine: MachineShape = MachineShape()) -> JobAllocation:
    """A job shape as the user writes it: physical '24x2x24x2x3x2' or virtual '48x6x48',
    optionally with the ':torus' suffix; separators 'x'/'X' with any whitespace."""
    m, allowed = machine, "e.g. '48x6x48', '48x6x48:torus' or '24x2x24x2x3x2'"
    if not isinstance(text, str):
        raise AllocationError("shape", f"expected a string, {allowed}; got {text!r}")
    if len(text) > _MAX_SHAPE_TEXT:
        raise AllocationError("shape", f"is {len(text):,} characters long; {allowed}")
    body, mode = _SHAPE.match("".join(text.split())).groups()
    if mode is not None and mode.lower() != "torus":
        raise AllocationError("shape", f"mode {mode[:20]!r} is not supported; allowed: ':torus'")
    parts = re.split(r"[xX]", body)
    if not all(_SIZE.fullmatch(p) and int(p) > 0 for p in parts):
        raise AllocationError("shape", f"{text!r} is not sizes separated by 'x' (whole "
                                       f"numbers from 1, at most {_MAX_SIZE_DIGITS} digits "
                                       f"0-9); {allowed}")
    sizes = tuple(map(int, parts))
    if len(sizes) == 3:
        for axis, v, u in zip(AXES[3:], sizes, m.unit):
            if v % u:
                name = {"a": "X", "b": "Y", "c": "Z"}[axis]
                raise AllocationError("shape", f"virtual {name} ({v}) must be a multiple of "
                                               f"{axis} ({u})")
        sizes = (*(v // u for v, u in zip(sizes, m.unit)), *m.unit)
    elif len(sizes) != 6:
        raise AllocationError("shape", f"{len(sizes)} sizes given in {text!r}; allowed: 3 "
                                       "(virtual X*a x Y*b x Z*c) or 6 (physical X x Y x Z "
                                       "x a x b x c)")
    if sizes[3:] != m.unit:
        raise AllocationError("shape", f"physical (a, b, c) = {sizes[3:]} must equal the "
                                       f"Tofu unit {m.unit}")
    for axis, v, top in zip(AXES, sizes, m.shape):
        if v > top:
            raise AllocationError("shape", f"{axis} ({v}) exceeds the machine's {axis} "
                                           f"({top}); allowed 1..{top}")
    job = JobAllocation(sizes)
    if job.nodes > m.large_threshold and sizes[2] % m.large_unit_z:
        raise AllocationError("shape", f"jobs over {m.large_threshold} nodes need Z a multiple"
                                       f" of {m.large_unit_z} (virtual Z*c a multiple of "
                                       f"{m.large_unit_z * m.unit[2]}); got Z = {sizes[2]}")
    return job


def wrap_for(allocation: JobAllocation, machine_wrap=TOFU_WRAP, job_torus: bool = True,
             machine: MachineShape = MachineShape()) -> tuple[bool, ...]:
    """Per-axis wrap (X, Y, Z, a, b, c) of the job's sub-torus.

    An axis wraps if the machine axis wraps and the job spans all of it. With
    ``job_torus=True`` (default, after Fugaku-LLM's ``node=48x6x48:torus`` job shape)
    X, Y, Z are rings whenever the machine axis wraps: torus mode guarantees
    wrap-around links through the rest of the machine. ``machine_wrap`` defaults to
    TOFU_WRAP (a, c meshes, b a ring: classic Tofu, unconfirmed for Fugaku). An axis
    of size 1 has no links and never wraps; a ring of 2 is a double link between the pair.
    """
    wraps = tuple(machine_wrap)
    if len(wraps) != 6 or not all(isinstance(w, bool) for w in wraps):
        raise AllocationError("machine_wrap", f"expected 6 booleans (X..c), got {wraps!r}")
    return tuple(w and n > 1 and (n == top or (job_torus and i < 3))
                 for i, (n, top, w) in enumerate(zip(allocation.shape, machine.shape, wraps)))
