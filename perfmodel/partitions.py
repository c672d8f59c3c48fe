"""How a pipeline places the model's layers on its stages: the partition methods.

A method turns (layers, pp) into the transformer layers of each stage. The first
stage also holds the embedding and the last the output head, whatever the method.

* ``even``: l / p layers on every stage, as Megatron-LM places them: its
  ParallelTransformer (megatron/model/transformer.py) asserts num_layers % pp == 0,
  and with virtual stages the layers per virtual stage divide them too. The
  default, and the only method that runs virtual stages.
* ``type:transformer``: DeepSpeed's pipeline engine, as Megatron-DeepSpeed's
  GPTModelPipe uses it by default (bigscience-workshop/Megatron-DeepSpeed
  megatron/model/gpt_model.py; ``--pp-partition-method``). PipelineModule
  (deepspeed/runtime/pipe/module.py, _partition_layers) weighs each layer whose
  class name matches the regular expression 1 and every other 0, and
  partition_balanced (deepspeed/runtime/utils.py) binary-searches the smallest
  heaviest stage, then fills the stages in turn up to it (_lprobe). With unit
  weights every stage but the last holds ceil(n / p) items and the last the rest,
  so 70 layers on 12 stages are 11 x 6 + 4.
* ``type:transformer|embedding``: the same with the embedding and the output head
  counted as one item each (the head is the tied EmbeddingPipe in GPTModelPipe):
  70 layers + 2 on 12 stages are 6 items each, 5 layers on the first and last
  stages and 6 on the others, as BigScience placed BLOOM-176B's 70 layers
  (bigscience train/tr11-176B-ml/tr11-176B-ml.slurm: PP_SIZE=12, NLAYERS=70).

GPTModelPipe notes that "the current implementation of PP fails unless each stage
has at least one transformer layer": a split that leaves a stage without one is
refused. Later DeepSpeed releases solve partition_balanced by dynamic programming,
which reaches the same heaviest stage but can place the lighter ones elsewhere; the
greedy fill above is the one the Megatron-DeepSpeed runs of record used.

Adding a method is one ``PartitionSpec`` in ``PARTITIONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fpcore.errors import SpecError, check_choice


@dataclass(frozen=True)
class PartitionSpec:
    name: str
    description: str
    source: str
    balanced: bool         # DeepSpeed's greedy fill; else l / p on every stage
    end_items: int = 0     # the embedding and the head each count as this many layers


PARTITIONS = {p.name: p for p in (
    PartitionSpec("even", "l / p layers on every stage (pp x virtual stages divide the layers)",
                  "Megatron-LM megatron/model/transformer.py: num_layers % pp == 0",
                  balanced=False),
    PartitionSpec("type:transformer",
                  "DeepSpeed's balanced fill: ceil(l / p) layers per stage, the rest on the last",
                  "Megatron-DeepSpeed GPTModelPipe's default; DeepSpeed PipelineModule "
                  "._partition_layers and runtime/utils.py partition_balanced",
                  balanced=True),
    PartitionSpec("type:transformer|embedding",
                  "the same fill with the embedding and the head counted as a layer each",
                  "Megatron-DeepSpeed --pp-partition-method (gpt_model.py: counts the first "
                  "and last embedding layers); BLOOM-176B's (tr11-176B-ml.slurm)",
                  balanced=True, end_items=1),
)}

UNEVEN = tuple(name for name, spec in PARTITIONS.items() if spec.balanced)


def get(name: str) -> PartitionSpec:
    check_choice("partition", name, tuple(PARTITIONS))
    return PARTITIONS[name]


@lru_cache(maxsize=4096)
def _fill(layers: int, pp: int, method: str) -> tuple[int, ...]:
    """Transformer layers per stage; a stage may get none (``partition_error`` says)."""
    spec = PARTITIONS[method]
    if not spec.balanced:
        return (layers // pp,) * pp
    ends = spec.end_items
    items = layers + 2 * ends
    cap = -(-items // pp)
    counts, left = [], items
    for _ in range(pp):
        take = min(cap, left)
        counts.append(take)
        left -= take
    # the leading item is the embedding, the trailing one the head, on the last stage
    # holding anything
    counts[0] -= ends
    last = max(i for i, c in enumerate(counts) if c > 0)
    counts[last] -= ends
    return tuple(counts)


def partition_error(layers: int, pp: int, virtual_stages: int, method: str) -> SpecError | None:
    """Why ``method`` cannot place ``layers`` on ``pp`` stages (of ``virtual_stages``
    chunks each), or None."""
    spec = get(method)
    if not spec.balanced:
        chunks = pp * virtual_stages
        if layers % chunks:
            return SpecError("pp", f"pp x virtual_stages ({pp} x {virtual_stages}) must divide "
                                   f"the number of layers ({layers}) with the even partition "
                                   f"(Megatron-LM); an uneven one (--partition "
                                   f"{' or '.join(UNEVEN)}) runs where the stack's framework "
                                   f"places layers unevenly")
        return None
    if virtual_stages != 1:
        return SpecError("partition", f"{method} is DeepSpeed's pipeline placement, which runs "
                                      f"no virtual stages: use the even partition with them")
    empty = [i for i, n in enumerate(_fill(layers, pp, method)) if n < 1]
    if empty:
        stages = ", ".join(map(str, empty[:4])) + (" ..." if len(empty) > 4 else "")
        return SpecError("pp", f"{method} leaves stage(s) {stages} of {pp} without a "
                               f"transformer layer ({layers} layers): Megatron-DeepSpeed fails "
                               f"unless every stage holds one (gpt_model.py); use fewer stages")
    return None


@lru_cache(maxsize=4096)
def stage_layers(layers: int, pp: int, method: str = "even") -> tuple[int, ...]:
    """The transformer layers of each of ``pp`` stages under ``method`` (checked)."""
    err = partition_error(layers, pp, 1, method)
    if err is not None:
        raise err
    return _fill(layers, pp, method)


def default_for(methods, layers: int, pp: int, virtual_stages: int = 1) -> str:
    """The partition a run names none of uses: the first of ``methods`` (a stack's,
    even first) that places ``layers`` on ``pp`` stages; even if none does (its error
    then says why)."""
    return next((m for m in methods if partition_error(layers, pp, virtual_stages, m) is None),
                "even")


def distinct_splits(layers: int, pp: int, allowed) -> list[str]:
    """The methods among ``allowed`` that can place ``layers`` on ``pp`` stages, one per
    distinct split (even first): what a search tries."""
    seen, out = set(), []
    for name in sorted(allowed, key=lambda n: PARTITIONS[n].balanced):
        if partition_error(layers, pp, 1, name) is None:
            split = _fill(layers, pp, name)
            if split not in seen:
                seen.add(split)
                out.append(name)
    return out
