"""The op list of a transformer: FLOPs and bytes of every op, counted per TP rank.

Every op is a GEMM (``kind="gemm"``, with its m, n, k and batch count) or a
memory-bound kernel (``kind="mem"``). The closed forms of Narayanan et al. 2021
(Eq. 2, 3) and Korthikanti et al. 2022 (Eq. 7, 8) are cross-checks in the tests,
not the source of these numbers.

Conventions (one micro-batch of ``b`` sequences of ``s`` tokens, T = b s tokens;
t = tensor-parallel degree; e = bytes per activation element):

* A GEMM Y(m, n) = X(m, k) W(k, n) costs 2 m n k FLOPs forward; its backward is two
  GEMMs of the same size (dX = dY W^T, dW = X^T dY): 2x the forward FLOPs. Of a
  GEMM with a weight (``weighted``: the projections, the MLP and the logits; not the
  attention core's products of activations) the second, dW, is the weight gradient:
  the pass a zero-bubble schedule runs apart (``weight_gradient``; Qi et al. 2023).
* A memory-bound kernel reads and writes whole tensors once; its backward reads the
  output gradient and the saved input and writes the input gradient: counted as 2x
  the forward bytes and FLOPs.
* Non-GEMM FLOPs per element (small, counted so nothing is silently left out):
  layernorm 8, rmsnorm 5, GELU (tanh form) 16, SwiGLU 6, softmax with scale and
  mask 7, residual add 1, dropout 2, cross-entropy 6 (softmax + log + pick).
* Attention (``ATTENTIONS``): ``materialized`` computes the scores and the causal mask
  on the full s x s matrix and keeps it (as Megatron-LM's unfused kernels do; the
  closed forms count the same); ``flash`` is FlashAttention (Dao et al. 2022; Dao
  2023): one fused kernel per head that never writes the s x s matrix to memory
  (it reads Q, K, V and writes the output and a row's log-sum-exp), skips the key
  blocks the causal mask hides (about half of the products for long sequences:
  ``causal_fraction``) and in the backward recomputes the scores, so its backward
  runs 5 of the forward's 2 matrix products per block: 2.5x the forward, not 2x.
* The vocabulary is split over tensor-parallel ranks (Megatron's vocab-parallel
  embedding and logits): ceil(V / t) rows per rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpcore.caches import cached
from fpcore.errors import SpecError

from .model import ModelSpec
from .precisions import ACT_BYTES  # noqa: F401  (bytes of an activation element, per precision)

FLOPS_PER_ELEMENT = {"layernorm": 8, "rmsnorm": 5, "gelu": 16, "swiglu": 6, "softmax": 7,
                     "residual": 1, "dropout": 2, "cross_entropy": 6}
ATTENTIONS = ("materialized", "flash")
FLASH_BLOCK = 128        # FlashAttention's key/query block (Dao 2023: 128 x 128 tiles on A100)
FLASH_BACKWARD = 2.5     # its backward: recompute S = QK^T, then dV, dP, dQ, dK (5 products vs 2)


def causal_fraction(s: int, block: int = FLASH_BLOCK) -> float:
    """The share of (query block, key block) pairs a causal kernel computes: the lower
    triangle of an s/block x s/block grid, diagonal included."""
    n = max(1, -(-s // block))
    return (n + 1) / (2 * n)


@dataclass(frozen=True)
class Op:
    """One kernel of one micro-batch on one TP rank."""

    name: str
    kind: str                # "gemm" or "mem"
    flops: float
    bytes: float
    m: int = 0               # GEMM shape (per batch entry)
    n: int = 0
    k: int = 0
    batch: int = 1           # number of independent GEMMs (e.g. heads x sequences)
    backward: float = 2.0    # the backward's work over the forward's (see the conventions)
    weighted: bool = False   # a GEMM with a weight: half its backward is the weight gradient

    def scaled(self, factor: float, suffix: str) -> "Op":
        return Op(self.name + suffix, self.kind, self.flops * factor, self.bytes * factor,
                  self.m, self.n, self.k, self.batch, self.backward, self.weighted)


def gemm(name: str, m: int, n: int, k: int, e: int, batch: int = 1,
         weighted: bool = False) -> Op:
    return Op(name, "gemm", 2.0 * m * n * k * batch, float(e) * batch * (m * k + k * n + m * n),
              m, n, k, batch, weighted=weighted)


def weight_gradient(ops) -> tuple[Op, ...]:
    """The weight-gradient GEMMs (dW = X^T dY) of ``ops``' backward: one forward's worth
    of each GEMM with a weight. The rest of the backward is the input gradient."""
    return tuple(op.scaled(1.0, ".wgrad") for op in ops if op.weighted)


def mem(name: str, elements: float, reads: float, writes: float, e: int,
        flops_per_element: float, extra_bytes: float = 0.0) -> Op:
    return Op(name, "mem", elements * flops_per_element,
              elements * e * (reads + writes) + extra_bytes)


@dataclass(frozen=True)
class LayerOps:
    """Forward ops of one transformer layer and what its backward and recompute run."""

    forward: tuple[Op, ...]
    attention_core: tuple[str, ...]   # names re-run by selective recompute

    @property
    def backward(self) -> tuple[Op, ...]:
        return tuple(op.scaled(op.backward, ".bwd") for op in self.forward)

    @property
    def weight_gradient(self) -> tuple[Op, ...]:
        """The part of ``backward`` that is weight gradients (``weight_gradient``)."""
        return weight_gradient(self.forward)

    def recompute(self, mode: str) -> tuple[Op, ...]:
        if mode == "full":
            return tuple(op.scaled(1.0, ".rc") for op in self.forward)
        if mode == "selective":
            return tuple(op.scaled(1.0, ".rc") for op in self.forward
                         if op.name in self.attention_core)
        return ()


@cached("model", maxsize=4096)
def layer_ops(model: ModelSpec, tp: int, micro_batch: int, sequence_parallel: bool,
              precision: str, attention: str = "materialized", moe: bool = False,
              ep: int = 1, load: float = 1.0, cp: int = 1, expert_tp: bool = True) -> LayerOps:
    """The forward ops of one transformer layer on one of ``tp`` ranks, its attention
    core computed as ``attention`` says (``ATTENTIONS``; see the conventions); with
    ``moe``, one of the model's mixture-of-experts layers on one of ``ep`` expert-
    parallel ranks whose experts take ``load`` times their even share, split over the
    TP ranks or (not ``expert_tp``) whole on each (``moe_ops``);
    with ``cp`` > 1, on one of cp context-parallel ranks: s / cp of each sequence's
    tokens, whose queries meet every key (ring attention; the causal half balanced
    over the ranks, Megatron-Core's two chunks each)."""
    b, s, h, t = micro_batch, model.seq, model.hidden, tp
    e = ACT_BYTES[precision]
    sq = s // cp                                   # this rank's queries of a sequence
    T = b * sq
    heads, hd, f = model.heads // t, model.head_dim, model.ffn
    kv_cols = (model.kv_dim * 2) // t if model.kv_heads >= t else 2 * hd
    # Elementwise work outside the TP-split region is replicated on every rank
    # unless sequence parallelism splits it along the sequence (Korthikanti 2022).
    rows = T / t if sequence_parallel else T
    mask = 1 if model.dropout else 0
    norm_flops = FLOPS_PER_ELEMENT[model.norm]
    ops = [
        mem("norm1", rows * h, 1, 1, e, norm_flops),                          # (T, h) -> (T, h)
        gemm("qkv", T, h // t + kv_cols, h, e, weighted=True),  # (T, h) x (h, 3h/t)
    ]
    if attention == "flash":
        ops.append(flash_attention_op(b * heads, s, hd, e, cp))
        core = ("attn_flash",)
    elif attention == "materialized":
        ops.append(gemm("attn_scores", sq, s, hd, e, batch=b * heads))      # (b a/t, s, hd) x (hd, s)
        ops.append(mem("softmax", b * heads * sq * s, 1, 1, e,                # (b a/t, s, s)
                       FLOPS_PER_ELEMENT["softmax"]))
        if model.dropout:
            ops.append(mem("attn_dropout", b * heads * sq * s, 1, 1, e,
                           FLOPS_PER_ELEMENT["dropout"], extra_bytes=b * heads * sq * s * mask))
        ops.append(gemm("attn_v", sq, hd, s, e, batch=b * heads))            # (b a/t, s, s) x (s, hd)
        core = ("attn_scores", "softmax", "attn_dropout", "attn_v")
    else:
        raise SpecError("attention", f"must be one of {', '.join(ATTENTIONS)}; got {attention!r}")
    ops += [
        gemm("proj", T, h, h // t, e, weighted=True),  # (T, h/t) x (h/t, h)
        mem("residual1", rows * h, 2, 1, e,
            FLOPS_PER_ELEMENT["residual"] + mask * FLOPS_PER_ELEMENT["dropout"],
            extra_bytes=rows * h * mask),                                     # dropout + add
        mem("norm2", rows * h, 1, 1, e, norm_flops),
    ]
    if moe:
        ops += moe_ops(model, t, T, rows, e, ep, load, expert_tp)
    elif model.activation == "gelu":
        ops += [gemm("fc1", T, f // t, h, e, weighted=True),  # (T, h) x (h, f/t)
                mem("gelu", T * f / t, 1, 1, e, FLOPS_PER_ELEMENT["gelu"])]
    else:
        ops += [gemm("fc1", T, 2 * f // t, h, e, weighted=True),  # gate and up
                mem("swiglu", T * f / t, 2, 1, e, FLOPS_PER_ELEMENT["swiglu"])]
    if not moe:
        ops.append(gemm("fc2", T, h, f // t, e, weighted=True))  # (T, f/t) x (f/t, h)
    ops += [
        mem("residual2", rows * h, 2, 1, e,
            FLOPS_PER_ELEMENT["residual"] + mask * FLOPS_PER_ELEMENT["dropout"],
            extra_bytes=rows * h * mask),
    ]
    return LayerOps(tuple(ops), core)


def moe_ops(model: ModelSpec, t: int, T: int, rows: float, e: int, ep: int,
            load: float, expert_tp: bool = True) -> list[Op]:
    """The MLP of a mixture-of-experts layer on one rank of ``t`` (tensor) x ``ep``
    (expert) parallel ranks, for the ``T`` tokens of a micro-batch (``rows`` of them
    on this rank outside the tensor-parallel region), as Megatron-Core runs it with
    its all-to-all dispatcher (megatron/core/transformer/moe): the router (replicated
    on each TP rank) scores every expert and keeps the top k; the tokens are gathered
    into expert order (and, between ranks, dispatched and combined by all-to-alls that
    perfmodel.estimator prices); the rank's experts/ep experts each run its MLP,
    split over the TP ranks as the dense one is, on T k ep / experts tokens (times
    ``load``: an uneven router's busiest rank over the mean, capped by the capacity
    factor); the outputs are scattered back and summed with their router weights; the
    shared experts run on every token as one wider MLP.

    Not ``expert_tp``: each TP rank holds its experts whole and runs 1/t of their
    tokens, as DeepSpeed's MoE layer does when the experts are not tensor-parallel (it
    drops the TP ranks' duplicate tokens before the dispatch and gathers them back
    after: deepspeed/moe/sharded_moe.py, MOELayer.forward): the same FLOPs, in GEMMs t
    times narrower in tokens and t times wider."""
    h, fe, k = model.hidden, model.expert_ffn, model.top_k
    local = model.experts // ep
    te = t if expert_tp else 1                         # the TP ranks an expert spans
    tokens = T * k * ep / model.experts * model.routed_load(load) / (t // te)
    gate = 2 if model.activation == "swiglu" else 1
    act = "swiglu" if model.activation == "swiglu" else "gelu"
    ops = [gemm("router", rows, model.experts, h, e, weighted=True),     # (T, h) x (h, E)
           mem("router_topk", rows * model.experts, 1, 1, 4, FLOPS_PER_ELEMENT["softmax"]),
           mem("permute", rows * k * h, 1, 1, e, 0),
           gemm("expert_fc1", tokens, gate * fe // te, h, e, batch=local, weighted=True),
           mem(act, tokens * local * fe / te, gate, 1, e, FLOPS_PER_ELEMENT[act]),
           gemm("expert_fc2", tokens, h, fe // te, e, batch=local, weighted=True),
           mem("unpermute", rows * k * h, 1, 1, e, 2)]           # weight and sum the top k
    if model.shared_experts:
        fs = model.shared_experts * fe
        ops += [gemm("shared_fc1", T, gate * fs // t, h, e, weighted=True),
                mem(act, T * fs / t, gate, 1, e, FLOPS_PER_ELEMENT[act]),
                gemm("shared_fc2", T, h, fs // t, e, weighted=True)]
    return ops


def flash_attention_op(heads: int, s: int, hd: int, e: int, cp: int = 1) -> Op:
    """FlashAttention's fused forward over ``heads`` (batch x local heads) heads of ``s``
    queries: QK^T and PV on the causal blocks only, reading Q, K, V and writing the
    output (and 4-byte row statistics); its backward is FLASH_BACKWARD x this. On one
    of ``cp`` context-parallel ranks: its s / cp queries against all s keys, 1 / cp
    of the causal blocks (balanced), reading every key and value once."""
    sq = s // cp
    flops = 2 * (2.0 * s * s * hd) * heads * causal_fraction(s) / cp
    nbytes = heads * ((2 * sq + 2 * s) * hd * e + 4 * sq)
    return Op("attn_flash", "gemm", flops, nbytes, sq, s, hd, heads, backward=FLASH_BACKWARD)


def vocab_shard(model: ModelSpec, tp: int) -> int:
    return -(-model.vocab // tp)


@cached("model", maxsize=4096)
def embedding_ops(model: ModelSpec, tp: int, micro_batch: int, precision: str,
                  cp: int = 1) -> tuple[Op, ...]:
    """First stage, forward: token lookup (+ learned positions), of s / cp tokens."""
    T, h, e = micro_batch * model.seq // cp, model.hidden, ACT_BYTES[precision]
    reads = 2 if model.position == "learned" else 1
    return (mem("embedding", T * h, reads, 1, e, 1),)                         # (T,) -> (T, h)


@cached("model", maxsize=4096)
def head_ops(model: ModelSpec, tp: int, micro_batch: int, precision: str,
             cp: int = 1) -> tuple[Op, ...]:
    """Last stage, forward: final norm, logits and the cross-entropy loss (s / cp
    tokens)."""
    T, h, e = micro_batch * model.seq // cp, model.hidden, ACT_BYTES[precision]
    v = vocab_shard(model, tp)
    return (
        mem("final_norm", T * h, 1, 1, e, FLOPS_PER_ELEMENT[model.norm]),
        gemm("logits", T, v, h, e, weighted=True),  # (T, h) x (h, V/t)
        # loss in fp32 whatever the training precision (Megatron casts logits up)
        mem("cross_entropy", T * v, 1, 1, 4, FLOPS_PER_ELEMENT["cross_entropy"]),
    )


def total_flops(ops) -> float:
    return sum(op.flops for op in ops)


def gemm_flops(ops) -> float:
    return sum(op.flops for op in ops if op.kind == "gemm")


def model_flops_per_iteration(model: ModelSpec, global_batch: int,
                              include_elementwise: bool = False) -> float:
    """Model FLOPs of one iteration (forward + backward, no recompute), all ranks.

    This is the MFU numerator (Korthikanti et al. 2022 convention). By default only
    GEMMs count, as in the closed forms (Eq. 7); the elementwise kernels add well
    under 1% for these shapes and can be included for the hardware view.
    """
    return 3.0 * _flops_per_sequence(model, include_elementwise) * global_batch


@cached("model", maxsize=1024)
def _flops_per_sequence(model: ModelSpec, include_elementwise: bool) -> float:
    pick = total_flops if include_elementwise else gemm_flops
    return (_layers_total(model, lambda ops: pick(ops.forward))
            + pick(embedding_ops(model, 1, 1, "fp32")) + pick(head_ops(model, 1, 1, "fp32")))


def _layers_total(model: ModelSpec, of) -> float:
    """``of(LayerOps)`` summed over the model's layers (one sequence, one rank): the
    dense layers' and, of a mixture of experts, its MoE layers' (routed evenly)."""
    moe = model.moe_layers
    total = (model.layers - moe) * of(layer_ops(model, 1, 1, False, "fp32"))
    if moe:
        total += moe * of(layer_ops(model, 1, 1, False, "fp32", moe=True))
    return total


def model_flops_per_token(model: ModelSpec) -> float:
    return model_flops_per_iteration(model, 1) / model.seq


def hardware_flops_per_iteration(model: ModelSpec, global_batch: int, recompute: str) -> float:
    """FLOPs the hardware runs per iteration: model FLOPs plus the recomputed forward
    (``full``: every layer's forward again, Narayanan et al. 2021 Eq. 3; ``selective``:
    the attention core's). GEMMs only, as the published figures count."""
    extra = (_layers_total(model, lambda ops: gemm_flops(ops.recompute(recompute)))
             if recompute != "none" else 0.0)
    return model_flops_per_iteration(model, global_batch) + extra * global_batch
