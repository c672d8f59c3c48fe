"""Training precisions, each described once: the registry every consumer reads.

A precision fixes the bytes of an activation element, the bytes per parameter of
the model states, what the optimizer step moves, and the node peak the GEMMs run
at (the node's ``flops_per_cycle_per_core`` entry of the same name). An unknown
name is an error naming the known ones.

* fp32: weights, gradients and activations in 4 bytes, Adam's m and v in 4 bytes
  each (16 bytes of states per parameter; Fugaku-LLM trained so, A64FX having no
  BF16).
* fp16 / bf16 mixed precision (Micikevicius et al. 2018; Narayanan et al. 2021):
  2-byte weight copies and activations, fp32 gradients (accumulated and reduced in
  4 bytes), fp32 master weights with Adam's m and v (12 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from fpcore.errors import SpecError

# Gradients are reduced in fp32 (fp32 training; fp32 accumulation in mixed precision).
GRAD_BYTES = 4


@dataclass(frozen=True)
class PrecisionSpec:
    name: str
    activation_bytes: int                   # one activation element
    state_bytes: tuple[int, int, int]       # per parameter: weights, gradients, optimizer
    # Bytes the optimizer step moves per local parameter: Adam reads weight, gradient, m
    # and v and writes weight, m and v (7 x 4 B); gradient clipping reads the gradients
    # once more (4 B); mixed precision also writes the 2-byte weight copy (2 B).
    optimizer_bytes: int
    mixed: bool                             # fp32 master weights beside 2-byte copies


PRECISION_SPECS = {p.name: p for p in (
    PrecisionSpec("fp32", activation_bytes=4, state_bytes=(4, 4, 8), optimizer_bytes=32,
                  mixed=False),
    PrecisionSpec("fp16", activation_bytes=2, state_bytes=(2, 4, 12), optimizer_bytes=34,
                  mixed=True),
    PrecisionSpec("bf16", activation_bytes=2, state_bytes=(2, 4, 12), optimizer_bytes=34,
                  mixed=True),
)}
PRECISIONS = tuple(PRECISION_SPECS)

# The per-precision tables the cost and memory models index (derived, never edited).
ACT_BYTES = {p.name: p.activation_bytes for p in PRECISION_SPECS.values()}
STATE_BYTES = {p.name: p.state_bytes for p in PRECISION_SPECS.values()}
OPTIMIZER_BYTES = {p.name: p.optimizer_bytes for p in PRECISION_SPECS.values()}


def get(name: str, field: str = "precision") -> PrecisionSpec:
    """The precision called ``name``; any other name is a SpecError naming the known ones."""
    spec = PRECISION_SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise SpecError(field, f"must be one of {', '.join(PRECISIONS)}; got {name!r}")
    return spec
