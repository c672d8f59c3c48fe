"""Forward and backward kernels of a GPT, one function per layer in pairs (llm.c style).

Shapes in comments: B batch, T sequence, C channels, NH heads, hs = C / NH head
size, V vocabulary, OC output channels. Backward functions *accumulate* into their
gradient buffers (``+=``), as llm.c does, so gradient accumulation over
micro-batches is a loop. GEMMs go to BLAS through numpy; elementwise kernels are
Numba ``njit`` (``cache=True``). Every backward is checked against central finite
differences in float64 (tests/trainer/test_kernels.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from scipy.linalg.blas import get_blas_funcs   # scipy's own BLAS library: loaded here, at
                                               # import, so thread limits reach it too

GELU_SCALE = math.sqrt(2.0 / math.pi)     # Hendrycks & Gimpel 2016, tanh approximation
LN_EPS = 1e-5                              # Fugaku-LLM's LayerNorm epsilon (docs/facts.md)


# ------------------------------------------------------------------ encoder
def encoder_forward(out, inp, wte, wpe):
    # out (B, T, C) = wte[inp] + wpe[:T];  inp (B, T) token ids
    T = inp.shape[1]
    out[...] = wte[inp] + wpe[None, :T, :]


def encoder_backward(dwte, dwpe, dout, inp):
    # dout (B, T, C); scatter-add into the token rows and the position rows
    B, T, C = dout.shape
    np.add.at(dwte, inp.reshape(-1), dout.reshape(-1, C))
    dwpe[:T] += dout.sum(axis=0)


# ------------------------------------------------------------------ layernorm
@njit(cache=True, parallel=True)
def layernorm_forward(out, mean, rstd, inp, weight, bias):
    # inp, out (N, C); mean, rstd (N,); Ba, Kiros & Hinton 2016
    N, C = inp.shape
    for i in prange(N):
        m = 0.0
        for j in range(C):
            m += inp[i, j]
        m /= C
        v = 0.0
        for j in range(C):
            d = inp[i, j] - m
            v += d * d
        s = 1.0 / math.sqrt(v / C + LN_EPS)
        for j in range(C):
            out[i, j] = (inp[i, j] - m) * s * weight[j] + bias[j]
        mean[i] = m
        rstd[i] = s


@njit(cache=True)
def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    # dinp, dout, inp (N, C); dweight, dbias (C,)
    N, C = inp.shape
    for i in range(N):
        dnorm_mean = 0.0
        dnorm_norm_mean = 0.0
        for j in range(C):
            norm = (inp[i, j] - mean[i]) * rstd[i]
            dnorm = weight[j] * dout[i, j]
            dnorm_mean += dnorm
            dnorm_norm_mean += dnorm * norm
        dnorm_mean /= C
        dnorm_norm_mean /= C
        for j in range(C):
            norm = (inp[i, j] - mean[i]) * rstd[i]
            dnorm = weight[j] * dout[i, j]
            dbias[j] += dout[i, j]
            dweight[j] += norm * dout[i, j]
            dinp[i, j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd[i]


# ------------------------------------------------------------------ matmul (BLAS)
def gemm_accumulate(c, a, b, trans_a=False, trans_b=False):
    # c (M, N) += op(a) (M, K) @ op(b) (K, N), in place through BLAS gemm with beta = 1:
    # no temporary and no extra pass. Row-major c is column-major c^T, so BLAS computes
    # c^T += op(b)^T @ op(a)^T on the transposed views (all C-contiguous).
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        raise ValueError("gemm_accumulate needs C-contiguous arrays")
    gemm, = get_blas_funcs(("gemm",), (c,))
    out = gemm(1.0, b.T, a.T, beta=1.0, c=c.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=1)
    if not np.shares_memory(out, c):     # BLAS had to copy (never for the layouts used here)
        c[...] = out.T


def matmul_forward(out, inp, weight, bias):
    # out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC,)
    np.matmul(inp, weight.T, out=out)
    if bias is not None:
        out += bias


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    # dout (N, OC); dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp
    gemm_accumulate(dinp, dout, weight)
    gemm_accumulate(dweight, dout, inp, trans_a=True)
    if dbias is not None:
        dbias += dout.sum(axis=0)


# ------------------------------------------------------------------ attention
@njit(cache=True, parallel=True)
def causal_softmax_forward(att, preatt, scale):
    # preatt, att (B, NH, T, T): att[..., t, :t+1] = softmax(scale * preatt), 0 above
    B, NH, T, _ = preatt.shape
    for b in prange(B):
        for h in range(NH):
            for t in range(T):
                m = -np.inf
                for u in range(t + 1):
                    m = max(m, preatt[b, h, t, u] * scale)
                s = 0.0
                for u in range(t + 1):
                    e = math.exp(preatt[b, h, t, u] * scale - m)
                    att[b, h, t, u] = e
                    s += e
                for u in range(t + 1):
                    att[b, h, t, u] /= s
                for u in range(t + 1, T):
                    att[b, h, t, u] = 0.0


@njit(cache=True, parallel=True)
def causal_softmax_backward(dpreatt, datt, att, scale):
    # softmax Jacobian on the causal part: dpre = scale * att * (datt - sum(att * datt))
    B, NH, T, _ = att.shape
    for b in prange(B):
        for h in range(NH):
            for t in range(T):
                dot = 0.0
                for u in range(t + 1):
                    dot += att[b, h, t, u] * datt[b, h, t, u]
                for u in range(t + 1):
                    dpreatt[b, h, t, u] += scale * att[b, h, t, u] * (datt[b, h, t, u] - dot)


def _split_heads(x, NH):
    # (B, T, C) -> (B, NH, T, hs), contiguous so the batched matmuls go to BLAS
    B, T, C = x.shape
    return np.ascontiguousarray(x.reshape(B, T, NH, C // NH).transpose(0, 2, 1, 3))


def _merge_heads(out, y):
    # y (B, NH, T, hs) -> out (B, T, C)
    B, NH, T, hs = y.shape
    out.reshape(B, T, NH, hs)[...] = y.transpose(0, 2, 1, 3)


def attention_forward(out, att, qkv, NH):
    # qkv (B, T, 3C) -> out (B, T, C); att (B, NH, T, T) keeps the probabilities
    # Vaswani et al. 2017: softmax(q k^T / sqrt(hs)) v with a causal mask
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_split_heads(qkv[:, :, i * C:(i + 1) * C], NH) for i in range(3))
    preatt = q @ k.transpose(0, 1, 3, 2)                        # (B, NH, T, T)
    causal_softmax_forward(att, preatt, 1.0 / math.sqrt(C // NH))
    _merge_heads(out, att @ v)                                   # (B, NH, T, hs)


def attention_backward(dqkv, dout, qkv, att, NH):
    # dout (B, T, C) -> dqkv (B, T, 3C) +=
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_split_heads(qkv[:, :, i * C:(i + 1) * C], NH) for i in range(3))
    dy = _split_heads(dout, NH)                                  # (B, NH, T, hs)
    datt = dy @ v.transpose(0, 1, 3, 2)                          # (B, NH, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy
    dpre = np.zeros_like(att)
    causal_softmax_backward(dpre, datt, att, 1.0 / math.sqrt(C // NH))
    dq = dpre @ k
    dk = dpre.transpose(0, 1, 3, 2) @ q
    for i, d in enumerate((dq, dk, dv)):
        dqkv[:, :, i * C:(i + 1) * C] += d.transpose(0, 2, 1, 3).reshape(B, T, C)


# ------------------------------------------------------------------ GELU
@njit(cache=True, inline="always")
def _tanh(y):
    # tanh(y) = 1 - 2 / (1 + exp(2y)): one exp, exact to rounding in float64, and 3x
    # faster than math.tanh here (Numba has no vector math library on this build)
    return 1.0 - 2.0 / (1.0 + math.exp(2.0 * y))


@njit(cache=True, parallel=True)
def gelu_forward(out, inp):
    # out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (N,) any shape
    flat_in, flat_out = inp.ravel(), out.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        flat_out[i] = 0.5 * x * (1.0 + _tanh(GELU_SCALE * (x + 0.044715 * x * x * x)))


@njit(cache=True, parallel=True)
def gelu_backward(dinp, inp, dout):
    flat_in, flat_d, flat_o = inp.ravel(), dinp.ravel(), dout.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        th = _tanh(GELU_SCALE * (x + 0.044715 * x * x * x))
        sech2 = 1.0 - th * th
        grad = 0.5 * (1.0 + th) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x)
        flat_d[i] += grad * flat_o[i]


# ------------------------------------------------------------------ loss
@njit(cache=True, parallel=True)
def crossentropy_forward(losses, probs, logits, targets):
    # logits, probs (B, T, V): probs = softmax(logits); losses (B, T) = -log probs[target]
    B, T, V = logits.shape
    for n in prange(B * T):
        b, t = n // T, n % T
        m = -np.inf
        for v in range(V):
            m = max(m, logits[b, t, v])
        s = 0.0
        for v in range(V):
            e = math.exp(logits[b, t, v] - m)
            probs[b, t, v] = e
            s += e
        inv = 1.0 / s
        for v in range(V):
            probs[b, t, v] *= inv
        # -log p_y computed from the logits, so a tiny p_y cannot round to log(0)
        losses[b, t] = m + math.log(s) - logits[b, t, targets[b, t]]


@njit(cache=True, parallel=True)
def crossentropy_backward(dlogits, probs, targets, dlosses):
    # d(-log p_y)/dlogits = p - onehot(y), times the loss gradient dlosses (B, T)
    B, T, V = probs.shape
    for n in prange(B * T):
        b, t = n // T, n % T
        d = dlosses[b, t]
        for v in range(V):
            dlogits[b, t, v] += probs[b, t, v] * d
        dlogits[b, t, targets[b, t]] -= d
