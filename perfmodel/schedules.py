"""Pipeline schedules as plain data: the ordered work of every stage.

A schedule is, for each pipeline stage, a list of ``Step(kind, micro_batch,
chunk)`` with kind "F" (forward) or "B" (backward, including any
recomputation). The simulator executes these lists; nothing else in them is
implicit. Chunk c of stage i holds layers of virtual stage ``c * p + i``.

* GPipe: every forward, then every backward (Huang et al. 2019).
* 1F1B: p - i - 1 warm-up forwards, then one forward and one backward in turn,
  then the remaining backwards (Narayanan et al. 2021, PipeDream-Flush).
* Interleaved 1F1B with v chunks per stage: Megatron-LM's order, with
  2 (p - i - 1) + (v - 1) p warm-up forwards; needs m divisible by p.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    kind: str          # "F" or "B"
    micro_batch: int
    chunk: int = 0

    def __str__(self) -> str:
        return f"{self.kind}{self.micro_batch}" + (f".{self.chunk}" if self.chunk else "")


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


def schedule(name: str, p: int, m: int, v: int = 1) -> list[list[Step]]:
    """The steps of every stage for schedule ``name``."""
    if name == "gpipe":
        return [gpipe(p, m, i) for i in range(p)]
    if name == "1f1b":
        return [one_f_one_b(p, m, i) for i in range(p)]
    if name == "interleaved":
        return [interleaved(p, m, v, i) for i in range(p)]
    raise ValueError(f"schedule: must be gpipe, 1f1b or interleaved; got {name!r}")


def producer(step: Step, stage: int, p: int, v: int) -> tuple[int, Step] | None:
    """The (stage, step) whose output ``step`` on ``stage`` needs, or None.

    A forward needs the previous virtual stage's forward of the same micro-batch; a
    backward needs the next virtual stage's backward (or, on the very last
    virtual stage, its own forward, which the stage ran earlier)."""
    virtual = step.chunk * p + stage
    if step.kind == "F":
        if virtual == 0:
            return None
        prev = virtual - 1
        return prev % p, Step("F", step.micro_batch, prev // p)
    if virtual == p * v - 1:
        return None
    nxt = virtual + 1
    return nxt % p, Step("B", step.micro_batch, nxt // p)
