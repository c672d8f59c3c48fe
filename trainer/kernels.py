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
# Floating-point liberties the elementwise loops may take so LLVM vectorises them (sums
# and maxima reassociated, fused multiply-adds); never "no NaNs / no infinities".
FAST = {"reassoc", "contract", "arcp", "nsz", "afn"}


# ------------------------------------------------------------------ exp
# Numba has no vector math library on this build: math.exp is a scalar call per element,
# which no loop around it can vectorise. _exp is the classic single-precision exp in
# arithmetic only (Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, a degree-6
# polynomial for e^r (the Cephes expf coefficients), 2^k put into the exponent bits), so
# the loops that call it vectorise (measured: 0.3 ns an element on one core against 2.6
# for numpy's float32 exp here); relative error below 2e-7 (tests/trainer/test_kernels.py).
_F = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2, _P3, _P4, _P5 = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
                                _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))
_ONE, _HALF, _MINUS_TWO = _F(1.0), _F(0.5), _F(-2.0)
_EXP_LO, _EXP_HI = _F(-87.33654), _F(88.37626)   # e^x stays a normal float32 (clamped)


@njit(cache=True, inline="always")
def _exp(x):
    x = min(max(x, _EXP_LO), _EXP_HI)
    k = np.rint(x * _LOG2E)                          # (rint, not floor: a vector instruction)
    r = x - k * _LN2_HI - k * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    p = p * r * r + r + _ONE
    return p * np.int32((np.int32(k) + 127) << 23).view(np.float32)


@njit(cache=True, inline="always")
def _tanh(y):
    # tanh(y) = sign(y) (1 - e) / (1 + e), e = exp(-2 |y|) <= 1: no overflow
    e = _exp(_MINUS_TWO * abs(y))
    t = (_ONE - e) / (_ONE + e)
    return t if y >= 0 else -t


@njit(cache=True, parallel=True, fastmath=FAST)
def exp_into(out, x):
    # out = e^x elementwise (the kernels' exp, for its tests); x, out 1-D
    for i in prange(x.size):
        out[i] = _exp(x[i])


# ------------------------------------------------------------------ encoder
def encoder_forward(out, inp, wte, wpe):
    # out (B, T, C) = wte[inp] + wpe[:T];  inp (B, T) token ids
    T = inp.shape[1]
    out[...] = wte[inp] + wpe[None, :T, :]


@njit(cache=True)
def encoder_backward(dwte, dwpe, dout, inp):
    # dout (B, T, C); scatter-add into the token rows and the position rows, in token
    # order (serial: two tokens may share a row; numpy's add.at is 10x slower)
    B, T, C = dout.shape
    for b in range(B):
        for t in range(T):
            row, pos, d = dwte[inp[b, t]], dwpe[t], dout[b, t]
            for c in range(C):
                row[c] += d[c]
                pos[c] += d[c]


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
# Causal attention in query tiles (the FlashAttention idea, Dao et al. 2022, on BLAS):
# tile i (queries r0:r1) sees keys 0:r1 only, so the masked half of the T x T scores is
# never computed, and the scores live only as one tile's strip (BH, tile, r1) in a
# buffer allocated once. Each strip holds every key a query sees, so its softmax is
# exact in one pass (no running rescaling). The forward keeps the output and each
# row's log-sum-exp; the backward recomputes a strip's probabilities from them and
# runs 5 products per strip (S, dP, dV, dQ, dK) against the forward's 2.
ATTENTION_TILE = 128        # queries per tile: perfmodel.ops.FLASH_BLOCK, its cost model
ATTENTION_BACKWARD = 2.5    # the backward's products per forward product (5 / 2)


def causal_share(T: int, tile: int = ATTENTION_TILE) -> float:
    """The share of the full T x T products the tiles compute: the lower triangle of a
    grid of n = ceil(T / tile) tiles, diagonal included, (n + 1) / 2n (the same count as
    perfmodel.ops.causal_fraction, which prices it; a test holds them equal)."""
    n = max(1, -(-T // tile))
    return (n + 1) / (2 * n)


class AttentionScratch:
    """Buffers of the tiled attention for (B, NH, T, hs), allocated once: one strip of
    scores and one of their gradients (B, NH, tile, T), the gradients of q, k and v and a
    product's output before it is added (B, NH, T, hs), and a statistic per query row
    (B, NH, T). The heads themselves are never copied: the products read q, k and v in
    place in the (B, T, 3C) activations and write the output in place (strided views,
    which BLAS takes as they are)."""

    def __init__(self, B: int, NH: int, T: int, hs: int, dtype=np.float32,
                 tile: int = ATTENTION_TILE):
        n = min(tile, T)
        self.tile = n
        self.dq, self.dk, self.dv, self.prod = (np.empty((B, NH, T, hs), dtype)
                                                for _ in range(4))
        self.s, self.ds = np.empty((B, NH, n, T), dtype), np.empty((B, NH, n, T), dtype)
        self.rows = np.empty((B, NH, T), dtype)   # per query: dO . O (backward)


def _heads(x, parts: int, NH: int):
    # x (B, T, parts C) -> views (parts, B, NH, T, hs) of each part's heads (no copy)
    B, T, width = x.shape
    return x.reshape(B, T, parts, NH, width // (parts * NH)).transpose(2, 0, 3, 1, 4)


@njit(cache=True, parallel=True, fastmath=FAST)
def causal_softmax_strip(s, n, r1, r0, scale, lse):
    # s (BH, tile, T): rows :n, columns :r1 hold q k^T of queries r0:r0+n against keys
    # 0:r1; in place -> softmax(scale * scores) over each query's keys 0..r0+i, the
    # later keys 0; lse (BH, T): row r0+i <- its log-sum-exp
    BH = s.shape[0]
    for j in prange(BH * n):
        b, i = j // n, j % n
        row, seen = s[b, i], r0 + i + 1
        top = row[0] * scale                # (of the rows' type, as every value below)
        for u in range(seen):
            v = row[u] * scale
            row[u] = v
            top = max(top, v)
        total = top - top
        for u in range(seen):
            e = _exp(row[u] - top)
            row[u] = e
            total += e
        inv = _ONE / total
        for u in range(seen):
            row[u] *= inv
        for u in range(seen, r1):
            row[u] = 0.0
        lse[b, r0 + i] = top + math.log(total)


@njit(cache=True, parallel=True, fastmath=FAST)
def causal_softmax_strip_again(s, n, r1, r0, scale, lse):
    # as causal_softmax_strip, from the rows' log-sum-exp lse (BH, T): p = exp(scale s - lse)
    BH = s.shape[0]
    for j in prange(BH * n):
        b, i = j // n, j % n
        row, seen, top = s[b, i], r0 + i + 1, lse[b, r0 + i]
        for u in range(seen):
            row[u] = _exp(row[u] * scale - top)
        for u in range(seen, r1):
            row[u] = 0.0


@njit(cache=True, parallel=True, fastmath=FAST)
def causal_softmax_strip_backward(ds, p, n, r1, r0, rows, scale):
    # ds (BH, tile, T) holds dP = dO V^T (rows :n, columns :r1), in place -> dS = scale p
    # (dP - rowsum(dO O)) (the softmax Jacobian, with rowsum(P dP) = dO . O; Dao et al.
    # 2022); rows (BH, T): dO . O of each query
    BH = ds.shape[0]
    for j in prange(BH * n):
        b, i = j // n, j % n
        d, q, seen, dot = ds[b, i], p[b, i], r0 + i + 1, rows[b, r0 + i]
        for u in range(seen):
            d[u] = scale * q[u] * (d[u] - dot)
        for u in range(seen, r1):
            d[u] = 0.0


def _strip(w, q, k, r0, r1, scale, lse, again: bool):
    # the probabilities of queries r0:r1 against keys 0:r1, in w.s[..., :n, :r1]; lse
    # (BH, T): each query's log-sum-exp, computed (the forward) or, ``again``, used (the
    # backward's recomputation)
    n = r1 - r0
    s = w.s[:, :, :n, :r1]
    np.matmul(q[:, :, r0:r1], k[:, :, :r1].transpose(0, 1, 3, 2), out=s)   # (B, NH, n, r1)
    strips = w.s.reshape(-1, *w.s.shape[2:])                                # (BH, tile, T)
    if again:
        causal_softmax_strip_again(strips, n, r1, r0, scale, lse)
    else:
        causal_softmax_strip(strips, n, r1, r0, scale, lse)
    return s


def attention_forward(out, lse, qkv, NH, w: AttentionScratch):
    # qkv (B, T, 3C) -> out (B, T, C); lse (B, NH, T) each query's log-sum-exp of its scaled
    # scores: softmax(q k^T / sqrt(hs)) v with a causal mask (Vaswani et al. 2017)
    B, T, C3 = qkv.shape
    q, k, v = _heads(qkv, 3, NH)                                 # (B, NH, T, hs) views
    y = _heads(out, 1, NH)[0]
    scale = w.s.dtype.type(1.0 / math.sqrt(C3 // 3 // NH))     # (float32 for float32)
    rows = lse.reshape(B * NH, T)
    for r0 in range(0, T, w.tile):
        r1 = min(T, r0 + w.tile)
        p = _strip(w, q, k, r0, r1, scale, rows, again=False)    # (B, NH, n, r1)
        np.matmul(p, v[:, :, :r1], out=y[:, :, r0:r1])           # (B, NH, n, hs)


def attention_backward(dqkv, dout, out, qkv, lse, NH, w: AttentionScratch):
    # dout, out (B, T, C), lse (B, NH, T) -> dqkv (B, T, 3C) +=; per strip, from the last
    # (which reaches every key) to the first, recomputed P = exp(S - lse): dV += P^T dO,
    # dP = dO V^T, dS = P (dP - rowsum(dO O)), dQ = scale dS K, dK += scale dS^T Q
    B, T, C3 = qkv.shape
    q, k, v = _heads(qkv, 3, NH)
    dy, y = _heads(dout, 1, NH)[0], _heads(out, 1, NH)[0]
    scale = w.s.dtype.type(1.0 / math.sqrt(C3 // 3 // NH))
    np.einsum("bhtd,bhtd->bht", dy, y, out=w.rows)
    rows, lse = w.rows.reshape(B * NH, T), lse.reshape(B * NH, T)
    strips = w.ds.reshape(-1, *w.ds.shape[2:])
    probs = w.s.reshape(-1, *w.s.shape[2:])
    starts = list(range(0, T, w.tile))
    for r0 in reversed(starts):
        r1 = min(T, r0 + w.tile)
        n = r1 - r0
        p = _strip(w, q, k, r0, r1, scale, lse, again=True)      # (B, NH, n, r1)
        g = dy[:, :, r0:r1]                                      # (B, NH, n, hs)
        first = r1 == T                                          # writes every key's rows
        np.matmul(p.transpose(0, 1, 3, 2), g, out=w.dv if first else w.prod[:, :, :r1])
        if not first:
            w.dv[:, :, :r1] += w.prod[:, :, :r1]
        ds = w.ds[:, :, :n, :r1]
        np.matmul(g, v[:, :, :r1].transpose(0, 1, 3, 2), out=ds)  # dP (B, NH, n, r1)
        causal_softmax_strip_backward(strips, probs, n, r1, r0, rows, scale)
        np.matmul(ds, k[:, :, :r1], out=w.dq[:, :, r0:r1])        # (B, NH, n, hs)
        np.matmul(ds.transpose(0, 1, 3, 2), q[:, :, r0:r1], out=w.dk if first else
                  w.prod[:, :, :r1])
        if not first:
            w.dk[:, :, :r1] += w.prod[:, :, :r1]
    dq, dk, dv = _heads(dqkv, 3, NH)
    dq += w.dq
    dk += w.dk
    dv += w.dv


# ------------------------------------------------------------------ GELU
# float32 constants: a Python float would make Numba compute a float32 array in float64
_GELU_SCALE, _GELU_CUBE = _F(GELU_SCALE), _F(0.044715)
_GELU_CUBE3 = _F(3.0 * 0.044715)


@njit(cache=True, parallel=True, fastmath=FAST)
def gelu_forward(out, inp):
    # out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (N,) any shape
    flat_in, flat_out = inp.ravel(), out.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        flat_out[i] = _HALF * x * (_ONE + _tanh(_GELU_SCALE * (x + _GELU_CUBE * x * x * x)))


@njit(cache=True, parallel=True, fastmath=FAST)
def gelu_backward(dinp, inp, dout):
    flat_in, flat_d, flat_o = inp.ravel(), dinp.ravel(), dout.ravel()
    for i in prange(flat_in.size):
        x = flat_in[i]
        th = _tanh(_GELU_SCALE * (x + _GELU_CUBE * x * x * x))
        sech2 = _ONE - th * th
        grad = _HALF * (_ONE + th) + x * _HALF * sech2 * _GELU_SCALE * (_ONE + _GELU_CUBE3 * x * x)
        flat_d[i] += grad * flat_o[i]


# ------------------------------------------------------------------ loss
@njit(cache=True, parallel=True, fastmath=FAST)
def crossentropy_forward(losses, probs, logits, targets):
    # logits, probs (B, T, V): probs = softmax(logits); losses (B, T) = -log probs[target]
    B, T, V = logits.shape
    for n in prange(B * T):
        b, t = n // T, n % T
        row, out = logits[b, t], probs[b, t]
        m = row[0]
        for v in range(V):
            m = max(m, row[v])
        s = 0.0
        for v in range(V):
            e = _exp(row[v] - m)
            out[v] = e
            s += e
        inv = 1.0 / s
        for v in range(V):
            out[v] *= inv
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
