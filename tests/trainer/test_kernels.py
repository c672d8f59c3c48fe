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


@pytest.mark.parametrize("B,T,C,NH", [(2, 5, 8, 2), (1, 4, 6, 3)])
def test_attention(B, T, C, NH):
    qkv = RNG.normal(size=(B, T, 3 * C))
    R = RNG.normal(size=(B, T, C))
    out, att = np.zeros((B, T, C)), np.zeros((B, NH, T, T))

    def loss():
        K.attention_forward(out, att, qkv, NH)
        return float((out * R).sum())

    loss()
    assert np.allclose(np.triu(att[0, 0], 1), 0) and np.allclose(att.sum(-1), 1)   # causal
    dqkv = np.zeros_like(qkv)
    K.attention_backward(dqkv, R, qkv, att, NH)
    close(dqkv, numeric_grad(loss, qkv))


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
