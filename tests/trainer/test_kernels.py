"""Every kernel's backward against central finite differences in float64.

Each test builds a scalar L = sum(out * R) for a fixed random R, so dL/dout = R;
the backward's gradients must match (L(x + eps) - L(x - eps)) / (2 eps) within
atol + rtol |ref| (llm.c's comparison style)."""

import numpy as np
import pytest

from trainer import kernels as K

RNG = np.random.default_rng(0)
EPS, ATOL, RTOL = 1e-6, 1e-7, 1e-5


def numeric_grad(f, x):
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + EPS
        up = f()
        flat[i] = old - EPS
        down = f()
        flat[i] = old
        gf[i] = (up - down) / (2 * EPS)
    return g


def close(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, atol=ATOL, rtol=RTOL)


def test_layernorm():
    N, C = 4, 7
    x, w, b = RNG.normal(size=(N, C)), RNG.normal(size=C), RNG.normal(size=C)
    R = RNG.normal(size=(N, C))
    out, mean, rstd = np.zeros((N, C)), np.zeros(N), np.zeros(N)

    def loss():
        K.layernorm_forward(out, mean, rstd, x, w, b)
        return float((out * R).sum())

    loss()
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    K.layernorm_backward(dx, dw, db, R, x, w, mean, rstd)
    close(dx, numeric_grad(loss, x))
    close(dw, numeric_grad(loss, w))
    close(db, numeric_grad(loss, b))
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + K.LN_EPS) * w + b
    loss()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_matmul():
    N, C, OC = 5, 4, 3
    x, w, b = RNG.normal(size=(N, C)), RNG.normal(size=(OC, C)), RNG.normal(size=OC)
    R = RNG.normal(size=(N, OC))
    out = np.zeros((N, OC))

    def loss():
        K.matmul_forward(out, x, w, b)
        return float((out * R).sum())

    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    K.matmul_backward(dx, dw, db, R, x, w)
    for analytic, param in ((dx, x), (dw, w), (db, b)):
        close(analytic, numeric_grad(loss, param))


def test_gelu():
    x = RNG.normal(size=(3, 5)) * 2
    R = RNG.normal(size=x.shape)
    out = np.zeros_like(x)

    def loss():
        K.gelu_forward(out, x)
        return float((out * R).sum())

    dx = np.zeros_like(x)
    K.gelu_backward(dx, x, R)
    close(dx, numeric_grad(loss, x))


@pytest.mark.parametrize("B,T,C,NH,tile", [(2, 5, 8, 2, 2), (1, 4, 6, 3, 128), (1, 7, 4, 2, 3)])
def test_attention(B, T, C, NH, tile):
    """Tiles of 2 and 3 queries over 5 and 7 (the last tile short), and one tile for all."""
    qkv = RNG.normal(size=(B, T, 3 * C))
    R = RNG.normal(size=(B, T, C))
    out, lse = np.zeros((B, T, C)), np.zeros((B, NH, T))
    scratch = K.AttentionScratch(B, NH, T, C // NH, np.float64, tile=tile)

    def loss():
        K.attention_forward(out, lse, qkv, NH, scratch)
        return float((out * R).sum())

    loss()
    dqkv = np.zeros_like(qkv)
    K.attention_backward(dqkv, R, out.copy(), qkv, lse, NH, scratch)
    close(dqkv, numeric_grad(loss, qkv))


def test_attention_is_causal_softmax_attention():
    """Against the direct formula on the full T x T matrix: softmax(q k^T / sqrt(hs)) v
    with the future masked, and each row's log-sum-exp (290 queries: 3 tiles, the last
    short), in float64 (so the error left is the kernels' exp)."""
    B, T, C, NH = 2, 290, 32, 4
    hs = C // NH
    qkv = RNG.normal(size=(B, T, 3 * C))
    out, lse = np.zeros((B, T, C)), np.zeros((B, NH, T))
    K.attention_forward(out, lse, qkv, NH, K.AttentionScratch(B, NH, T, hs, np.float64))
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s[..., np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
    top = s.max(-1, keepdims=True)
    total = np.exp(s - top).sum(-1, keepdims=True)
    want = (np.exp(s - top) / total @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    # (the kernels' exp is single precision's: relative error below 3e-7)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lse, (top + np.log(total))[..., 0], rtol=1e-6, atol=1e-6)


def test_the_tiles_compute_what_perfmodel_prices():
    """The share of the T x T products the tiles run, and the backward's products per
    forward product, are perfmodel's for FlashAttention (perfmodel.ops)."""
    from perfmodel.ops import FLASH_BACKWARD, FLASH_BLOCK, causal_fraction
    assert K.ATTENTION_TILE == FLASH_BLOCK and K.ATTENTION_BACKWARD == FLASH_BACKWARD
    for T in (1, 64, 128, 129, 256, 2048, 2049):
        assert K.causal_share(T) == causal_fraction(T)


def test_encoder():
    B, T, C, V = 2, 3, 4, 6
    inp = np.array([[1, 5, 1], [0, 2, 5]])
    wte, wpe = RNG.normal(size=(V, C)), RNG.normal(size=(T + 2, C))
    R = RNG.normal(size=(B, T, C))
    out = np.zeros((B, T, C))

    def loss():
        K.encoder_forward(out, inp, wte, wpe)
        return float((out * R).sum())

    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    K.encoder_backward(dwte, dwpe, R, inp)
    close(dwte, numeric_grad(loss, wte))
    close(dwpe, numeric_grad(loss, wpe))


def test_crossentropy():
    B, T, V = 2, 3, 5
    logits = RNG.normal(size=(B, T, V))
    targets = RNG.integers(0, V, size=(B, T))
    R = RNG.normal(size=(B, T))
    losses, probs = np.zeros((B, T)), np.zeros((B, T, V))

    def loss():
        K.crossentropy_forward(losses, probs, logits, targets)
        return float((losses * R).sum())

    loss()
    dlogits = np.zeros_like(logits)
    K.crossentropy_backward(dlogits, probs, targets, R)
    close(dlogits, numeric_grad(loss, logits))


def test_backwards_accumulate():
    """Gradient accumulation over micro-batches is a loop: backward adds."""
    x = RNG.normal(size=(3, 4))
    d = np.ones_like(x)
    K.gelu_backward(d, x, np.ones_like(x))
    once = d - 1
    K.gelu_backward(d, x, np.ones_like(x))
    np.testing.assert_allclose(d - 1, 2 * once)


def test_float32_kernels_agree_with_float64():
    x = RNG.normal(size=(6, 16))
    w, b = RNG.normal(size=16), RNG.normal(size=16)
    out64, out32 = np.zeros_like(x), np.zeros((6, 16), np.float32)
    K.layernorm_forward(out64, np.zeros(6), np.zeros(6), x, w, b)
    K.layernorm_forward(out32, np.zeros(6, np.float32), np.zeros(6, np.float32),
                        x.astype(np.float32), w.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)


def test_the_kernels_exp_is_single_precisions():
    """The arithmetic exp the vectorised loops call: relative error below 3e-7 wherever
    e^x is a normal float32, exact at 0, and clamped (not inf or NaN) beyond."""
    x = np.linspace(-87.0, 88.0, 1_000_001).astype(np.float32)
    got = np.empty_like(x)
    K.exp_into(got, x)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 3e-7
    edge = np.array([0.0, -1e4, 1e4, -np.inf], dtype=np.float32)
    K.exp_into(got[:4], edge)
    assert got[0] == 1.0 and 0 < got[1] < 1.3e-38 and np.isfinite(got[2]) and got[3] < 1.3e-38
