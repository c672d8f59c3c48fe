"""How frameworks shard data parallelism: the named modes, by family.

A layout's ``zero`` says which model states a rank keeps only a 1/dp shard of (the
ZeRO stages' count: 1 optimizer states, 2 also gradients, 3 also weights); its
software stack's family (``StackSpec.sharding``) says how the framework moves them,
which differs between frameworks at the same stage. Each mode says, per micro-batch
and per iteration, which collectives it runs:

* DeepSpeed ZeRO (Rajbhandari et al. 2020): stage 0 is plain data parallelism (one
  bucketed all-reduce in the last backward); ZeRO-1 reduce-scatters the gradients
  once and all-gathers the updated weights after the step; ZeRO-2 keeps only a
  gradient shard, so it reduce-scatters after every backward, and gathers after the
  step; ZeRO-3 also gathers every layer's weights before its forward and again
  before its backward, every micro-batch, and frees them after.
* Megatron-LM: its DDP all-reduces once; ``--use-distributed-optimizer`` shards the
  optimizer states, reduce-scatters the gradients and all-gathers the updated weights
  (megatron/optimizer/distrib_optimizer.py), as ZeRO-1. It has no stage 2 or 3.
* PyTorch FSDP (torch/distributed/fsdp/api.py, ShardingStrategy): FULL_SHARD
  all-gathers before the forward, reshards, all-gathers again before the backward and
  reduce-scatters the gradients after it, every micro-batch (ZeRO-3's traffic);
  SHARD_GRAD_OP all-gathers before the forward and keeps the weights whole until the
  backward has run, so one gather per micro-batch but the whole stage's weights at the
  peak (gradients and optimizer states sharded: ZeRO-2's memory); NO_SHARD all-reduces
  the gradients after the backward, as DistributedDataParallel. Gradient accumulation
  outside ``no_sync()`` reduces after every backward. HYBRID_SHARD (and
  _HYBRID_SHARD_ZERO2) run FULL_SHARD (SHARD_GRAD_OP) inside a group of the
  data-parallel ranks, by default those of one node, and keep a replica per group:
  the gathers and reduce-scatters stay inside the group, and after each reduce-scatter
  the groups all-reduce their gradient shard (``Layout.shard_ranks``: the group's
  size; 0 shards over all of dp).

Adding a mode is one entry in ``FAMILIES``.

How a framework cuts that traffic is its stack's (perfmodel.parts.StackSpec): the
unit a gathering mode fetches weights in (``GATHER_UNITS``) and how many units ahead
it prefetches, the gradient buckets it reduces in (one per layer, one flat buffer, or
a size), and where its optimizer steps (``OPTIMIZER_PLACES``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fpcore.errors import SpecError, check_choice


@dataclass(frozen=True)
class ShardingMode:
    family: str
    zero: int                   # the states kept as shards at rest, as ZeRO counts them
    name: str                   # the framework's name for it
    label: str                  # in a layout's one-line label ("" for plain DDP)
    gathers: tuple[str, ...]    # the passes of every micro-batch that all-gather the weights
    reduce: str                 # the gradient collective: allreduce or reduce-scatter ...
    per_micro_batch: bool       # ... after every backward, or once, in the last one
    gather_after_step: bool     # the updated weights are all-gathered after the step
    whole_weights: bool         # the stage's weights are whole at the memory peak
    hybrid: str = ""            # its name sharding inside groups, replicas across ("": none)


def _modes(family: str, *modes: tuple) -> dict[int, ShardingMode]:
    return {m[0]: ShardingMode(family, *m) for m in modes}


FAMILIES = {
    "deepspeed": _modes(
        "deepspeed",
        (0, "DDP", "", (), "allreduce", False, False, True),
        (1, "ZeRO-1", "ZeRO-1", (), "reduce-scatter", False, True, True),
        (2, "ZeRO-2", "ZeRO-2", (), "reduce-scatter", True, True, True),
        (3, "ZeRO-3", "ZeRO-3", ("forward", "backward"), "reduce-scatter", True, False, False)),
    "megatron": _modes(
        "megatron",
        (0, "DDP", "", (), "allreduce", False, False, True),
        (1, "distributed optimizer", "dist-opt", (), "reduce-scatter", False, True, True)),
    "fsdp": _modes(
        "fsdp",
        (0, "NO_SHARD", "NO_SHARD", (), "allreduce", True, False, True),
        (2, "SHARD_GRAD_OP", "SHARD_GRAD_OP", ("forward",), "reduce-scatter", True, False, True,
         "_HYBRID_SHARD_ZERO2"),
        (3, "FULL_SHARD", "FULL_SHARD", ("forward", "backward"), "reduce-scatter", True, False,
         False, "HYBRID_SHARD")),
}


# The unit a gathering mode (ZeRO-3, FSDP) all-gathers weights in.
GATHER_UNITS = {
    "layer": "one all-gather per transformer layer (FSDP wrapping each block)",
    "module": "one per weight matrix of a layer (DeepSpeed ZeRO-3 fetching each "
              "submodule's parameters; FSDP wrapping each linear layer)",
    "stage": "one flat buffer of the stage's weights, gathered whole before each pass "
             "(FSDP wrapping only the root module): nothing to overlap it with",
}

# Where the optimizer states live and the step runs.
OPTIMIZER_PLACES = {
    "device": "on the rank's own processor and memory (on a CPU node, the only place)",
    "host": "offloaded to the host CPU (DeepSpeed ZeRO-Offload, offload_optimizer): "
            "the states in host memory, gradients copied down and weights up over the "
            "host link every step",
}


def gathers_per_layer(unit: str, activation: str) -> int:
    """All-gathers one transformer layer's weights take at ``unit`` granularity (a
    layer's weight matrices: QKV, projection, FC1, FC2, and SwiGLU's gate)."""
    return 5 if unit == "module" and activation == "swiglu" else 4 if unit == "module" else 1


def family_error(family: str, zero: int) -> SpecError | None:
    """Why the ``family``'s framework has no mode sharding ``zero`` stages' states, or
    None."""
    check_choice("sharding", family, tuple(FAMILIES))
    modes = FAMILIES[family]
    if zero in modes:
        return None
    named = ", ".join(f"{m.name} (ZeRO stage {z})" for z, m in modes.items())
    return SpecError("zero", f"{family} runs {named}; no mode of it shards as ZeRO stage {zero}")


def hybrid_error(family: str, zero: int, shard_ranks: int, dp: int) -> SpecError | None:
    """Why ZeRO stage ``zero`` of ``family`` cannot shard inside groups of
    ``shard_ranks`` of the ``dp`` data-parallel ranks (0: over all of them), or None."""
    if not shard_ranks:
        return None
    how = mode(family, zero)
    if not how.hybrid:
        hybrids = [f"{m.hybrid} (ZeRO stage {z})" for fam in FAMILIES.values()
                   for z, m in fam.items() if m.hybrid]
        return SpecError("shard_ranks", f"{family} {how.name} does not shard inside groups; "
                                        f"only {', '.join(hybrids)} of fsdp do")
    if not 1 < shard_ranks < dp or dp % shard_ranks:
        return SpecError("shard_ranks", f"a group of data-parallel ranks: it must divide dp "
                                        f"({dp}) and lie between 2 and dp / 2; got "
                                        f"{shard_ranks} (0: shard over all of dp)")
    return None


def mode(family: str, zero: int) -> ShardingMode:
    """The ``family``'s mode that shards as ZeRO stage ``zero`` (checked)."""
    err = family_error(family, zero)
    if err is not None:
        raise err
    return FAMILIES[family][zero]
