"""Memory per rank: model states, activations and working buffers, per pipeline stage.

Activations follow Korthikanti et al. 2022 (Table 2 and its breakdown) with the
element size as a variable: e bytes per activation element (2 in fp16, 4 in fp32
training as on Fugaku) and a 1-byte dropout mask per element where dropout exists.
With e = 2 and dropout the formulas reduce to the published table exactly (a test
checks this). Model states follow docs/formulas.md: fp32 with Adam 4 + 4 + 8 bytes per
parameter; fp16 mixed precision 2 (weights) + 4 (fp32 gradient accumulation, as
Megatron-LM) + 12 (fp32 master weights, Adam m and v) = 18; ZeRO-1 shards the
optimizer over dp, ZeRO-2 also gradients, ZeRO-3 also weights (a sharding mode that
holds them whole from the forward to the backward, FSDP's SHARD_GRAD_OP, counts them
whole: perfmodel.sharding), and a gathering mode adds the weights it has gathered (the
unit in use and those prefetched); an optimizer offloaded to the host keeps its
states off the rank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fpcore.caches import cached

from . import sharding
from .layout import Layout
from .model import ModelSpec
from .ops import vocab_shard
from .precisions import ACT_BYTES, STATE_BYTES

# Above this share of a rank's usable memory a layout is "tight": little room is left
# for what the count leaves out (framework buffers, allocator fragmentation). One rule
# for plan, report and their JSON.
TIGHT_FRACTION = 0.95


def memory_verdict(fraction_of_usable: float) -> str:
    """``fits``, ``tight`` (over TIGHT_FRACTION of usable memory) or ``does not fit``."""
    if fraction_of_usable > 1.0:
        return "does not fit"
    return "tight" if fraction_of_usable > TIGHT_FRACTION else "fits"




@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes on one rank (one pipeline stage of one TP rank)."""

    stage: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.buffers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


def layer_params_per_rank(model: ModelSpec, tp: int) -> float:
    """Parameters of one layer held by one TP rank (norms and two biases replicated)."""
    replicated = 2 * model.norm_params + (2 * model.hidden if model.bias else 0)
    return (model.layer_params - replicated) / tp + replicated


def moe_layer_params_per_rank(model: ModelSpec, tp: int, ep: int,
                              expert_tp: bool = True) -> tuple[float, float]:
    """(the rest, the routed experts' share) of an MoE layer's parameters held by one
    rank of tp x ep: the experts split over ep ranks and, as the dense MLP is, over
    tp (their biases' output parts replicated), or whole on each TP rank (not
    ``expert_tp``: DeepSpeed's experts without --enable-expert-tensor-parallelism); the
    router replicated; the shared experts split over tp."""
    h, e = model.hidden, model.expert_params
    out_bias = h if model.bias else 0
    experts = model.experts // ep * ((e - out_bias) / (tp if expert_tp else 1) + out_bias)
    shared = model.shared_experts * ((e - out_bias) / tp + out_bias)
    replicated = 2 * model.norm_params + (h if model.bias else 0)
    attention = (model.attention_params - (h if model.bias else 0)) / tp
    return attention + replicated + model.router_params + shared, experts


def stage_params(model: ModelSpec, layout: Layout, stage: int) -> float:
    """Parameters held by one rank (of tp, and of ep for a mixture of experts) of
    pipeline stage ``stage``."""
    return sum(stage_param_parts(model, layout, stage))


def stage_param_parts(model: ModelSpec, layout: Layout, stage: int) -> tuple[float, float]:
    """``stage_params`` as (those replicated over the data-parallel ranks, the routed
    experts', replicated over dp / ep of them). With two pipelines in opposite
    directions (DualPipe) a rank holds its stage and its mirror's, p - 1 - i: twice the
    weights (DeepSeek-V3 report Table 2: "Parameter 2x")."""
    if layout.schedule_spec.mirrored:
        own, mirror = (_own_param_parts(model, layout, s) for s in (stage, layout.pp - 1 - stage))
        return own[0] + mirror[0], own[1] + mirror[1]
    return _own_param_parts(model, layout, stage)


def _own_param_parts(model: ModelSpec, layout: Layout, stage: int) -> tuple[float, float]:
    n_moe = layout.stage_moe_layers(model)[stage]
    dense = _stage_params(model, layout.tp, layout.pp, stage,
                          layout.stage_layers(model)[stage] - n_moe, layout.head_stage)
    if not n_moe:
        return dense, 0.0
    rest, experts = moe_layer_params_per_rank(model, layout.tp, layout.ep, layout.expert_tp)
    return dense + n_moe * rest, n_moe * experts


@cached("model", maxsize=65536)
def _stage_params(model: ModelSpec, t: int, p: int, stage: int, layers: int,
                  head: int | None = None) -> float:
    """Parameters of ``layers`` dense layers on one TP rank of ``stage``, with the
    embedding on the first stage and the head on stage ``head`` (the last unless
    said)."""
    head = p - 1 if head is None else head
    params = layers * layer_params_per_rank(model, t)
    emb = vocab_shard(model, t) * model.hidden
    if stage == 0:
        params += emb + (model.seq * model.hidden if model.position == "learned" else 0)
    if stage == head:
        params += model.norm_params
        # An untied head always has its own weights; a tied one needs a copy on the
        # head's stage when the embedding lives on another stage (Megatron-LM).
        if not model.tied_embeddings or head != 0:
            params += emb
    return params


def activation_bytes_per_layer(model: ModelSpec, tp: int, micro_batch: int,
                               sequence_parallel: bool, recompute: str, precision: str,
                               attention: str = "materialized", moe: bool = False,
                               load: float = 1.0, cp: int = 1) -> float:
    """Activations one layer keeps for its backward, one micro-batch, one TP rank.
    FlashAttention keeps no s x s matrix: the attention output and a 4-byte row
    statistic per head and query (Dao et al. 2022). An MoE layer (``moe``) keeps, in
    place of the MLP's, its router's fp32 scores and, for each of the top-k copies of
    a token (``load`` times the even share on the busiest rank), the expert's input
    and its MLP activations, and the shared experts' as a dense MLP's. On one of ``cp``
    context-parallel ranks: s / cp tokens of each sequence, whose queries meet every
    key."""
    e, mask = ACT_BYTES[precision], (1 if model.dropout else 0)
    s, b, h, f, t = model.seq // cp, micro_batch, model.hidden, model.ffn, tp
    sbh = s * b * h
    if recompute == "full":
        return e * sbh / (t if sequence_parallel else 1)    # the layer input only
    # Outside the TP region: both norm inputs, QKV and FC1 inputs, two dropout masks.
    outside = (4 * e + 2 * mask) * sbh
    if sequence_parallel:
        outside /= t
    qkv = s * b * (h + 2 * model.kv_dim)                    # Q, K, V
    per_token = 3 if model.activation == "swiglu" else 2
    mlp = s * b * f * per_token
    if moe:
        copies = s * b * model.top_k * model.routed_load(load)
        mlp = (copies * (h + model.expert_ffn * per_token)
               + s * b * model.shared_experts * model.expert_ffn * per_token)
        outside += 4.0 * s * b * model.experts / (t if sequence_parallel else 1)
    inside = e * (qkv + sbh + mlp) / t                      # + the projection input
    scores = 0.0
    if attention == "flash":                                # log-sum-exp per head and query
        scores = 4.0 * model.heads * s * b / t
    elif recompute == "none":                               # selective re-runs these
        per_elem = e + (e + mask if model.dropout else 0)   # softmax out (+ mask, dropout out)
        scores = per_elem * model.heads * s * model.seq * b / t
    return outside + inside + scores


def in_flight_layers(model: ModelSpec, layout: Layout, stage: int) -> float:
    """Layer-micro-batches whose activations stage ``stage`` holds at its peak, as the
    layout's schedule says (perfmodel.schedules: GPipe holds every micro-batch; 1F1B
    min(p - i, m) (Narayanan et al. 2021); interleaved 1F1B its warm-up chunks plus
    one, of l / (p v) layers each, which for the first stage is l (1 + (p - 1) / (p v))
    (Korthikanti et al. 2022)), of the stage's own layers (perfmodel.partitions)."""
    p, m, v = layout.pp, layout.micro_batches, layout.virtual_stages
    return layout.schedule_spec.in_flight(layout.stage_layers(model)[stage], p, m, v, stage)


def micro_batch_activation_bytes(model: ModelSpec, layout: Layout, stage: int) -> float:
    """Activations one micro-batch leaves on ``stage`` from its forward until its
    backward (all of the stage's layers; the first stage adds its embedding's
    dropout mask)."""
    mode = layout.stage_recomputes(stage)
    args = (model, layout.tp, layout.micro_batch, layout.sequence_parallel, mode,
            layout.precision, layout.attention)
    n_moe = layout.stage_moe_layers(model)[stage]
    acts = (layout.stage_layers(model)[stage] - n_moe) * activation_bytes_per_layer(
        *args, cp=layout.cp)
    if n_moe:
        acts += n_moe * activation_bytes_per_layer(*args, True, layout.moe_load, layout.cp)
    if stage == 0 and model.dropout:
        acts += model.seq // layout.cp * layout.micro_batch * model.hidden
    return acts


@cached("model", maxsize=65536)
def stage_memory(model: ModelSpec, layout: Layout, stage: int) -> MemoryBreakdown:
    """What one rank of ``stage`` holds at its peak (no system enters: a sweep's points
    price the same layouts' memory once)."""
    t, dp, zero = layout.tp, layout.shard_size, layout.zero      # (sharded over dp or a group)
    w_b, g_b, o_b = STATE_BYTES[layout.precision]
    replicated, experts = stage_param_parts(model, layout, stage)
    params = replicated + experts
    # sharded states: the routed experts' over the dp / ep ranks that hold the same ones
    shards = replicated / dp + experts / max(1, dp // layout.ep)
    whole = layout.sharding_mode.whole_weights      # (FSDP SHARD_GRAD_OP: whole at the peak)
    weights = w_b * (params if whole else shards)
    grads = g_b * (shards if zero >= 2 else params)
    # an optimizer offloaded to the host keeps its states (and master weights) there
    optim = 0.0 if layout.optimizer == "host" else o_b * (shards if zero >= 1 else params)

    mode = layout.stage_recomputes(stage)
    e, mb, sp = ACT_BYTES[layout.precision], layout.micro_batch, layout.sequence_parallel
    in_flight = in_flight_layers(model, layout, stage) / layout.stage_layers(model)[stage]
    acts = in_flight * micro_batch_activation_bytes(model, layout, stage)
    sbh = model.seq // layout.cp * mb * model.hidden
    if mode == "full":   # one layer is rebuilt in full during its backward
        acts += activation_bytes_per_layer(model, t, mb, sp, "none", layout.precision,
                                           layout.attention, cp=layout.cp)
    buffers = 0.0
    if stage in layout.head_stages:
        # logits (training precision) and the fp32 softmax kept for the loss backward
        buffers += model.seq // layout.cp * mb * vocab_shard(model, t) * (e + 4)
    if layout.pp > 1:
        buffers += 2 * e * sbh          # pipeline send and receive buffers
    if t > 1:
        buffers += e * sbh              # tensor-parallel collective buffer
    if not whole:                       # the gathered weights in use and prefetched
        buffers += gathered_params(model, layout, params) * w_b
    return MemoryBreakdown(stage, weights, grads, optim, acts, buffers)


def gathered_params(model: ModelSpec, layout: Layout, stage_params: float) -> float:
    """Parameters a gathering mode (ZeRO-3, FSDP) holds whole at once on a stage of
    ``stage_params``: the unit in use and the ``prefetch`` layers' worth gathered
    ahead of it (a whole flat buffer with stage granularity)."""
    if layout.gather == "stage":
        return stage_params
    per_unit = layer_params_per_rank(model, layout.tp) / sharding.gathers_per_layer(
        layout.gather, model.activation)
    units = 1 + layout.prefetch * sharding.gathers_per_layer(layout.gather, model.activation)
    return min(stage_params, units * per_unit)


def representative_stages(model: ModelSpec, layout: Layout) -> tuple[int, ...]:
    """One stage of each kind: the first of each run of identical stages
    (Layout.stage_runs: the first, the middle stages that recompute, those that do
    not, the last, and where an uneven partition changes the layers). Within a run
    the earliest stage holds the most activations in flight, so these stages bound
    the memory of the whole pipeline.
    """
    return tuple(first for first, _ in layout.stage_runs(model))


def pipeline_memory(model: ModelSpec, layout: Layout, *, every_stage: bool = False
                    ) -> list[MemoryBreakdown]:
    stages = range(layout.pp) if every_stage else representative_stages(model, layout)
    return [stage_memory(model, layout, i) for i in stages]


def peak_memory(model: ModelSpec, layout: Layout) -> MemoryBreakdown:
    """The stage with the most memory (the one that decides whether a layout fits)."""
    return max(pipeline_memory(model, layout), key=lambda mb: mb.total)
