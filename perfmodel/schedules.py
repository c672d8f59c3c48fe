"""Pipeline schedules, each described once: the registry every consumer reads.

A schedule is, for each pipeline stage, a list of ``Step(kind, micro_batch, chunk)``:
the ordered work of that stage. The simulator executes these lists; nothing else in
them is implicit. Chunk c of stage i holds layers of virtual stage ``c * p + i`` (in a
V, ``virtual_stage``; mirrored, DualPipe, chunk c is a whole stage of direction c).
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
* DeepSeek's DualPipeV (a V of 2p stages on p devices) and DualPipe (two pipelines of
  the same p stages in opposite directions, every rank holding two stages' weights),
  their forwards and backwards paired and the backward split at the ends (DeepSeek-V3
  report Sec. 3.2.1, deepseek-ai/DualPipe); pinned only, as the zero-bubble ones.

Adding a schedule is one ``ScheduleSpec`` in ``SCHEDULES`` (and, if its steps are of
a new kind, that kind in ``STEP_KINDS`` and the simulator's handler for it). An
unknown name is an error naming the known ones, in every consumer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from fpcore.errors import SpecError


@dataclass(frozen=True)
class Step:
    kind: str          # a key of STEP_KINDS: "F", "B" or "W"
    micro_batch: int
    chunk: int = 0
    # paired with the next step (DualPipe's overlapped forward and backward): it starts
    # only once both have their inputs
    paired: bool = False
    # a B that runs its weight gradients too, in a schedule that otherwise splits them
    # off into W's (DualPipe's whole backward chunks): its gradient leaves at its end
    whole: bool = False

    def __str__(self) -> str:
        return (("BW" if self.whole else self.kind) + str(self.micro_batch)
                + (f".{self.chunk}" if self.chunk else ""))


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


def dualpipe_v(p: int, m: int, stage: int) -> list[Step]:
    """DualPipeV on ``p`` devices (DeepSeek-AI's DualPipe, "cut in half": deepseek-ai/
    DualPipe dualpipe/dualpipev.py; the bubble and memory of DeepSeek-V3's report,
    Table 2): a V of 2p stages, device i holding stage i on the way down (chunk 0) and
    stage 2p - 1 - i on the way back (chunk 1), all m >= 2p micro-batches entering at
    device 0. Its eight phases on device i (r = p - i - 1):

    1. 2r forwards of chunk 0;
    2. i + 1 pairs of forwards (chunk 0, chunk 1);
    3. r of (B of chunk 1, a W, F of chunk 1);
    4. m - 2p + i + 1 of (F chunk 0 with a whole backward of chunk 1, F chunk 1 with a
       whole backward of chunk 0): pairs DualPipe overlaps, so each starts once both
       have their inputs (``Step.paired``), run one after the other here;
    5. r of (whole backward chunk 1, F chunk 1 with a whole backward chunk 0);
    6. i + 1 of (backward chunk 1, backward chunk 0), B split from W from the middle
       one on;
    7. r of (a W, B of chunk 0);
    8. i + 1 W's.

    A split B leaves its W in a queue the W's take the oldest of; a whole backward
    (``Step.whole``) runs both and sends its gradient at its end. Each chunk's
    forwards and backwards run in micro-batch order."""
    steps: list[Step] = []
    nxt = {("F", 0): 0, ("F", 1): 0, ("B", 0): 0, ("B", 1): 0}
    queued: list[Step] = []

    def f(chunk: int, paired: bool = False) -> None:
        steps.append(Step("F", nxt["F", chunk], chunk, paired))
        nxt["F", chunk] += 1

    def b(chunk: int, split: bool) -> None:
        j = nxt["B", chunk]
        nxt["B", chunk] += 1
        steps.append(Step("B", j, chunk, whole=not split))
        if split:
            queued.append(Step("W", j, chunk))

    def w() -> None:
        steps.append(queued.pop(0))

    rest = p - stage - 1
    for _ in range(2 * rest):
        f(0)
    for _ in range(stage + 1):
        f(0), f(1)
    for _ in range(rest):
        b(1, True), w(), f(1)
    for k in range(m - 2 * p + stage + 1):
        # (on the last device the first pair is not overlapped, as dualpipev.py runs it)
        f(0, paired=not (k == 0 and stage == p - 1)), b(1, False)
        f(1, paired=True), b(0, False)
    for _ in range(rest):
        b(1, False), f(1, paired=True), b(0, False)
    half = (stage + 1) // 2          # the pair from which the B's are split
    for k in range(stage + 1):
        b(1, k > half or (k == half and stage % 2 == 1))
        b(0, k >= half)
    for _ in range(rest):
        w(), b(0, True)
    for _ in range(stage + 1):
        w()
    return steps


def dual_pipe(p: int, m: int, stage: int) -> list[Step]:
    """DeepSeek's DualPipe on ``p`` (even) ranks (deepseek-ai/DualPipe dualpipe/
    dualpipe.py; DeepSeek-V3 report Sec. 3.2.1): two pipelines of the same p stages run
    in opposite directions, half of the m micro-batches entering at rank 0 (chunk 0,
    whose stage i is on rank i) and half at rank p - 1 (chunk 1, whose stage i is on
    rank p - 1 - i), so every rank holds two stages' weights. Rank r runs the eight
    phases of DualPipeV (``dualpipe_v``) as its "half rank" min(r, p - 1 - r) of p / 2
    would with m / 2 micro-batches, its phase 0 the direction entering at its own end
    of the pipeline: chunk 0 on the first half of the ranks, chunk 1 on the second
    (dualpipe.py flips the phases of the second half, ``phase ^= is_in_second_half``).
    Micro-batch j of chunk c is the j-th of that direction."""
    steps = dualpipe_v(p // 2, m // 2, min(stage, p - 1 - stage))
    if stage < p // 2:
        return steps
    return [dataclasses.replace(step, chunk=1 - step.chunk) for step in steps]


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
    runs, and ``overlapped_min_pp`` (0: the same) the least where the stack overlaps
    its pipeline sends with compute (``least_pp``). ``groups_of_pp``: micro-batches
    per pipeline must be a multiple of pp.
    ``searched``: the planner proposes it (others run only when pinned).
    ``v_shape``: a virtual schedule whose second chunk runs back up the stages
    (``virtual_stage``), which puts the head on the first stage; ``chunks``: the
    chunks per stage it runs (0: any v >= 2).
    """

    name: str
    description: str
    steps: Callable[[int, int, int, int], list[Step]]
    in_flight: Callable[[float, int, int, int, int], float]
    fill: Callable[[float, float, float, int, int, int], float]
    drain: Callable[[float, float, float, int, int, int], float]
    min_micro_batches: Callable[[int], int] = lambda p: 1
    micro_batch_rule: str = ""
    v_shape: bool = False      # chunk 1 runs back up the stages (perfmodel.virtual_stage)
    # two pipelines of the same stages in opposite directions (DualPipe): chunk c of rank
    # i is stage i of direction 0, or stage p - 1 - i of direction 1, each a whole
    # stage's layers; the micro-batches split between the directions
    mirrored: bool = False
    chunks: int = 0            # a virtual schedule's fixed chunks per stage (0: any v >= 2)
    kinds: tuple[str, ...] = ("F", "B")
    virtual: bool = False
    min_pp: int = 1
    framework_min_pp: int = 1
    framework_rule: str = ""
    overlapped_min_pp: int = 0
    groups_of_pp: bool = False
    searched: bool = True

    def least_pp(self, overlap_p2p: bool = False) -> int:
        """The least pipeline depth a framework runs it on (``overlap_p2p``: the
        stack overlaps its pipeline sends with compute)."""
        return self.overlapped_min_pp if overlap_p2p and self.overlapped_min_pp \
            else self.framework_min_pp

    @property
    def split(self) -> bool:
        """Whether the backward runs as two steps, B (input gradient) and W (weights)."""
        return "W" in self.kinds

    def head_stage(self, p: int) -> int:
        """The stage holding the last virtual stage (the head and the loss; mirrored,
        the first rank holds the other direction's)."""
        return 0 if self.v_shape else p - 1

    def layer_chunks(self, v: int) -> int:
        """How many parts a stage's layers are cut into, one a chunk: v, or 1 where each
        chunk is a whole stage (mirrored)."""
        return 1 if self.mirrored else v

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
        held += 1 if step.kind == "F" else -1 if step.kind == frees or step.whole else 0
        peak = max(peak, held)
    return peak


def _counted(name: str):
    """An ``in_flight`` that counts the schedule's own steps (``held_at_peak``), each
    chunk a part of the stage's layers (``ScheduleSpec.layer_chunks``)."""
    return lambda layers, p, m, v, stage: (layers / get(name).layer_chunks(v)
                                           * held_at_peak(name, p, m, v, stage))


# What the zero-bubble schedules share: the split backward, a pipeline to split it in,
# and no search (none of the presets' frameworks runs them; pin one to ask).
_ZERO_BUBBLE = dict(kinds=("F", "B", "W"), min_pp=2, framework_min_pp=2, searched=False,
                    framework_rule="a zero-bubble schedule fills a pipeline's bubble")
# What DeepSeek's two share: two chunks a rank, the split backward, at least twice as
# many micro-batches as ranks, and no search (pin one to ask)
_DUALPIPE = dict(virtual=True, chunks=2, kinds=("F", "B", "W"), min_pp=2, framework_min_pp=2,
                 searched=False, min_micro_batches=lambda p: 2 * p)

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
        # Megatron-Core, megatron/training/arguments.py: with --overlap-p2p-communication
        # pp > 1, else pp > 2 (perfmodel.layout.framework_error)
        overlapped_min_pp=2, groups_of_pp=True),
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
    ScheduleSpec(
        name="dualpipev",
        description="DeepSeek's DualPipeV: a V of 2p stages on p devices, forwards and "
                    "backwards of both chunks paired and the backward split into B and W "
                    "at the ends (deepseek-ai/DualPipe; DeepSeek-V3 report Sec. 3.2.1)",
        steps=lambda p, m, v, stage: dualpipe_v(p, m, stage),
        in_flight=_counted("dualpipev"),
        # DeepSeek-V3 report Table 2 (the DualPipe README's DualPipeV row): the bubble
        # (PP/2 - 1)(F&B + B - 3W) of PP = 2p stages, per chunk, B a whole backward and
        # F&B a forward and a backward overlapped, here run one after the other
        # (F&B = F + B): (p - 1)(F + 2B - 3W), half a stage's f + 2b - 3w per stage,
        # exact with equal F, B and W; as the simulator runs the order, never less than
        # two chunk forwards, f, per stage. Its stages end B - W apart (B the input
        # gradient: half of b - 2 wgrad).
        fill=lambda f, b, wgrad, p, m, v: max(f, (f + 2 * b - 3 * wgrad) / 2),
        drain=lambda f, b, wgrad, p, m, v: max(0.0, (b - 2 * wgrad) / 2),
        micro_batch_rule="deepseek-ai/DualPipe dualpipev.py needs at least twice as many "
                         "micro-batches as devices",
        v_shape=True, framework_rule="DualPipeV runs its V over at least two devices",
        **_DUALPIPE),
    ScheduleSpec(
        name="dualpipe",
        description="DeepSeek's DualPipe: two pipelines of the same stages in opposite "
                    "directions, half the micro-batches entering at each end, so every "
                    "rank holds two stages' weights (each copy's gradients summed with its "
                    "mirror's); forwards and backwards paired and the backward split into "
                    "B and W at the ends (deepseek-ai/DualPipe; DeepSeek-V3 report Sec. "
                    "3.2.1)",
        steps=lambda p, m, v, stage: dual_pipe(p, m, stage),
        # each chunk a whole stage's layers, PP + 1 of them at the peak (Table 2)
        in_flight=_counted("dualpipe"),
        # DeepSeek-V3 report Table 2 (the DualPipe README's DualPipe row): the bubble
        # (PP/2 - 1)(F&B + B - 3W) of PP = p ranks, per chunk (a whole stage here), B a
        # whole backward and F&B a forward and a backward overlapped, run one after the
        # other here (F&B = F + B): (p/2 - 1)(f + 2b - 3w), shared by the p - 1 fills;
        # exact with equal F, B and W; as the simulator runs the order, never less than
        # two forwards, 2f, a step of p/2 - 1. Its two ends finish last, together, the
        # middle ranks up to B - W earlier: the ends' time for all (no drain).
        fill=lambda f, b, wgrad, p, m, v:
            (p / 2 - 1) * max(2 * f, f + 2 * b - 3 * wgrad) / (p - 1),
        drain=lambda f, b, wgrad, p, m, v: 0.0,
        micro_batch_rule="deepseek-ai/DualPipe dualpipe.py needs an even number of "
                         "micro-batches, at least twice as many as ranks",
        mirrored=True,
        framework_rule="DualPipe runs its two directions over an even number of ranks",
        **_DUALPIPE),
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


def virtual_stage(stage: int, chunk: int, p: int, v_shape: bool = False) -> int:
    """The virtual stage (the place in the model's order of layers) chunk ``chunk`` of
    ``stage`` holds: c p + i when interleaved; in a V (DualPipeV) the second chunk runs
    back up the stages, so stage i holds virtual stages i and 2p - 1 - i."""
    if v_shape:
        return stage if chunk == 0 else 2 * p - 1 - stage
    return chunk * p + stage


def stage_chunk(virtual: int, p: int, v_shape: bool = False) -> tuple[int, int]:
    """(stage, chunk) of virtual stage ``virtual`` (the inverse of ``virtual_stage``)."""
    if v_shape:
        return (virtual, 0) if virtual < p else (2 * p - 1 - virtual, 1)
    return virtual % p, virtual // p


def _mirrored_neighbour(step: Step, stage: int, p: int, upstream: bool) -> int | None:
    """The rank before (``upstream``) or after ``stage`` on ``step``'s direction of a
    mirrored schedule (chunk 0 runs up the ranks, chunk 1 down), or None at its end."""
    towards = (-1 if upstream else 1) * (1 if step.chunk == 0 else -1)
    nxt = stage + towards
    return nxt if 0 <= nxt < p else None


def producer(step: Step, stage: int, p: int, v: int,
             v_shape: bool = False, mirrored: bool = False) -> tuple[int, Step] | None:
    """The (stage, step) whose output ``step`` on ``stage`` needs, or None.

    A forward needs the previous virtual stage's forward of the same micro-batch; a
    backward needs the next virtual stage's backward (or, on the very last
    virtual stage, its own forward, which the stage ran earlier). ``mirrored``: the
    same along the step's own direction (``dual_pipe``)."""
    if STEP_KINDS[step.kind].weights_only:
        return None                    # its B, which ran earlier on this stage
    if mirrored:
        at = _mirrored_neighbour(step, stage, p, upstream=STEP_KINDS[step.kind].forward)
        return None if at is None else (at, Step(step.kind, step.micro_batch, step.chunk))
    virtual = virtual_stage(stage, step.chunk, p, v_shape)
    if STEP_KINDS[step.kind].forward:
        if virtual == 0:
            return None
        at, chunk = stage_chunk(virtual - 1, p, v_shape)
        return at, Step("F", step.micro_batch, chunk)
    if virtual == p * v - 1:
        return None
    at, chunk = stage_chunk(virtual + 1, p, v_shape)
    return at, Step("B", step.micro_batch, chunk)


def consumed_by(step: Step, stage: int, p: int, v: int,
                v_shape: bool = False, mirrored: bool = False) -> tuple[int, Step] | None:
    """The (stage, step) that needs this step's output, or None: a forward feeds the
    next virtual stage's forward of the same micro-batch, a backward the previous one's
    backward (the mirror of ``producer``)."""
    if STEP_KINDS[step.kind].weights_only:
        return None                    # the weight gradients stay on the stage
    if mirrored:
        at = _mirrored_neighbour(step, stage, p, upstream=not STEP_KINDS[step.kind].forward)
        return None if at is None else (at, Step(step.kind, step.micro_batch, step.chunk))
    virtual = virtual_stage(stage, step.chunk, p, v_shape)
    nxt = virtual + 1 if STEP_KINDS[step.kind].forward else virtual - 1
    if not 0 <= nxt < p * v:
        return None
    at, chunk = stage_chunk(nxt, p, v_shape)
    return at, Step(step.kind, step.micro_batch, chunk)
