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
import os

# Numba's parallel loops run on OpenMP here; its threads spin while waiting, which
# stalls badly when the cores are shared. Passive waiting, unless the user chose.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

GELU_SCALE = math.sqrt(2.0 / math.pi)     # Hendrycks & Gimpel 2016, tanh approximation
LN_EPS = 1e-5                              # Fugaku-LLM's LayerNorm epsilon (FACTS.md)


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
def matmul_forward(out, inp, weight, bias):
    # out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias (OC,)
    np.matmul(inp, weight.T, out=out)
    out += bias


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    # dout (N, OC); dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp
    dinp += dout @ weight
    dweight += dout.T @ inp
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
    # (B, T, C) -> (B, NH, T, hs)
    B, T, C = x.shape
    return x.reshape(B, T, NH, C // NH).transpose(0, 2, 1, 3)


def attention_forward(out, att, qkv, NH):
    # qkv (B, T, 3C) -> out (B, T, C); att (B, NH, T, T) keeps the probabilities
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_split_heads(qkv[:, :, i * C:(i + 1) * C], NH) for i in range(3))
    preatt = q @ k.transpose(0, 1, 3, 2)                        # (B, NH, T, T)
    causal_softmax_forward(att, np.ascontiguousarray(preatt), 1.0 / math.sqrt(C // NH))
    y = att @ v                                                  # (B, NH, T, hs)
    out[...] = y.transpose(0, 2, 1, 3).reshape(B, T, C)


def attention_backward(dqkv, dout, qkv, att, NH):
    # dout (B, T, C) -> dqkv (B, T, 3C) +=
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_split_heads(qkv[:, :, i * C:(i + 1) * C], NH) for i in range(3))
    dy = _split_heads(dout, NH)                                  # (B, NH, T, hs)
    datt = np.ascontiguousarray(dy @ v.transpose(0, 1, 3, 2))    # (B, NH, T, T)
    dv = att.transpose(0, 1, 3, 2) @ dy
    dpre = np.zeros_like(att)
    causal_softmax_backward(dpre, datt, att, 1.0 / math.sqrt(C // NH))
    dq = dpre @ k
    dk = dpre.transpose(0, 1, 3, 2) @ q
    for i, d in enumerate((dq, dk, dv)):
        dqkv[:, :, i * C:(i + 1) * C] += d.transpose(0, 2, 1, 3).reshape(B, T, C)


# ------------------------------------------------------------------ GELU
@njit(cache=True, parallel=True)
def gelu_forward(out, inp):
    # out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    flat_in, flat_out = inp.ravel(), out.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        flat_out[i] = 0.5 * x * (1.0 + math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)))


@njit(cache=True, parallel=True)
def gelu_backward(dinp, inp, dout):
    flat_in, flat_d, flat_o = inp.ravel(), dinp.ravel(), dout.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        cube = 0.044715 * x * x * x
        th = math.tanh(GELU_SCALE * (x + cube))
        sech2 = 1.0 - th * th
        grad = 0.5 * (1.0 + th) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x)
        flat_d[i] += grad * flat_o[i]


# ------------------------------------------------------------------ loss
def crossentropy_forward(losses, probs, logits, targets):
    # logits (B, T, V) -> probs (B, T, V) softmax; losses (B, T) = -log p[target]
    m = logits.max(axis=-1, keepdims=True)
    e = np.exp(logits - m)
    probs[...] = e / e.sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(probs, targets[..., None], axis=-1)[..., 0]
    losses[...] = -np.log(picked)


def crossentropy_backward(dlogits, probs, targets, dlosses):
    # d(-log p_y)/dlogits = p - onehot(y), times the loss gradient (B, T)
    grad = probs.copy()
    np.put_along_axis(grad, targets[..., None], np.take_along_axis(grad, targets[..., None], -1) - 1, -1)
    dlogits += grad * dlosses[..., None]
