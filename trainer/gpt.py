"""The GPT forward and backward passes, assembled from trainer.kernels (llm.c's
``gpt2_forward`` / ``gpt2_backward``).

Architecture (Radford et al. 2019; Fugaku-LLM's, see docs/facts.md): learned token and
position embeddings, L pre-LN blocks ``x += attproj(attn(ln1(x)))``,
``x += fcproj(gelu(fc(ln2(x))))``, a final LayerNorm and the output layer, tied
to the token embedding unless the ModelSpec says otherwise.

Shapes: B micro-batch, T sequence, C hidden, L layers, NH heads, F ffn, V vocab.
Every activation the backward needs is kept (no recompute), stacked over layers
like llm.c's ``ActivationTensors``. Backward *accumulates* into the gradient
buffer, so gradient accumulation over micro-batches is a loop of
forward/backward pairs and one zeroing per step.

Every kernel call goes through ``timer(name, flops, bytes)`` (trainer.timers), so
a profile sees each forward and backward kernel and every GEMM by shape.
"""

from __future__ import annotations

import math

import numpy as np

from perfmodel.model import ModelSpec

from . import kernels as K
from .params import WHOLE, FlatTensors, Stage, check_trainable
from .tensor import Group
from .timers import NullTimers


def activation_shapes(model: ModelSpec, B: int, T: int, tp: int = 1,
                      stage: Stage = WHOLE) -> dict[str, tuple[int, ...]]:
    """The shape of every buffer one micro-batch's forward pass keeps, by name (with
    ``tp`` > 1: one rank's of a TP group, its heads, MLP width and vocabulary slice; of
    a pipeline ``stage``: its layers, ``encoded`` its input, the head's only on the last)."""
    L, C, NH, F, V = model.layers, model.hidden, model.heads // tp, model.ffn // tp, \
        model.vocab // tp
    return {
        "encoded": (B, T, C),                             # token + position embedding
        "ln1": (L, B, T, C), "ln1_mean": (L, B * T), "ln1_rstd": (L, B * T),
        "qkv": (L, B, T, 3 * C // tp),
        "atty": (L, B, T, C // tp),                       # attention output before proj
        "lse": (L, B, NH, T),                             # each query's log-sum-exp
        "attproj": (L, B, T, C),
        "residual2": (L, B, T, C),                        # x + attention
        "ln2": (L, B, T, C), "ln2_mean": (L, B * T), "ln2_rstd": (L, B * T),
        "fch": (L, B, T, F),                              # before GELU
        "fch_gelu": (L, B, T, F),
        "fcproj": (L, B, T, C),
        "residual3": (L, B, T, C),                        # block output
        **({"lnf": (B, T, C), "lnf_mean": (B * T,), "lnf_rstd": (B * T,),
            "logits": (B, T, V), "probs": (B, T, V), "losses": (B, T)} if stage.last else {}),
    }


def scratch_shapes(model: ModelSpec, B: int, T: int, tp: int = 1) -> dict[str, tuple[int, ...]]:
    """The backward pass's buffers, reused by every layer: d(final LayerNorm), d(residual
    stream), d(LayerNorm output), d(attention output), d(GELU output), d(FC output),
    d(qkv)."""
    C, F = model.hidden, model.ffn // tp
    return {"dlnf": (B, T, C), "dresidual": (B, T, C), "dln": (B, T, C),
            "datty": (B, T, C // tp), "dfch_gelu": (B, T, F), "dfch": (B, T, F),
            "dqkv": (B, T, 3 * C // tp)}


def backward_scratch_elements(model: ModelSpec, B: int, T: int, tp: int = 1) -> int:
    """Elements of the buffers the backward pass uses besides the activations, all
    allocated once per run: ``scratch_shapes`` and the tiled attention's
    (trainer.kernels.AttentionScratch: dq, dk, dv and a product (B, NH, T, hs); two
    strips (B, NH, tile, T); a statistic per query (B, NH, T))."""
    hs, NH = model.hidden // model.heads, model.heads // tp
    tile = min(K.ATTENTION_TILE, T)
    attention = B * NH * (4 * T * hs + 2 * tile * T + T)
    return sum(math.prod(shape) for shape in scratch_shapes(model, B, T, tp).values()) + attention


class Activations:
    """Buffers of one micro-batch's forward pass and the backward pass's scratch, allocated
    once per (B, T); shapes in ``activation_shapes`` and ``scratch_shapes``."""

    def __init__(self, model: ModelSpec, B: int, T: int, dtype=np.float32, tp: int = 1,
                 stage: Stage = WHOLE):
        self.B, self.T = B, T
        for name, shape in activation_shapes(model, B, T, tp, stage).items():
            setattr(self, name, np.zeros(shape, dtype=dtype))
        for name, shape in scratch_shapes(model, B, T, tp).items():
            setattr(self, name, np.zeros(shape, dtype=dtype))
        self.attention = K.AttentionScratch(B, model.heads // tp, T,
                                            model.hidden // model.heads, dtype)

    def fits(self, B: int, T: int) -> bool:
        return (self.B, self.T) == (B, T)


def attention_flops(B: int, T: int, C: int) -> float:
    """FLOPs of the tiled causal attention's forward: QK^T and PV on the key blocks its
    query tiles see (``kernels.causal_share`` of the full T x T products)."""
    return 4.0 * B * T * T * C * K.causal_share(T)


def output_weight(params: FlatTensors) -> str:
    return "lm_head" if "lm_head" in params.views else "wte"


def _rows(x):
    # (..., X) -> (N, X) view for the row-wise kernels
    return x.reshape(-1, x.shape[-1])


def gpt_forward(model: ModelSpec, params: FlatTensors, acts: Activations, inp, targets=None,
                timer=None, group: Group | None = None, stage: Stage = WHOLE) -> float | None:
    """Forward pass of ``inp`` (B, T) token ids; with ``targets`` (B, T) the mean loss.
    With a TP ``group`` of t ranks, ``params`` and ``acts`` are this rank's part
    (trainer.tensor): its heads, MLP columns and vocabulary slice, the row-parallel
    outputs and the embedding summed over the group, the loss over its vocabularies.
    A pipeline ``stage`` (``model.layers`` its layers) that is not the first starts from
    ``acts.encoded`` as given; one that is not the last ends at its last block's
    output (and returns None)."""
    check_trainable(model)
    t = timer or NullTimers()
    g = group or Group()
    p, a = params, acts
    B, T = inp.shape
    C, NH, F, V = model.hidden, model.heads // g.size, model.ffn // g.size, model.vocab // g.size
    N = B * T
    if stage.first:
        with t("encoder_forward", bytes_=4 * N * C * 3):
            if g.size == 1:
                K.encoder_forward(a.encoded, inp, p["wte"], p["wpe"])
            else:
                _vocab_parallel_embedding(a.encoded, inp, p["wte"], p["wpe"], g, model.vocab)
    x = a.encoded
    for layer in range(model.layers):
        with t("layernorm_forward", bytes_=4 * N * C * 2):
            K.layernorm_forward(_rows(a.ln1[layer]), a.ln1_mean[layer], a.ln1_rstd[layer],
                                _rows(x), p["ln1w"][layer], p["ln1b"][layer])
        _matmul_forward(t, a.qkv[layer], a.ln1[layer], p["qkvw"][layer], p["qkvb"][layer])
        with t("attention_forward", flops=attention_flops(B, T, C // g.size),
               bytes_=4 * N * C // g.size * 4):
            K.attention_forward(a.atty[layer], a.lse[layer], a.qkv[layer], NH, a.attention)
        _row_parallel(t, g, a.attproj[layer], a.atty[layer], p["attprojw"][layer],
                      p["attprojb"][layer])
        with t("residual_forward", bytes_=4 * N * C * 3):
            np.add(x, a.attproj[layer], out=a.residual2[layer])
        with t("layernorm_forward", bytes_=4 * N * C * 2):
            K.layernorm_forward(_rows(a.ln2[layer]), a.ln2_mean[layer], a.ln2_rstd[layer],
                                _rows(a.residual2[layer]), p["ln2w"][layer], p["ln2b"][layer])
        _matmul_forward(t, a.fch[layer], a.ln2[layer], p["fcw"][layer], p["fcb"][layer])
        with t("gelu_forward", bytes_=4 * N * F * 2):
            K.gelu_forward(a.fch_gelu[layer], a.fch[layer])
        _row_parallel(t, g, a.fcproj[layer], a.fch_gelu[layer], p["fcprojw"][layer],
                      p["fcprojb"][layer])
        with t("residual_forward", bytes_=4 * N * C * 3):
            np.add(a.residual2[layer], a.fcproj[layer], out=a.residual3[layer])
        x = a.residual3[layer]
    if not stage.last:
        return None
    with t("layernorm_forward", bytes_=4 * N * C * 2):
        K.layernorm_forward(_rows(a.lnf), a.lnf_mean, a.lnf_rstd, _rows(x), p["lnfw"], p["lnfb"])
    with t(f"matmul_forward {N}x{C}x{V}", flops=2 * N * C * V, bytes_=4 * (N * C + V * C + N * V)):
        np.matmul(a.lnf, p[output_weight(p)].T, out=a.logits)        # (B, T, V), no bias
    if targets is None:
        return None
    with t("crossentropy_forward", bytes_=4 * N * V * 3):
        if g.size == 1:
            K.crossentropy_forward(a.losses, a.probs, a.logits, targets)
        else:
            _vocab_parallel_crossentropy(a.losses, a.probs, a.logits, targets, g, model.vocab)
    return float(a.losses.mean(dtype=np.float64))


def _vocab_parallel_embedding(out, inp, wte, wpe, g: Group, vocab: int):
    # out (B, T, C) = the rows of the tokens this rank's slice holds, summed over the group
    # (each token's row lives on one rank), + positions
    lo, hi = g.vocab_range(vocab)
    mine = (inp >= lo) & (inp < hi)
    out.fill(0.0)
    out[mine] = wte[inp[mine] - lo]
    g.sum(out)
    out += wpe[None, :inp.shape[1], :]


def _vocab_parallel_crossentropy(losses, probs, logits, targets, g: Group, vocab: int):
    # logits, probs (B, T, V/t) this rank's vocabulary slice; losses (B, T): the softmax over
    # the whole vocabulary from the slices' maximum and sum of exponentials (over the
    # group) and the target's logit (on the rank that holds it); Megatron-LM's
    # vocab-parallel cross-entropy
    top = logits.max(axis=2)
    g.max(top)
    np.subtract(logits, top[..., None], out=probs)
    np.exp(probs, out=probs)
    total = probs.sum(axis=2)
    g.sum(total)
    probs /= total[..., None]
    lo, hi = g.vocab_range(vocab)
    mine = (targets >= lo) & (targets < hi)
    picked = np.zeros(targets.shape, dtype=logits.dtype)
    b, t = np.nonzero(mine)
    picked[b, t] = logits[b, t, targets[b, t] - lo]
    g.sum(picked)
    losses[...] = top + np.log(total) - picked


def _row_parallel(t, g: Group, out, inp, weight, bias):
    # out = inp @ weight^T + bias; over a TP group, this rank's partial product (its input
    # columns) summed over the group, then the bias, once
    if g.size == 1:
        _matmul_forward(t, out, inp, weight, bias)
        return
    _matmul_forward(t, out, inp, weight, None)
    g.sum(out, timer=t)
    out += bias


def _matmul_forward(t, out, inp, weight, bias):
    # out (B, T, OC) = inp (B, T, C) @ weight (OC, C)^T + bias
    N, C = _rows(inp).shape
    OC = weight.shape[0]
    with t(f"matmul_forward {N}x{C}x{OC}", flops=2 * N * C * OC,
           bytes_=4 * (N * C + OC * C + N * OC)):
        K.matmul_forward(_rows(out), _rows(inp), weight, bias)


def _matmul_backward(t, dinp, dweight, dbias, dout, inp, weight):
    N, C = _rows(inp).shape
    OC = weight.shape[0]
    with t(f"matmul_backward {N}x{C}x{OC}", flops=4 * N * C * OC,
           bytes_=4 * 2 * (N * C + OC * C + N * OC)):
        K.matmul_backward(_rows(dinp), dweight, dbias, _rows(dout), _rows(inp), weight)


def _head_backward(t, tg: Group, model: ModelSpec, p, g, a, targets, loss_scale: float) -> None:
    # the loss back to the last block's output: d(cross-entropy), the output layer's GEMMs
    # (its input gradient summed over a TP group) and the final LayerNorm, into a.dresidual
    B, T = targets.shape
    C, V, N = model.hidden, model.vocab // tg.size, B * T
    dtype = a.encoded.dtype
    dlogits = a.logits                                      # logits are spent: reuse (B, T, V)
    with t("crossentropy_backward", bytes_=4 * N * V * 3):
        if tg.size == 1:
            dlogits.fill(0.0)
            K.crossentropy_backward(dlogits, a.probs, targets,
                                    np.full((B, T), loss_scale, dtype=dtype))
        else:                          # p - onehot(target) on this rank's vocabulary slice
            np.multiply(a.probs, dtype.type(loss_scale), out=dlogits)
            lo, hi = tg.vocab_range(model.vocab)
            b, s = np.nonzero((targets >= lo) & (targets < hi))
            dlogits[b, s, targets[b, s] - lo] -= dtype.type(loss_scale)
    dlnf = a.dlnf
    dlnf.fill(0.0)
    out_name = output_weight(p)
    with t(f"matmul_backward {N}x{C}x{V}", flops=4 * N * C * V, bytes_=4 * 2 * (N * C + V * C + N * V)):
        K.gemm_accumulate(_rows(dlnf), _rows(dlogits), p[out_name])            # (N, V) @ (V, C)
        K.gemm_accumulate(g[out_name], _rows(dlogits), _rows(a.lnf), trans_a=True)  # (V, N) @ (N, C)
    tg.sum(dlnf, timer=t)
    L = model.layers
    x_last = a.residual3[L - 1] if L else a.encoded
    a.dresidual.fill(0.0)
    with t("layernorm_backward", bytes_=4 * N * C * 4):
        K.layernorm_backward(_rows(a.dresidual), g["lnfw"], g["lnfb"], _rows(dlnf),
                             _rows(x_last), p["lnfw"], a.lnf_mean, a.lnf_rstd)


def gpt_backward(model: ModelSpec, params: FlatTensors, grads: FlatTensors, acts: Activations,
                 inp, targets, loss_scale: float, timer=None, group: Group | None = None,
                 stage: Stage = WHOLE) -> None:
    """Accumulate d(loss_scale * sum of token losses)/dparams into ``grads``.

    ``loss_scale`` is 1 / (tokens averaged over): 1 / (B T) for one micro-batch's mean;
    1 / (B T micro_batches ranks) for the mean over a whole global batch.
    The forward pass of the same (inp, targets) must have just run on ``acts``. With a
    TP ``group``, the gradient entering each column-parallel GEMM's input (and the final
    LayerNorm's, from the logits) is summed over the group (gpt_forward). A pipeline
    ``stage`` that is not the last starts from ``acts.dresidual``, the gradient of its
    output as given; one that is not the first leaves there the gradient of its input."""
    t = timer or NullTimers()
    tg = group or Group()
    p, g, a = params, grads, acts
    B, T = inp.shape
    L, C, F = model.layers, model.hidden, model.ffn // tg.size
    N = B * T
    dresidual = a.dresidual                                              # d(block output)
    if stage.last:
        _head_backward(t, tg, model, p, g, a, targets, loss_scale)
    # scratch buffers reused by every layer
    dln, dfch_gelu, dfch, datty, dqkv = a.dln, a.dfch_gelu, a.dfch, a.datty, a.dqkv
    for layer in reversed(range(L)):
        x_in = a.residual3[layer - 1] if layer else a.encoded
        # MLP: residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
        dfch_gelu.fill(0.0)
        _matmul_backward(t, dfch_gelu, g["fcprojw"][layer], g["fcprojb"][layer], dresidual,
                         a.fch_gelu[layer], p["fcprojw"][layer])
        dfch.fill(0.0)
        with t("gelu_backward", bytes_=4 * N * F * 3):
            K.gelu_backward(dfch, a.fch[layer], dfch_gelu)
        dln.fill(0.0)
        _matmul_backward(t, dln, g["fcw"][layer], g["fcb"][layer], dfch, a.ln2[layer],
                         p["fcw"][layer])
        tg.sum(dln, timer=t)
        # dresidual now flows into residual2 both directly and through ln2
        with t("layernorm_backward", bytes_=4 * N * C * 4):
            K.layernorm_backward(_rows(dresidual), g["ln2w"][layer], g["ln2b"][layer], _rows(dln),
                                 _rows(a.residual2[layer]), p["ln2w"][layer],
                                 a.ln2_mean[layer], a.ln2_rstd[layer])
        # attention: residual2 = x_in + attproj(attn(ln1(x_in)))
        datty.fill(0.0)
        _matmul_backward(t, datty, g["attprojw"][layer], g["attprojb"][layer], dresidual,
                         a.atty[layer], p["attprojw"][layer])
        dqkv.fill(0.0)
        with t("attention_backward",
               flops=K.ATTENTION_BACKWARD * attention_flops(B, T, C // tg.size),
               bytes_=4 * N * C // tg.size * 8):
            K.attention_backward(dqkv, datty, a.atty[layer], a.qkv[layer], a.lse[layer],
                                 model.heads // tg.size, a.attention)
        dln.fill(0.0)
        _matmul_backward(t, dln, g["qkvw"][layer], g["qkvb"][layer], dqkv, a.ln1[layer],
                         p["qkvw"][layer])
        tg.sum(dln, timer=t)
        with t("layernorm_backward", bytes_=4 * N * C * 4):
            K.layernorm_backward(_rows(dresidual), g["ln1w"][layer], g["ln1b"][layer], _rows(dln),
                                 _rows(x_in), p["ln1w"][layer], a.ln1_mean[layer],
                                 a.ln1_rstd[layer])
    if not stage.first:
        return
    with t("encoder_backward", bytes_=4 * N * C * 3):
        if tg.size == 1:
            K.encoder_backward(g["wte"], g["wpe"], dresidual, inp)
        else:                          # the rows of this rank's slice; every position
            lo, hi = tg.vocab_range(model.vocab)
            mine = (inp >= lo) & (inp < hi)
            np.add.at(g["wte"], inp[mine] - lo, dresidual[mine])
            g["wpe"][:T] += dresidual.sum(axis=0)
