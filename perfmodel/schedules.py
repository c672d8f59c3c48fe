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
* ZB-H1 and ZB-H2 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism"): the backward
  split into B, the input gradient the previous stage waits for, and W, the weight
  gradients nobody waits for, which fill the bubble. Their bubbles with equal F, B
  and W are a third of 1F1B's and (inside each stage) none. They run only when pinned:
  none of the presets' frameworks (Megatron-LM, DeepSpeed, DeepSpeedFugaku) runs them.

Adding a schedule is one ``ScheduleSpec`` in ``SCHEDULES`` (and, if its steps are of
a new kind, that kind in ``STEP_KINDS`` and the simulator's handler for it). An
unknown name is an error naming the known ones, in every consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from fpcore.errors import SpecError


@dataclass(frozen=True)
class Step:
    kind: str          # a key of STEP_KINDS: "F", "B" or "W"
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
    forward: bool        # runs a chunk's forward (else a part of its backward)
    weights_only: bool = False   # the weight gradients alone, after the step that sent on


STEP_KINDS = {k.name: k for k in (
    StepKind("F", "F (forward)", "#4C72B0", forward=True),
    # in a schedule with W steps, B is the input gradient alone (Qi et al. 2023)
    StepKind("B", "B (backward)", "#DD8452", forward=False),
    StepKind("W", "W (weight gradients)", "#937860", forward=False, weights_only=True),
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


def zero_bubble(p: int, m: int, stage: int, k: int) -> list[Step]:
    """Qi et al. 2023's handcrafted zero-bubble orders (Sec. 2.1-2.2, Figure 3), with
    the backward split into B (the input gradient, sent on at once) and W (the weight
    gradients, which only the stage itself needs). Stage i runs m + k (p - 1) slots;
    slot x runs F_x, then B_{x - k (p - 1 - i)}, then W_{x - k (p - 1)}, each where
    its micro-batch exists. ZB-H1 (k = 1) keeps 1F1B's warm-up and delays stage i's
    W's by i slots, so that every stage holds at most p micro-batches, as 1F1B's first
    stage does; ZB-H2 (k = 2) runs 2 (p - 1 - i) + 1 forwards before its first B and
    holds up to 2p - 1."""
    steps = []
    for x in range(m + k * (p - 1)):
        for kind, j in (("F", x), ("B", x - k * (p - 1 - stage)), ("W", x - k * (p - 1))):
            if 0 <= j < m:
                steps.append(Step(kind, j))
    return steps


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class ScheduleSpec:
    """Everything about one pipeline schedule that any part of the model needs.

    ``steps(p, m, v, stage)``: the stage's ordered steps. ``in_flight(layers, p, m, v,
    stage)``: the layer-micro-batches stage ``stage`` holds at its peak, from the
    ``layers`` of one stage. ``fill(f, b, wgrad, p, m, v)``: what a stage whose micro-batch
    takes ``f`` forward and ``b`` backward (``wgrad`` of it weight gradients) adds to
    the pipeline's fill and drain, in the makespan ``m max(f + b) + sum(fill) -
    fill(the slowest)`` (Narayanan et al. 2021: f + b for 1F1B, (f + b) / v
    interleaved; Qi et al. 2023 for the zero-bubble ones); ``drain(f, b, wgrad, p, m, v)``
    how much earlier than the stage before it such a stage finishes its last
    backward (negative: later). ``min_micro_batches(p)``: the fewest micro-batches per
    pipeline the schedule's order is made for.
    ``virtual``: runs v >= 2 chunks per stage (v is 1 otherwise). ``min_pp``: the
    least pipeline depth the split needs; ``framework_min_pp`` the least a framework
    runs. ``groups_of_pp``: micro-batches per pipeline must be a multiple of pp.
    ``searched``: the planner proposes it (others run only when pinned).
    """

    name: str
    description: str
    steps: Callable[[int, int, int, int], list[Step]]
    in_flight: Callable[[float, int, int, int, int], float]
    fill: Callable[[float, float, float, int, int, int], float]
    drain: Callable[[float, float, float, int, int, int], float]
    min_micro_batches: Callable[[int], int] = lambda p: 1
    micro_batch_rule: str = ""
    kinds: tuple[str, ...] = ("F", "B")
    virtual: bool = False
    min_pp: int = 1
    framework_min_pp: int = 1
    framework_rule: str = ""
    groups_of_pp: bool = False
    searched: bool = True

    @property
    def split(self) -> bool:
        """Whether the backward runs as two steps, B (input gradient) and W (weights)."""
        return "W" in self.kinds

    def describe(self, v: int) -> str:
        """How a layout's schedule reads in prose ("interleaved with 4 virtual stages")."""
        return f"{self.name} with {v} virtual stages" if self.virtual else self.name


def _whole(f: float, b: float, wgrad: float, p: int, m: int, v: int) -> float:
    return f + b                               # fill of whole stages


def _chunks(f: float, b: float, wgrad: float, p: int, m: int, v: int) -> float:
    return (f + b) / v                         # of one chunk of v


def _backward(f: float, b: float, wgrad: float, p: int, m: int, v: int) -> float:
    return b / v                               # drain: the backwards, chunk by chunk


@lru_cache(maxsize=4096)
def held_at_peak(name: str, p: int, m: int, v: int, stage: int) -> int:
    """The chunk-micro-batches whose activations ``stage`` holds at its peak, counted
    from schedule ``name``'s steps: each forward keeps one until the step that computes
    its weight gradients (its W, or its B where the backward is not split) frees it."""
    spec = get(name)
    frees = "W" if spec.split else "B"
    held = peak = 0
    for step in spec.steps(p, m, v, stage):
        held += 1 if step.kind == "F" else -1 if step.kind == frees else 0
        peak = max(peak, held)
    return peak


def _counted(name: str):
    """An ``in_flight`` that counts the schedule's own steps (``held_at_peak``)."""
    return lambda layers, p, m, v, stage: layers / v * held_at_peak(name, p, m, v, stage)


# What the zero-bubble schedules share: the split backward, a pipeline to split it in,
# and no search (none of the presets' frameworks runs them; pin one to ask).
_ZERO_BUBBLE = dict(kinds=("F", "B", "W"), min_pp=2, framework_min_pp=2, searched=False,
                    framework_rule="a zero-bubble schedule fills a pipeline's bubble")

SCHEDULES = {s.name: s for s in (
    ScheduleSpec(
        name="gpipe", description="every forward, then every backward (Huang et al. 2019)",
        steps=lambda p, m, v, stage: gpipe(p, m, stage),
        in_flight=lambda layers, p, m, v, stage: layers * m,          # every micro-batch
        fill=_whole, drain=_backward, searched=False),
    ScheduleSpec(
        name="1f1b", description="1F1B: warm-up forwards, then one forward and one backward "
                                 "in turn (Narayanan et al. 2021, PipeDream-Flush)",
        steps=lambda p, m, v, stage: one_f_one_b(p, m, stage),
        in_flight=lambda layers, p, m, v, stage: layers * min(p - stage, m),
        fill=_whole, drain=_backward),
    ScheduleSpec(
        name="interleaved",
        description="Megatron-LM's interleaved 1F1B: v chunks of layers per stage "
                    "(Narayanan et al. 2021 Sec. 2.2.2)",
        steps=interleaved,
        # its warm-up chunks plus one, of layers / v each (Megatron-LM's schedule); for
        # the first stage l (1 + (p - 1) / (p v)) (Korthikanti et al. 2022)
        in_flight=lambda layers, p, m, v, stage:
            layers / v * min(2 * (p - stage - 1) + (v - 1) * p + 1, m * v),
        fill=_chunks, drain=_backward, virtual=True, min_pp=2, framework_min_pp=3,
        framework_rule="Megatron-LM interleaves pipelines of more than two stages",
        groups_of_pp=True),
    ScheduleSpec(
        name="zb-h1",
        description="zero-bubble ZB-H1: 1F1B's order with the backward split into the "
                    "input gradient (B), sent on at once, and the weight gradients (W), "
                    "delayed to fill the bubble (Qi et al. 2023)",
        steps=lambda p, m, v, stage: zero_bubble(p, m, stage, 1),
        in_flight=_counted("zb-h1"),
        # Qi et al. 2023 Table 2: the bubble (p - 1)(T_F + T_B - T_W), T_B the input
        # gradient (b - wgrad here), while T_B >= T_W; never less than the first
        # forward's way down, (p - 1) T_F. With m < p micro-batches only m - 1 W's
        # fill it: (p - 1)(T_F + T_B) - (m - 1) T_W. Its stages end T_B - T_W apart.
        fill=lambda f, b, wgrad, p, m, v:
            f + max(0.0, b - wgrad - wgrad * min(1.0, (m - 1) / max(1, p - 1))),
        drain=lambda f, b, wgrad, p, m, v: max(0.0, b - 2 * wgrad),
        **_ZERO_BUBBLE),
    ScheduleSpec(
        name="zb-h2",
        description="zero-bubble ZB-H2: ZB-H1 with twice the warm-up forwards and the "
                    "W's reordered at the tail; up to 2p - 1 micro-batches in flight "
                    "(Qi et al. 2023)",
        steps=lambda p, m, v, stage: zero_bubble(p, m, stage, 2),
        in_flight=_counted("zb-h2"),
        # Qi et al. 2023 Table 2: the bubble inside each stage (p - 1)(T_F + T_B - 2 T_W),
        # zero when the three are equal; with a synchronous optimizer step the stages'
        # start-up, (p - 1) T_F, stays (the paper removes it by post-validation, which
        # no stack modelled here runs). Its stages end T_B - 2 T_W apart, the later
        # ones up to T_F later.
        fill=lambda f, b, wgrad, p, m, v: f + max(0.0, b - 3 * wgrad),
        drain=lambda f, b, wgrad, p, m, v: max(-f, b - 3 * wgrad),
        min_micro_batches=lambda p: 2 * p - 1,
        micro_batch_rule="Qi et al. 2023's ZB-H2 runs 2p - 1 forwards before the first "
                         "stage's first backward",
        **_ZERO_BUBBLE),
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
    if STEP_KINDS[step.kind].weights_only:
        return None                    # its B, which ran earlier on this stage
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
    if STEP_KINDS[step.kind].weights_only:
        return None                    # the weight gradients stay on the stage
    virtual = step.chunk * p + stage
    nxt = virtual + 1 if STEP_KINDS[step.kind].forward else virtual - 1
    if not 0 <= nxt < p * v:
        return None
    return nxt % p, Step(step.kind, step.micro_batch, nxt // p)
