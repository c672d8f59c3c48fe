"""Layout: how one training run is parallelised (the execution half of the inputs).

``validate_layout`` checks that a layout can split a model (on a rank count) and
``check_runnable`` also that a training framework runs it; both name the field
that is wrong and the rule, with the framework source it comes from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property, lru_cache

from fpcore.caches import KeptHash, cached
from fpcore.errors import SpecError, check_bool, check_choice, check_float, check_int

from . import partitions, schedules, sharding
from .model import ModelSpec
from .ops import ATTENTIONS
from .precisions import PRECISIONS
from topologies.interface import JobShape

RECOMPUTE = ("none", "selective", "full")


_CHECKED: set = set()         # Layout field values (with their types) found valid
MAX_CHECKED = 500_000


@dataclass(frozen=True)
class Layout(KeptHash):
    """Tensor (tp), pipeline (pp) and data (dp) parallel degrees and their settings.

    ``recompute_stages`` limits full recomputation to the first k pipeline stages
    (Fugaku-LLM recomputed on the first 4 of 8); ``None`` means every stage.
    ``precision`` fp16 is mixed precision (fp16 compute, fp32 master weights).
    ``overlap_dp`` lets the data-parallel gradient reduction overlap the last
    backward pass (bucketed, as DeepSpeed's overlap_comm and Megatron-LM's
    --overlap-grad-reduce do) and ``attention`` is how the attention core is computed
    (perfmodel.ops.ATTENTIONS: materialized or flash); both are the software stack's
    settings, not searched, as is ``sharding``, the family of data-parallel modes its
    framework runs (perfmodel.sharding: with ``zero``, e.g. fsdp 3 is FULL_SHARD),
    the unit its weight gathers fetch (``gather``) and how many layers ahead
    (``prefetch``), and where its optimizer steps (``optimizer``: device or host).
    ``shard_ranks`` shards inside groups of that many data-parallel ranks, a replica
    per group (FSDP HYBRID_SHARD; 0: over all of dp).
    ``overlap_p2p``: the stack's pipeline overlaps its sends with compute (which lets
    Megatron-Core interleave two stages).
    ``partition`` is how the pipeline places the layers on its stages
    (perfmodel.partitions: even, or DeepSpeed's uneven fills).
    ``ep`` splits a mixture of experts' experts over that many data-parallel ranks
    (expert parallelism, as Megatron-Core carves its expert-parallel groups out of
    the data-parallel ones: ep divides dp and the experts); ``expert_tp`` splits each
    routed expert over the tp ranks as the dense MLP is (Megatron-Core's default, and
    Megatron-DeepSpeed's with --enable-expert-tensor-parallelism) or, False, leaves it
    whole on every TP rank, each running 1/tp of its tokens (DeepSpeed's MoE layer
    without that flag: its default); ``moe_load`` is the load
    of the busiest expert-parallel rank over the mean (1: the router spreads the
    tokens evenly, as published benchmarks force it to).
    ``cp`` splits each sequence over that many ranks (context parallelism, Megatron-
    Core's: ring attention passes the keys and values around them); they hold the
    same weights, so the data-parallel group of the reductions and the shards is the
    dp x cp ``replicas``, and the ranks are tp x cp x pp x dp.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    micro_batch: int = 1
    global_batch: int = 1
    schedule: str = "1f1b"
    virtual_stages: int = 1
    zero: int = 0
    recompute: str = "none"
    recompute_stages: int | None = None
    sequence_parallel: bool = False
    precision: str = "fp32"
    overlap_dp: bool = True
    attention: str = "materialized"
    partition: str = "even"
    sharding: str = "deepspeed"
    gather: str = "layer"
    prefetch: int = 1
    optimizer: str = "device"
    shard_ranks: int = 0
    overlap_p2p: bool = False
    ep: int = 1
    moe_load: float = 1.0
    cp: int = 1
    expert_tp: bool = True

    def __post_init__(self):
        # a search builds the same layouts again for every system it prices (a sweep's
        # every hardware point): the values checked once, of the same types, pass again
        values = tuple(self.__dict__.values())
        if (values, tuple(map(type, values))) in _CHECKED:
            return
        self._check()
        if len(_CHECKED) >= MAX_CHECKED:
            _CHECKED.clear()
        values = tuple(self.__dict__.values())          # as _check normalised them
        _CHECKED.add((values, tuple(map(type, values))))

    # a layout keys the caches of its memory and checks: its hash is kept
    __hash__ = KeptHash.__hash__

    def _check(self) -> None:
        for name, hi in (("tp", 1_000_000), ("pp", 100_000), ("dp", 10_000_000),
                         ("micro_batch", 1_000_000), ("global_batch", 1_000_000_000),
                         ("virtual_stages", 1_000)):
            check_int(name, getattr(self, name), hi=hi)
        spec = schedules.get(self.schedule)
        check_int("zero", self.zero, lo=0, hi=3)
        check_choice("recompute", self.recompute, RECOMPUTE)
        check_bool("sequence_parallel", self.sequence_parallel)
        check_bool("overlap_dp", self.overlap_dp)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("attention", self.attention, ATTENTIONS)
        partitions.get(self.partition)
        check_choice("gather", self.gather, tuple(sharding.GATHER_UNITS))
        check_int("prefetch", self.prefetch, lo=0, hi=1000)
        check_choice("optimizer", self.optimizer, tuple(sharding.OPTIMIZER_PLACES))
        err = sharding.family_error(self.sharding, self.zero)
        if err is not None:
            raise err
        check_int("shard_ranks", self.shard_ranks, lo=0, hi=10_000_000)
        check_bool("overlap_p2p", self.overlap_p2p)
        check_int("ep", self.ep, hi=1_000_000)
        check_int("cp", self.cp, hi=1_000_000)
        check_bool("expert_tp", self.expert_tp)
        if self.tp == 1:                 # (no TP ranks to split the experts over)
            object.__setattr__(self, "expert_tp", True)
        object.__setattr__(self, "moe_load", check_float(
            "moe_load", self.moe_load, lo=1.0, lo_open=False, hi=1000.0,
            unit="(the busiest expert-parallel rank's tokens over the mean)"))
        if self.moe_load > self.ep:
            raise SpecError("moe_load", f"must be 1 with ep 1: one expert-parallel rank takes "
                                        f"every token, its even share; got {self.moe_load:g}"
                            if self.ep == 1 else
                            f"must be at most ep ({self.ep}): the busiest of {self.ep} "
                            f"expert-parallel ranks takes at most every token, {self.ep} "
                            f"times the mean; got {self.moe_load:g}")
        if self.dp % self.ep:
            raise SpecError("ep", f"must divide dp ({self.dp}): the expert-parallel groups "
                                  f"are carved out of the data-parallel ones (Megatron-Core "
                                  f"parallel_state); got {self.ep}")
        err = sharding.hybrid_error(self.sharding, self.zero, self.shard_ranks, self.replicas)
        if err is not None:
            raise err
        if spec.virtual:
            if spec.chunks and self.virtual_stages != spec.chunks:
                raise SpecError("virtual_stages", f"must be {spec.chunks} with the {spec.name} "
                                                  f"schedule; got {self.virtual_stages}")
            if self.virtual_stages < 2:
                raise SpecError("virtual_stages", f"must be >= 2 with the {spec.name} schedule")
        elif self.virtual_stages != 1:
            raise SpecError("virtual_stages", f"must be 1 with the {self.schedule} schedule "
                                              f"(virtual stages need --schedule "
                                              f"{' or '.join(virtual_schedules())})")
        if self.pp < spec.min_pp:
            raise SpecError("schedule", f"{spec.name} needs pp >= {spec.min_pp}")
        if spec.mirrored:
            if self.pp % 2:
                raise SpecError("pp", f"{spec.name} runs its two directions over an even "
                                      f"number of ranks (deepseek-ai/DualPipe dualpipe.py "
                                      f"asserts num_ranks % 2 == 0); got {self.pp}")
            if self.partition != "even":
                raise SpecError("partition", f"{spec.name} runs a whole stage in each chunk, "
                                             f"the stages alike: even only; got "
                                             f"{self.partition}")
            if self.recompute_stages is not None:
                raise SpecError("recompute_stages", f"{spec.name} holds two stages on every "
                                                    f"rank: recompute on all of them or none")
        if self.recompute_stages is not None:
            check_int("recompute_stages", self.recompute_stages, lo=1, hi=self.pp)
            if self.recompute != "full":
                raise SpecError("recompute_stages", "needs recompute = full")
        if self.sequence_parallel and self.tp == 1:
            raise SpecError("sequence_parallel", "needs tp > 1")
        if self.global_batch % (self.dp * self.micro_batch):
            raise SpecError("global_batch", f"must be divisible by dp x micro_batch = "
                                            f"{self.dp} x {self.micro_batch}; got {self.global_batch}")

    @property
    def schedule_spec(self) -> schedules.ScheduleSpec:
        """The registry's description of this layout's schedule (perfmodel.schedules)."""
        return schedules.SCHEDULES[self.schedule]

    @property
    def ranks(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    @property
    def replicas(self) -> int:
        """Ranks holding the same weights: the data-parallel group (dp x cp)."""
        return self.dp * self.cp

    def job(self, ranks_per_node: int) -> JobShape:
        """The job as the network places it: tp x pp x (dp x cp), the context-parallel
        ranks innermost in the third dimension (Megatron-Core's order tp-cp-ep-dp-pp)."""
        return JobShape(self.tp, self.pp, self.dp * self.cp, ranks_per_node)

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per iteration (gradient accumulation steps)."""
        return self.global_batch // (self.dp * self.micro_batch)

    @property
    def shard_size(self) -> int:
        """The data-parallel ranks a sharded state is split over."""
        return self.shard_ranks or self.replicas

    @property
    def sharding_mode(self) -> sharding.ShardingMode:
        """How this layout's data parallelism shards and communicates (perfmodel.sharding)."""
        return sharding.FAMILIES[self.sharding][self.zero]

    def stage_layers(self, model: ModelSpec) -> tuple[int, ...]:
        """The transformer layers of each pipeline stage (perfmodel.partitions)."""
        return partitions.stage_layers(model.layers, self.pp, self.partition)

    @cached_property
    def head_stage(self) -> int:
        """The pipeline stage holding the head (the last, or in a V the first)."""
        return self.schedule_spec.head_stage(self.pp)

    @property
    def head_stages(self) -> tuple[int, ...]:
        """Every stage computing a head and its loss: ``head_stage``, and with two
        pipelines in opposite directions (DualPipe) the first as well."""
        return (0, self.pp - 1) if self.schedule_spec.mirrored else (self.head_stage,)

    @property
    def layer_chunks(self) -> int:
        """How many parts a stage's layers are cut into, one a chunk (the virtual
        stages, or 1 where each chunk is a whole stage: DualPipe)."""
        return self.schedule_spec.layer_chunks(self.virtual_stages)

    def stage_moe_layers(self, model: ModelSpec) -> tuple[int, ...]:
        """The mixture-of-experts layers of each pipeline stage (all zero for a dense
        model): each chunk holds its virtual stage's layers (schedules.virtual_stage)."""
        return _stage_moe_layers(model, self.stage_layers(model), self.layer_chunks,
                                 self.schedule_spec.v_shape) \
            if model.experts else (0,) * self.pp

    def stage_runs(self, model: ModelSpec) -> tuple[tuple[int, int], ...]:
        """Runs of pipeline stages with identical costs, as (first stage, count).

        Stages differ by their layers (the partition), the embedding (the first), the
        head (the last) and whether they recompute: with an even partition at most
        four kinds, whatever the depth. Within a run the earliest stage holds the most
        activations in flight and finishes its backward last, so the runs' first
        stages bound both the memory and the iteration time of the whole pipeline.
        """
        return _stage_runs(self.stage_layers(model), self.recompute, self.recompute_stages,
                           self.stage_moe_layers(model), self.head_stage)

    def stage_recomputes(self, stage: int) -> str:
        """The recompute mode pipeline stage ``stage`` (0-based) runs."""
        return _stage_mode(self.recompute, self.recompute_stages, stage)

    def replace(self, **changes) -> "Layout":
        return dataclasses.replace(self, **changes)

    def with_recompute(self, recompute: str, stages: int | None = None) -> "Layout":
        """This layout with another recompute setting (checked as any layout is)."""
        return self.replace(recompute=recompute, recompute_stages=stages)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """Compact one-line description, e.g. ``TP6 PP8 DP288 mb1 1f1b``."""
        parts = [f"TP{self.tp}"] + ([f"CP{self.cp}"] if self.cp > 1 else []) + [
                 f"PP{self.pp}", f"DP{self.dp}" + (f" EP{self.ep}" if self.ep > 1 else "")
                 + ("" if self.expert_tp else " ETP1"),
                 f"mb{self.micro_batch}",
                 self.schedule + (f"/v{self.virtual_stages}" if self.virtual_stages > 1 else "")]
        if self.shard_ranks:
            parts.append(f"{self.sharding_mode.hybrid}/{self.shard_ranks}")
        elif self.sharding_mode.label:
            parts.append(self.sharding_mode.label)
        if self.recompute != "none":
            parts.append("rc:" + self.recompute +
                         (f"[:{self.recompute_stages}]" if self.recompute_stages else ""))
        if self.sequence_parallel:
            parts.append("SP")
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.attention != "materialized":
            parts.append(self.attention)
        if self.partition != "even":
            parts.append("split=" + self.partition)
        if self.moe_load != 1.0:
            parts.append(f"load={self.moe_load:g}")
        return " ".join(parts)


def _stage_mode(recompute: str, recompute_stages: int | None, stage: int) -> str:
    """Full recomputation limited to the first ``recompute_stages`` stages, or one mode
    on every stage."""
    if recompute == "full" and recompute_stages is not None:
        return "full" if stage < recompute_stages else "none"
    return recompute


@lru_cache(maxsize=4096)
def _stage_moe_layers(model: ModelSpec, layers: tuple[int, ...], v: int,
                      v_shape: bool = False) -> tuple[int, ...]:
    p = len(layers)
    # virtual stage k holds the k-th run of layers; with v > 1 the split is even
    per_virtual = [n // v for n in layers] * v if v > 1 else list(layers)
    out, first = [0] * p, 0
    for k, n in enumerate(per_virtual):
        out[schedules.stage_chunk(k, p, v_shape)[0]] += model.moe_layers_in(first, n)
        first += n
    return tuple(out)


@lru_cache(maxsize=4096)
def _stage_runs(layers: tuple[int, ...], recompute: str, recompute_stages: int | None,
                moe: tuple[int, ...] | None = None, head: int | None = None
                ) -> tuple[tuple[int, int], ...]:
    p = len(layers)
    head = p - 1 if head is None else head
    runs: list[list] = []
    for i in range(p):
        kind = (layers[i], i == 0, i == head, _stage_mode(recompute, recompute_stages, i),
                moe[i] if moe else 0)
        if runs and runs[-1][2] == kind:
            runs[-1][1] += 1
        else:
            runs.append([i, 1, kind])
    return tuple((first, n) for first, n, _ in runs)


# The fields of a layout a user may pin (``--tp 6 ...``); the others are the run's
# settings (the global batch) and the software stack's (StackSpec.layout_settings).
STACK_SETTINGS = ("overlap_dp", "attention", "sharding", "gather", "prefetch", "optimizer",
                  "overlap_p2p")
PINNABLE = tuple(f.name for f in dataclasses.fields(Layout)
                 if f.name not in ("global_batch",) + STACK_SETTINGS)


# How a pinned yes-or-no field reads in prose: (when true, when false).
_PINNED_SWITCHES = {"sequence_parallel": ("sequence parallelism", "no sequence parallelism"),
                    "expert_tp": ("experts split over TP", "experts whole on every TP rank")}


def pins_text(pins: dict) -> str:
    """The pinned fields as a sentence reads them ("tp = 6, pp = 8, experts whole on
    every TP rank"), the switches in words rather than True and False."""
    return ", ".join(_PINNED_SWITCHES[k][0 if v else 1] if k in _PINNED_SWITCHES
                     else f"{k} = {v}" for k, v in pins.items())


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def tp_error(model: ModelSpec, tp: int, expert_tp: bool = True) -> SpecError | None:
    """Why ``tp`` cannot split ``model``'s layers, or None.

    Megatron-LM shards the attention heads, the key/value heads (query groups) and
    the FFN over tp: megatron-core's TransformerConfig.__post_init__ requires
    num_attention_heads % tp == 0 and num_query_groups % tp == 0, and its
    ColumnParallelLinear / RowParallelLinear (megatron/core/tensor_parallel/layers.py)
    divide their output / input size by tp (``divide`` asserts divisibility);
    Megatron-DeepSpeed's ParallelAttention (megatron/model/transformer.py) divides
    num_key_value_heads by tp the same way.
    The vocabulary needs no rule: Megatron pads it to a multiple of
    make_vocab_size_divisible_by (128) x tp (megatron/tokenizer/tokenizer.py,
    _vocab_size_with_padding). Experts kept whole on every TP rank (not ``expert_tp``)
    need no rule either.
    """
    if model.heads % tp:
        return SpecError("tp", f"must divide the number of heads ({model.heads}); got {tp}")
    if model.kv_heads % tp:
        return SpecError("tp", f"must divide kv_heads ({model.kv_heads}): Megatron shards the "
                               f"key/value heads (query groups) over tp; got {tp}")
    if model.ffn % tp:
        return SpecError("tp", f"must divide ffn ({model.ffn}); got {tp}")
    if model.experts and expert_tp and model.expert_ffn % tp:
        return SpecError("tp", f"must divide expert_ffn ({model.expert_ffn}): the experts are "
                               f"split over tp as the dense MLP is; got {tp}")
    return None


def cp_error(model: ModelSpec, cp: int) -> SpecError | None:
    """Why ``cp`` cannot split ``model``'s sequences, or None: Megatron-Core's context
    parallelism gives each rank two of 2 cp chunks of a sequence (to balance the
    causal mask), so 2 cp divides seq."""
    if cp > 1 and model.seq % (2 * cp):
        return SpecError("cp", f"2 x cp must divide seq ({model.seq}): Megatron-Core's context "
                               f"parallelism gives each rank two of 2 cp chunks of the "
                               f"sequence, to balance the causal mask; got {cp}")
    return None


def ep_error(model: ModelSpec, ep: int) -> SpecError | None:
    """Why ``ep`` cannot split ``model``'s experts, or None (a dense model has none)."""
    if ep > 1 and not model.experts:
        return SpecError("ep", f"needs a mixture of experts ({model.name} is dense); got {ep}")
    if model.experts and model.experts % ep:
        return SpecError("ep", f"must divide the experts ({model.experts}); got {ep}")
    return None


def tensor_parallel_sizes(model: ModelSpec, expert_tps: tuple[bool, ...] = (True,)) -> list[int]:
    """Every tp that can split ``model`` with its experts laid out one of the ways
    ``expert_tps`` says (see tp_error)."""
    return [t for t in divisors(model.heads)
            if any(tp_error(model, t, x) is None for x in expert_tps)]


def validate_layout(layout: Layout, model: ModelSpec, ranks: int | None = None) -> None:
    """Check that ``layout`` can split ``model`` (on ``ranks`` ranks, if given).

    These are the rules of the split itself, which the estimator and the simulator
    need: tp divides heads, kv_heads and ffn (tp_error); the partition method places
    the layers on the stages (perfmodel.partitions.partition_error: with the even
    partition pp x virtual stages divides the layers, as Megatron-LM's
    ParallelTransformer in megatron/model/transformer.py asserts num_layers % pp == 0
    and megatron/arguments.py the layers per stage by the layers per virtual stage;
    DeepSpeed's uneven fills leave no stage without a layer);
    sequence parallelism splits the sequence over tp
    (megatron/core/tensor_parallel/mappings.py, _split_along_first_dim asserts
    seq % tp == 0); the interleaved schedule runs the micro-batches in groups of pp
    (megatron/core/pipeline_parallel/schedules.py,
    forward_backward_pipelining_with_interleaving: micro-batches % pp == 0). What a
    framework further refuses is ``check_runnable``'s.
    """
    err = tp_error(model, layout.tp, layout.expert_tp)
    if err is not None:
        raise err
    if not layout.expert_tp and not model.experts:
        raise SpecError("expert_tp", f"needs a mixture of experts ({model.name} is dense)")
    if layout.moe_load != 1.0 and not model.experts:
        raise SpecError("moe_load", f"needs a mixture of experts ({model.name} is dense)")
    err = partitions.partition_error(model.layers, layout.pp, layout.layer_chunks,
                                     layout.partition)
    if err is not None:
        raise err
    for err in (ep_error(model, layout.ep), cp_error(model, layout.cp)):
        if err is not None:
            raise err
    if layout.sequence_parallel and (model.seq // layout.cp) % layout.tp:
        raise SpecError("sequence_parallel", f"tp ({layout.tp}) must divide seq ({model.seq})"
                                             + (f" / cp ({layout.cp})" if layout.cp > 1 else ""))
    if layout.schedule_spec.mirrored and layout.micro_batches % 2:
        raise SpecError("global_batch", f"{layout.schedule} splits the micro-batches between "
                                        f"its two directions: it needs an even number per "
                                        f"pipeline; got {layout.micro_batches}")
    if layout.schedule_spec.groups_of_pp and layout.micro_batches % layout.pp:
        raise SpecError("global_batch", f"{layout.schedule} needs micro-batches per pipeline "
                                        f"({layout.micro_batches}) divisible by pp ({layout.pp})")
    spec = layout.schedule_spec
    if layout.pp > 1 and layout.micro_batches < spec.min_micro_batches(layout.pp):
        raise SpecError("global_batch", f"{layout.schedule} needs at least "
                                        f"{spec.min_micro_batches(layout.pp)} micro-batches per "
                                        f"pipeline with pp {layout.pp}; got "
                                        f"{layout.micro_batches} ({spec.micro_batch_rule})")
    if ranks is not None and layout.ranks != ranks:
        names, sizes = (" x cp", f" x {layout.cp}") if layout.cp > 1 else ("", "")
        raise SpecError("dp", f"tp x pp x dp{names} = {layout.tp} x {layout.pp} x {layout.dp}"
                              f"{sizes} = {layout.ranks} must equal the number of ranks "
                              f"({ranks})")


# The frameworks the presets' software stacks run: Megatron-LM as of 2021-2023 (Selene's
# published runs) and its forks Megatron-DeepSpeed (BLOOM on Jean Zay) and
# DeepSpeedFugaku (Fugaku-LLM), with DeepSpeed for ZeRO.
PIPELINE_MAX_ZERO = 1    # DeepSpeed PipelineEngine: ZeRO-2 and -3 are incompatible with PP


def framework_error(layout: Layout) -> SpecError | None:
    """Why no framework of the presets' stacks runs ``layout``, or None.

    * ZeRO-2 and ZeRO-3 only without pipeline parallelism: DeepSpeed's
      PipelineEngine (deepspeed/runtime/pipe/engine.py, PipelineEngine.__init__)
      asserts ZeRO stage < 2 ("ZeRO-2 and ZeRO-3 are incompatible with pipeline
      parallelism"), and Megatron-LM's own pipeline has no ZeRO-2/3 (its
      distributed optimizer shards optimizer states, as ZeRO-1). ZeRO-1 runs with
      either pipeline.
    * A schedule's least pipeline depth in the frameworks (``framework_min_pp`` of
      perfmodel.schedules): the interleaved schedule needs pp > 2 in Megatron-LM's
      megatron/arguments.py (parse_args, with --num-layers-per-virtual-pipeline-stage),
      as Megatron-DeepSpeed and DeepSpeedFugaku carry it; Megatron-Core accepts pp = 2
      when it overlaps the pipeline sends (megatron/training/arguments.py: with
      --overlap-p2p-communication pp > 1, else pp > 2), which a stack says
      (``overlap_p2p``). DeepSpeed's own pipeline has no interleaved schedule.
    """
    if layout.zero > PIPELINE_MAX_ZERO and layout.pp > 1:
        return zero_with_pipeline_error(layout.zero, f"pp {layout.pp}")
    spec = layout.schedule_spec
    if layout.pp < spec.least_pp(layout.overlap_p2p):
        return schedule_depth_error(spec, layout.pp, layout.overlap_p2p)
    return None


def zero_with_pipeline_error(zero: int, pipeline: str) -> SpecError:
    """ZeRO-``zero`` refused beside ``pipeline`` (what makes it a pipeline, e.g. "pp 8")."""
    return SpecError("zero", f"ZeRO-{zero} cannot run with pipeline parallelism ({pipeline}): "
                             f"DeepSpeed's pipeline engine refuses ZeRO-2 and -3; use pp 1 or "
                             f"ZeRO-{PIPELINE_MAX_ZERO}")


def schedule_depth_error(spec: schedules.ScheduleSpec, pp: int,
                         overlap_p2p: bool = False) -> SpecError:
    """``spec`` refused on a pipeline of ``pp`` stages, shallower than frameworks run it
    (``overlap_p2p``: on a stack that overlaps its pipeline sends)."""
    least = spec.least_pp(overlap_p2p)
    rule = ("Megatron-Core's least with the pipeline sends overlapped"
            if least != spec.framework_min_pp else spec.framework_rule)
    return SpecError("schedule", f"{spec.name} needs pp >= {least} ({rule}); got pp {pp}")


def virtual_schedules() -> list[str]:
    """The schedules that run virtual stages (chunks of layers) on each rank."""
    return [s.name for s in schedules.SCHEDULES.values() if s.virtual]


def check_runnable(layout: Layout, model: ModelSpec, ranks: int | None = None) -> None:
    """``validate_layout``, and the rules of the frameworks (``framework_error``): what
    the planner may propose or accept from a user."""
    if ranks is None:
        err = _runnable_error(layout, model)
    else:
        validate_layout(layout, model, ranks)
        err = framework_error(layout)
    if err is not None:
        raise err


@cached("model", maxsize=65536)
def _runnable_error(layout: Layout, model: ModelSpec) -> SpecError | None:
    """check_runnable's answer without a rank count, kept (a sweep asks it of the same
    layouts at every hardware point)."""
    try:
        validate_layout(layout, model)
    except SpecError as e:
        return e
    return framework_error(layout)
