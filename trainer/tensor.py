"""Tensor parallelism in Megatron-LM's form (Shoeybi et al. 2019): which part of every
parameter a rank of a TP group holds, and the group's collectives.

Of t ranks, rank r holds:

* the QKV projection and the MLP's up projection column-parallel: its heads' rows of
  Q, K and V (``qkvw``, ``qkvb``: rows r C/t .. (r+1) C/t of each of the three) and its
  F/t rows of ``fcw``, ``fcb``; its heads' attention runs on them alone;
* the attention output and the MLP's down projection row-parallel: its C/t (F/t)
  columns of ``attprojw`` (``fcprojw``), whose partial products the group sums (an
  all-reduce after each, in the forward; the biases are added once, after it);
* the token embedding vocabulary-parallel: its V/t rows of ``wte`` (and of
  ``lm_head``), so the embedding is a lookup of its own rows and a sum over the group,
  and the logits and the cross-entropy are computed on its vocabulary slice with a max
  and two sums over the group;
* everything else (positions, LayerNorms, the row-parallel biases) whole: each rank
  computes the same values and the same gradients there.

The backward mirrors it: the gradient entering each column-parallel GEMM's input (and
the final LayerNorm's, from the logits) is summed over the group. ``Layout`` maps a
rank's views to and from the whole model's (``take``, ``put``): every rank
initialises the whole model as one rank would and keeps its part, and checkpoints hold
the whole model, so a TP run starts, saves and resumes as a one-rank run does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec

# the views a rank holds a part of, and the axis (after the layer axis) they are cut on
SPLIT = {"wte": 0, "lm_head": 0, "qkvw": 1, "qkvb": 1, "fcw": 1, "fcb": 1,
         "attprojw": 2, "fcprojw": 2}


def check_splits(model: ModelSpec, tp: int) -> None:
    """t must divide the heads, the MLP width and the vocabulary (Megatron-LM pads the
    vocabulary; the reference trainer refuses instead)."""
    for name, value in (("heads", model.heads), ("ffn", model.ffn), ("vocab", model.vocab)):
        if value % tp:
            raise SpecError("tp", f"{tp} ranks cannot split {model.name}'s {name} ({value}) "
                                  f"evenly: TP must divide heads, ffn and vocab")


@dataclass(frozen=True)
class Layout:
    """Rank ``rank`` of a TP group of ``size`` ranks, for ``model``."""

    model: ModelSpec
    size: int = 1
    rank: int = 0

    def index(self, name: str, shape: tuple[int, ...]):
        """The index of this rank's part in the whole view ``name`` of ``shape``."""
        if self.size == 1 or name not in SPLIT:
            return ...
        axis, t, r = SPLIT[name], self.size, self.rank
        length = shape[axis]
        if name in ("qkvw", "qkvb"):                 # r's heads of each of Q, K and V
            C = length // 3
            rows = np.concatenate([np.arange(q * C + r * C // t, q * C + (r + 1) * C // t)
                                   for q in range(3)])
        else:
            rows = np.arange(r * length // t, (r + 1) * length // t)
        return (slice(None),) * axis + (rows,)

    def take(self, name: str, whole: np.ndarray) -> np.ndarray:
        return whole[self.index(name, whole.shape)]

    def put(self, name: str, whole: np.ndarray, part: np.ndarray) -> None:
        whole[self.index(name, whole.shape)] = part


class Group:
    """The collectives a TP group runs, on an mpi4py communicator (None: one rank)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()

    def sum(self, array: np.ndarray, timer=None, what: str = "tp_allreduce") -> None:
        """Sum ``array`` (contiguous) over the group, in place."""
        if self.comm is None:
            return
        from mpi4py import MPI
        if timer is None:
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            return
        with timer(f"{what} {array.nbytes}", bytes_=array.nbytes):
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)

    def vocab_range(self, vocab: int) -> tuple[int, int]:
        """The token ids whose rows of ``wte`` this rank holds."""
        return self.rank * vocab // self.size, (self.rank + 1) * vocab // self.size

    def max(self, array: np.ndarray) -> None:
        if self.comm is not None:
            from mpi4py import MPI
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.MAX)

    def gather(self, array: np.ndarray) -> list[np.ndarray]:
        """Every rank's ``array`` (same shape), in rank order."""
        if self.comm is None:
            return [array]
        out = np.empty((self.size, *array.shape), dtype=array.dtype)
        self.comm.Allgather(np.ascontiguousarray(array), out)
        return list(out)
