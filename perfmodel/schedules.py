"""Pipeline schedules, each described once: the registry every consumer reads.

A schedule is, for each pipeline stage, a list of ``Step(kind, micro_batch, chunk)``:
the ordered work of that stage. The simulator executes these lists; nothing else in
them is implicit. Chunk c of stage i holds layers of virtual stage ``c * p + i``.
Beside its steps (``ScheduleSpec.steps``), a schedule says what the other consumers
need: the layer-micro-batches a stage holds at its peak (perfmodel.memory), how its
pipeline fill and drain divide (perfmodel.estimator's makespan), the layouts it can
run (perfmodel.layout, perfmodel.search) and the kinds of step it uses, each of
which the simulator (perfmodel.des) runs and the plots (reports.plots) draw in its
colour (``STEP_KINDS``).

* GPipe: every forward, then every backward (Huang et al. 2019).
* 1F1B: p - i - 1 warm-up forwards, then one forward and one backward in turn,
  then the remaining backwards (Narayanan et al. 2021, PipeDream-Flush).
* Interleaved 1F1B with v chunks per stage: Megatron-LM's order, with
  2 (p - i - 1) + (v - 1) p warm-up forwards; needs m divisible by p.

Adding a schedule is one ``ScheduleSpec`` in ``SCHEDULES`` (and, if its steps are of
a new kind, that kind in ``STEP_KINDS`` and the simulator's handler for it). An
unknown name is an error naming the known ones, in every consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fpcore.errors import SpecError


@dataclass(frozen=True)
class Step:
    kind: str          # a key of STEP_KINDS: "F" or "B"
    micro_batch: int
    chunk: int = 0

    def __str__(self) -> str:
        return f"{self.kind}{self.micro_batch}" + (f".{self.chunk}" if self.chunk else "")


@dataclass(frozen=True)
class StepKind:
    """One kind of step: what it is, and how the plots show it."""

    name: str
    label: str           # legend text
    colour: str          # plot colour
    forward: bool        # runs a chunk's forward (else its backward, recomputation included)


STEP_KINDS = {k.name: k for k in (
    StepKind("F", "F (forward)", "#4C72B0", forward=True),
    StepKind("B", "B (backward)", "#DD8452", forward=False),
)}


# ------------------------------------------------------------------ the orders
def gpipe(p: int, m: int, stage: int) -> list[Step]:
    return [Step("F", j) for j in range(m)] + [Step("B", j) for j in range(m)]


def one_f_one_b(p: int, m: int, stage: int) -> list[Step]:
    warmup = min(p - stage - 1, m)
    steps = [Step("F", j) for j in range(warmup)]
    for k in range(m - warmup):
        steps += [Step("F", warmup + k), Step("B", k)]
    steps += [Step("B", j) for j in range(m - warmup, m)]
    return steps


def interleaved(p: int, m: int, v: int, stage: int) -> list[Step]:
    """Megatron-LM's interleaved 1F1B (schedules.py, forward_backward_pipelining_with_interleaving)."""
    if m % p:
        raise ValueError(f"interleaved schedule needs micro-batches ({m}) divisible by pp ({p})")
    total = m * v

    def forward(k: int) -> Step:
        chunk = (k // p) % v
        return Step("F", (k // (p * v)) * p + k % p, chunk)

    def backward(k: int) -> Step:
        chunk = v - 1 - (k // p) % v
        return Step("B", (k // (p * v)) * p + k % p, chunk)

    warmup = min(2 * (p - stage - 1) + (v - 1) * p, total)
    steps = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):
        steps += [forward(warmup + k), backward(k)]
    steps += [backward(k) for k in range(total - warmup, total)]
    return steps


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class ScheduleSpec:
    """Everything about one pipeline schedule that any part of the model needs.

    ``steps(p, m, v, stage)``: the stage's ordered steps. ``in_flight(layers, p, m, v,
    stage)``: the layer-micro-batches stage ``stage`` holds at its peak, from the
    ``layers`` of one stage. ``bubble_divisor(v)``: what the pipeline's fill and drain
    (the sum of the other stages' work) is divided by in the makespan
    ``m max(w) + (sum(w) - max(w)) / bubble_divisor`` (Narayanan et al. 2021).
    ``virtual``: runs v >= 2 chunks per stage (v is 1 otherwise). ``min_pp``: the
    least pipeline depth the split needs; ``framework_min_pp`` the least a framework
    runs. ``groups_of_pp``: micro-batches per pipeline must be a multiple of pp.
    ``searched``: the planner proposes it (others run only when pinned).
    """

    name: str
    description: str
    steps: Callable[[int, int, int, int], list[Step]]
    in_flight: Callable[[float, int, int, int, int], float]
    bubble_divisor: Callable[[int], int]
    kinds: tuple[str, ...] = ("F", "B")
    virtual: bool = False
    min_pp: int = 1
    framework_min_pp: int = 1
    framework_rule: str = ""
    groups_of_pp: bool = False
    searched: bool = True

    def describe(self, v: int) -> str:
        """How a layout's schedule reads in prose ("interleaved with 4 virtual stages")."""
        return f"{self.name} with {v} virtual stages" if self.virtual else self.name


def _whole(v: int) -> int:
    return 1                                   # fill and drain of whole stages


SCHEDULES = {s.name: s for s in (
    ScheduleSpec(
        name="gpipe", description="every forward, then every backward (Huang et al. 2019)",
        steps=lambda p, m, v, stage: gpipe(p, m, stage),
        in_flight=lambda layers, p, m, v, stage: layers * m,          # every micro-batch
        bubble_divisor=_whole, searched=False),
    ScheduleSpec(
        name="1f1b", description="1F1B: warm-up forwards, then one forward and one backward "
                                 "in turn (Narayanan et al. 2021, PipeDream-Flush)",
        steps=lambda p, m, v, stage: one_f_one_b(p, m, stage),
        in_flight=lambda layers, p, m, v, stage: layers * min(p - stage, m),
        bubble_divisor=_whole),
    ScheduleSpec(
        name="interleaved",
        description="Megatron-LM's interleaved 1F1B: v chunks of layers per stage "
                    "(Narayanan et al. 2021 Sec. 2.2.2)",
        steps=interleaved,
        # its warm-up chunks plus one, of layers / v each (Megatron-LM's schedule); for
        # the first stage l (1 + (p - 1) / (p v)) (Korthikanti et al. 2022)
        in_flight=lambda layers, p, m, v, stage:
            layers / v * min(2 * (p - stage - 1) + (v - 1) * p + 1, m * v),
        bubble_divisor=lambda v: v, virtual=True, min_pp=2, framework_min_pp=3,
        framework_rule="Megatron-LM interleaves pipelines of more than two stages",
        groups_of_pp=True),
)}


def get(name: str, field: str = "schedule") -> ScheduleSpec:
    """The schedule called ``name``; any other name is a SpecError naming the known ones."""
    spec = SCHEDULES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise SpecError(field, f"must be one of {', '.join(SCHEDULES)}; got {name!r}")
    return spec


def schedule(name: str, p: int, m: int, v: int = 1) -> list[list[Step]]:
    """The steps of every stage for schedule ``name``."""
    spec = get(name)
    return [spec.steps(p, m, v, i) for i in range(p)]


def producer(step: Step, stage: int, p: int, v: int) -> tuple[int, Step] | None:
    """The (stage, step) whose output ``step`` on ``stage`` needs, or None.

    A forward needs the previous virtual stage's forward of the same micro-batch; a
    backward needs the next virtual stage's backward (or, on the very last
    virtual stage, its own forward, which the stage ran earlier)."""
    virtual = step.chunk * p + stage
    if STEP_KINDS[step.kind].forward:
        if virtual == 0:
            return None
        prev = virtual - 1
        return prev % p, Step("F", step.micro_batch, prev // p)
    if virtual == p * v - 1:
        return None
    nxt = virtual + 1
    return nxt % p, Step("B", step.micro_batch, nxt // p)


def consumed_by(step: Step, stage: int, p: int, v: int) -> tuple[int, Step] | None:
    """The (stage, step) that needs this step's output, or None: a forward feeds the
    next virtual stage's forward of the same micro-batch, a backward the previous one's
    backward (the mirror of ``producer``)."""
    virtual = step.chunk * p + stage
    nxt = virtual + 1 if STEP_KINDS[step.kind].forward else virtual - 1
    if not 0 <= nxt < p * v:
        return None
    return nxt % p, Step(step.kind, step.micro_batch, nxt // p)
