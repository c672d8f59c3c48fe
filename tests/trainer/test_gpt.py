"""The assembled GPT: whole-model gradient against finite differences, FLOPs and loss
against perfmodel's closed forms."""

import math

import numpy as np
import pytest

from perfmodel.model import ModelSpec
from perfmodel.ops import model_flops_per_iteration
from trainer.gpt import Activations, gpt_backward, gpt_forward
from trainer.params import allocate, initialize
from trainer.timers import Timers

EPS, ATOL, RTOL = 1e-6, 1e-8, 1e-5


def _batch(model, B, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, model.vocab, (B, model.seq)),
            rng.integers(0, model.vocab, (B, model.seq)))


@pytest.mark.parametrize("tied", [True, False])
def test_whole_model_gradient_matches_central_differences(tied):
    # float64, every parameter perturbed; random (not initial) weights so LayerNorm
    # weights, biases and positions all matter
    model = ModelSpec(layers=2, hidden=8, heads=2, vocab=11, seq=5, tied_embeddings=tied)
    params = allocate(model, dtype=np.float64)
    params.buffer[:] = np.random.default_rng(3).normal(0.0, 0.3, params.size)
    grads = allocate(model, dtype=np.float64)
    inp, tgt = _batch(model, 2)
    acts = Activations(model, 2, model.seq, dtype=np.float64)
    gpt_forward(model, params, acts, inp, tgt)
    gpt_backward(model, params, grads, acts, inp, tgt, 1.0 / inp.size)
    numeric = np.zeros_like(params.buffer)
    for i in range(params.size):
        old = params.buffer[i]
        params.buffer[i] = old + EPS
        up = gpt_forward(model, params, acts, inp, tgt)
        params.buffer[i] = old - EPS
        down = gpt_forward(model, params, acts, inp, tgt)
        params.buffer[i] = old
        numeric[i] = (up - down) / (2 * EPS)
    for name, view in grads.views.items():      # name the tensor that fails
        start = (view.__array_interface__["data"][0]
                 - grads.buffer.__array_interface__["data"][0]) // 8
        np.testing.assert_allclose(view.ravel(), numeric[start:start + view.size],
                                   atol=ATOL, rtol=RTOL, err_msg=name)
    assert np.abs(numeric).max() > 1e-2          # the check compares real gradients


def test_backward_accumulates_so_micro_batches_sum():
    model = ModelSpec(layers=1, hidden=8, heads=2, vocab=13, seq=4)
    params = initialize(model, seed=1)
    (x1, y1), (x2, y2) = _batch(model, 1, 1), _batch(model, 1, 2)
    acts = Activations(model, 1, model.seq)
    separate = []
    for x, y in ((x1, y1), (x2, y2)):
        g = allocate(model)
        gpt_forward(model, params, acts, x, y)
        gpt_backward(model, params, g, acts, x, y, 0.5 / x.size)
        separate.append(g.buffer.copy())
    both = allocate(model)
    acts2 = Activations(model, 2, model.seq)
    x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2])
    gpt_forward(model, params, acts2, x, y)
    gpt_backward(model, params, both, acts2, x, y, 1.0 / x.size)
    np.testing.assert_allclose(separate[0] + separate[1], both.buffer, rtol=1e-4, atol=1e-7)


def test_initial_loss_is_log_vocab():
    # GPT-2 initialisation makes the logits nearly uniform: loss ~ ln V
    model = ModelSpec(layers=2, hidden=32, heads=4, vocab=256, seq=16)
    inp, tgt = _batch(model, 4)
    loss = gpt_forward(model, initialize(model), Activations(model, 4, model.seq), inp, tgt)
    assert abs(loss - math.log(model.vocab)) < 0.05


@pytest.mark.parametrize("tied, seq", [(True, 12), (False, 12), (True, 300)])
def test_timed_flops_equal_perfmodel_counts(tied, seq):
    """One formula, one place: the GEMM FLOPs the trainer times are the Korthikanti Eq. 7
    count perfmodel uses for MFU, except the attention's, which are what its tiles run:
    perfmodel's FlashAttention op, forward and backward (300 tokens: 3 tiles, the
    masked ones skipped)."""
    from perfmodel.ops import flash_attention_op
    model = ModelSpec(layers=3, hidden=24, heads=3, vocab=40, seq=seq, tied_embeddings=tied)
    B = 2
    params, grads, timers = initialize(model), allocate(model), Timers()
    acts = Activations(model, B, model.seq)
    inp, tgt = _batch(model, B)
    gpt_forward(model, params, acts, inp, tgt, timer=timers)
    gpt_backward(model, params, grads, acts, inp, tgt, 1.0, timer=timers)
    timed = sum(r["flops"] for r in timers.records())
    full = 3 * 4.0 * B * seq * seq * model.hidden          # Eq. 7's attention, 3 passes
    tiles = flash_attention_op(B * model.heads, seq, model.head_dim, 4)
    assert timed == pytest.approx(model_flops_per_iteration(model, B) + model.layers * (
        (1 + tiles.backward) * tiles.flops - full), rel=1e-12)
    names = {r["kernel"] for r in timers.records()}
    assert {"matmul_forward", "matmul_backward", "attention_forward", "attention_backward",
            "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
            "crossentropy_forward", "crossentropy_backward", "encoder_forward",
            "encoder_backward", "residual_forward"} <= names


def test_inference_forward_without_targets_gives_logits_only():
    model = ModelSpec(layers=1, hidden=8, heads=2, vocab=13, seq=6)
    acts = Activations(model, 1, 6)
    inp, _ = _batch(model, 1)
    assert gpt_forward(model, initialize(model), acts, inp) is None
    assert np.isfinite(acts.logits).all() and acts.logits.any()
