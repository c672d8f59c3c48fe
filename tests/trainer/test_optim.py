"""AdamW, clipping and the schedule against textbook formulas written out here."""

import math

import numpy as np
import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from trainer.optim import AdamW, AdamWConfig, decays, grad_norm
from trainer.params import initialize

MODEL = ModelSpec(layers=1, hidden=8, heads=2, vocab=16, seq=4, tied_embeddings=False)


def reference_adamw(p, grads, lr, c: AdamWConfig, decay_mask):
    """Loshchilov & Hutter 2019, Algorithm 2, with the global-norm clip (Pascanu 2013)."""
    p = p.astype(np.float64).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        norm = np.linalg.norm(g)
        g = g * min(1.0, c.clip / (norm + 1e-6))
        m = c.beta1 * m + (1 - c.beta1) * g
        v = c.beta2 * v + (1 - c.beta2) * g * g
        mhat, vhat = m / (1 - c.beta1 ** t), v / (1 - c.beta2 ** t)
        p -= lr * (mhat / (np.sqrt(vhat) + c.eps) + c.weight_decay * decay_mask * p)
    return p


def test_adamw_matches_the_algorithm_with_clipping_and_decay_mask():
    params = initialize(MODEL, seed=0)
    params.buffer[:] += 0.1                       # biases and LN weights nonzero too
    start = params.buffer.copy()
    c = AdamWConfig(lr=1e-2, clip=0.5)
    opt = AdamW(params, c)
    rng = np.random.default_rng(1)
    grads = [rng.normal(0, 0.3, params.size).astype(np.float32) for _ in range(5)]
    for g in grads:
        opt.step(params.buffer, g, c.lr, grad_norm(g))
    mask = np.concatenate([np.full(v.size, decays(n), dtype=float) for n, v in params.views.items()])
    want = reference_adamw(start, grads, c.lr, c, mask)
    np.testing.assert_allclose(params.buffer, want, rtol=2e-5, atol=2e-6)
    assert opt.step_count == 5


def test_weight_decay_skips_biases_and_layernorm():
    assert decays("wte") and decays("wpe") and decays("qkvw") and decays("lm_head")
    assert not decays("qkvb") and not decays("ln1w") and not decays("lnfb") and not decays("fcb")
    # with zero gradients only decayed tensors move
    params = initialize(MODEL, seed=0)
    params.buffer[:] += 0.5
    before = {n: v.copy() for n, v in params.views.items()}
    opt = AdamW(params, AdamWConfig(lr=0.1))
    opt.step(params.buffer, np.zeros_like(params.buffer), 0.1, 0.0)
    for name, view in params.views.items():
        moved = not np.array_equal(view, before[name])
        assert moved == decays(name), name


def test_grad_norm_is_the_l2_norm_in_float64():
    g = np.random.default_rng(0).normal(size=100_003).astype(np.float32)
    assert grad_norm(g) == pytest.approx(float(np.linalg.norm(g.astype(np.float64))), rel=1e-12)


def test_schedule_warms_up_then_follows_the_cosine_to_min_lr():
    c = AdamWConfig(lr=1.0, warmup=10, min_lr=0.1)
    assert c.rate(0, 110) == pytest.approx(0.1)
    assert c.rate(9, 110) == pytest.approx(1.0)
    assert c.rate(10, 110) == pytest.approx(1.0)
    assert c.rate(60, 110) == pytest.approx(0.55)                  # half-way: the mean
    assert c.rate(110, 110) == pytest.approx(0.1)
    assert c.rate(500, 110) == pytest.approx(0.1)                  # flat after the decay
    assert AdamWConfig(lr=2.0).rate(100, 100) == pytest.approx(0.2)  # default min lr/10
    rates = [c.rate(s, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("field,kwargs", [("lr", {"lr": 0}), ("beta2", {"beta2": 1.0}),
                                          ("clip", {"clip": -1}), ("min_lr", {"min_lr": 5.0})])
def test_bad_optimizer_settings_name_the_field(field, kwargs):
    with pytest.raises(SpecError) as err:
        AdamWConfig(**kwargs)
    assert err.value.field == field


def test_fugaku_llm_defaults():
    c = AdamWConfig()
    assert (c.beta1, c.beta2, c.weight_decay, c.clip) == (0.9, 0.95, 0.1, 1.0)
    assert math.isclose(c.eps, 1e-8)
