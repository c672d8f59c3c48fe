"""The memory a training run will allocate, checked against what the machine has
before anything is allocated.

The trainer holds, per rank (FP32, no sharding): the parameters, their gradients and
AdamW's two moments (4 flat buffers of P values), the activations of one micro-batch
(trainer.gpt.activation_shapes) and the backward pass's temporaries
(trainer.gpt.backward_scratch_elements). Initialisation draws one tensor at a time in
float64 (12 bytes per element with its cast) before the gradients and moments exist,
so it never sets the peak. Ranks on one node share its memory.

What the machine has is ``MemAvailable`` (/proc/meminfo: free memory plus what the
kernel can reclaim without swapping), capped by the cgroup's limit when the process
runs in one (a container or a batch job), else the free pages that ``sysconf`` reports.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec

from .gpt import activation_shapes, backward_scratch_elements
from .params import WHOLE, Stage, parameter_shapes

CGROUP = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Need:
    """Bytes one rank allocates, by part."""

    parts: dict

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """The parts, largest first."""
        parts = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {gb(n)}" for name, n in parts if n)


def gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e7 else f"{n / 1e6:,.2f} MB"


def training_need(model: ModelSpec, micro_batch: int, itemsize: int = 4,
                  optimizer: bool = True, global_batch: int = 0, tp: int = 1,
                  stage: Stage = WHOLE, in_flight: int = 1, chunks: int = 1) -> Need:
    """Bytes a rank allocates to train ``model`` with ``micro_batch`` sequences per pass
    and ``global_batch`` per step (the sampler draws every start position of a step at
    once, 8 bytes each); ``optimizer=False``: to run the forward pass only, as
    generation does. With ``tp``, one TP rank's part; of a pipeline ``stage``
    (``model.layers`` its layers, in ``chunks`` chunks), holding ``in_flight`` chunks'
    activations (each with its own backward buffers: a stage sends a gradient from them
    while it runs the next micro-batch's backward)."""
    shapes = parameter_shapes(model, tp, stage)
    P = sum(math.prod(s) for _, s in shapes)
    B, T = micro_batch, model.seq
    held = model.replace(layers=model.layers // chunks)     # the layers of one slot
    acts = in_flight * sum(math.prod(s) for s in activation_shapes(held, B, T, tp,
                                                                    stage).values())
    parts = {"parameters": P * itemsize}
    if optimizer:
        parts |= {"gradients": P * itemsize, "AdamW state": 2 * P * itemsize,
                  "activations": acts * itemsize,
                  "backward temporaries": in_flight * backward_scratch_elements(model, B, T, tp)
                  * itemsize,
                  "batch positions": 8 * global_batch}
    else:
        parts["activations"] = acts * itemsize
    return Need(parts)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024          # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The cgroup (v2) limit minus its current use, when the process runs under a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        rel = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        folder = os.path.join(CGROUP, rel.lstrip("/"))
        with open(os.path.join(folder, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(folder, "memory.current")) as f:
            current = int(f.read().strip())
        return max(0, int(limit) - current)
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process can still allocate, where that figure comes from); None when
    the machine does not say."""
    found = []
    meminfo = _meminfo_available()
    if meminfo is not None:
        found.append((meminfo, "MemAvailable in /proc/meminfo"))
    else:
        try:
            found.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),
                          "free pages (sysconf)"))
        except (ValueError, OSError, AttributeError):
            pass
    room = _cgroup_room()
    if room is not None:
        found.append((room, "the cgroup's memory limit"))
    if not found:
        return None, "unknown"
    return min(found)


def check_fits(need: Need, what: str, ranks_here: int = 1, field: str = "memory",
               hint: str = "") -> None:
    """Refuse, with need against what is available, when ``need`` (per rank, times the
    ranks on this node) exceeds the memory this machine has."""
    have, source = available_bytes()
    total = need.total * ranks_here
    if have is None or total <= have:
        return
    per = f" per rank, {gb(total)} for the {ranks_here} ranks on this node" \
        if ranks_here > 1 else ""
    raise SpecError(field, f"{what} needs {gb(need.total)}{per} ({need.describe()}); this "
                           f"machine has {gb(have)} available ({source}){hint}")
