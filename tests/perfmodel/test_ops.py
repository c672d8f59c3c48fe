"""Op-level FLOP accounting against the published closed forms (docs/formulas.md)."""

import pytest

from perfmodel.model import ModelSpec
from perfmodel.ops import (gemm_flops, head_ops, layer_ops, model_flops_per_iteration,
                           model_flops_per_token)
from perfmodel.presets import load_model

RTOL = 1e-12
PRESETS = ["fugaku-llm-13b", "megatron-1.7b", "megatron-22b", "megatron-145.6b",
           "megatron-1t"]


def close(actual, ref, rtol=RTOL, atol=0.0):
    return abs(actual - ref) <= atol + rtol * abs(ref)


def shape(m):
    return m.layers, m.hidden, m.seq, m.vocab


def eq7_model_flops(m, B):
    """Korthikanti et al. 2022 Eq. 7: 72 B s l h^2 (1 + s/(6h) + V/(12 h l))."""
    l, h, s, V = shape(m)
    return 72 * B * s * l * h**2 * (1 + s / (6 * h) + V / (12 * h * l))


def eq3_full_recompute_flops(m, B):
    """Narayanan et al. 2021 Eq. 3: 96 B s l h^2 (1 + s/(6h) + V/(16 l h))."""
    l, h, s, V = shape(m)
    return 96 * B * s * l * h**2 * (1 + s / (6 * h) + V / (16 * l * h))


def eq8_selective_flops(m, B):
    """Korthikanti et al. 2022 Eq. 8 as published: 72 B s l h^2 (1 + s/(3h) + V/(12 h l))."""
    l, h, s, V = shape(m)
    return 72 * B * s * l * h**2 * (1 + s / (3 * h) + V / (12 * h * l))


def eq8_corrected_selective_flops(m, B):
    """Eq. 7 plus the re-run attention forward, 2 B s^2 h (QK^T) + 2 B s^2 h (over V)
    per layer: 72 B s l h^2 (1 + 2s/(9h) + V/(12 h l)). The authors confirmed the
    published s/(3h) is a mistake for 2s/(9h) (NVIDIA/Megatron-LM issue #523)."""
    l, h, s, V = shape(m)
    return 72 * B * s * l * h**2 * (1 + 2 * s / (9 * h) + V / (12 * h * l))


def hardware_flops_per_sequence(m, recompute):
    """Every layer runs forward + backward + its recompute; the head is not recomputed."""
    layer = layer_ops(m, 1, 1, False, "fp32")
    per_layer = (gemm_flops(layer.forward) + gemm_flops(layer.backward)
                 + gemm_flops(layer.recompute(recompute)))
    head = head_ops(m, 1, 1, "fp32")
    return m.layers * per_layer + 3 * gemm_flops(head)      # head: forward + 2x backward


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("B", [1, 512])
def test_model_flops_equal_korthikanti_eq7(name, B):
    m = load_model(name)
    assert close(model_flops_per_iteration(m, B), eq7_model_flops(m, B))


@pytest.mark.parametrize("name", PRESETS)
def test_full_recompute_hardware_flops_equal_narayanan_eq3(name):
    m = load_model(name)
    assert close(hardware_flops_per_sequence(m, "full"), eq3_full_recompute_flops(m, 1))


@pytest.mark.parametrize("name", PRESETS)
def test_selective_recompute_flops_equal_corrected_eq8(name):
    m = load_model(name)
    assert close(hardware_flops_per_sequence(m, "selective"), eq8_corrected_selective_flops(m, 1))


@pytest.mark.xfail(strict=True, reason=(
    "published Korthikanti Eq. 8 counts 24 B s^2 h l attention FLOPs, ops count "
    "16 B s^2 h l (the authors' correction, Megatron-LM issue #523): ops are "
    "-3.29% below Eq. 8 for megatron-22b (2.908e14 vs 3.007e14 per sequence), "
    "-3.81% for fugaku-llm-13b, -0.86% for megatron-1t"))
@pytest.mark.parametrize("name", ["fugaku-llm-13b", "megatron-22b", "megatron-1t"])
def test_selective_recompute_flops_equal_published_eq8(name):
    m = load_model(name)
    assert close(hardware_flops_per_sequence(m, "selective"), eq8_selective_flops(m, 1))


def tp_degrees(m):
    return [t for t in range(1, m.heads + 1)
            if m.heads % t == 0 and m.kv_heads % t == 0 and m.ffn % t == 0]


@pytest.mark.parametrize("name", ["fugaku-llm-13b", "megatron-22b", "llama2-70b"])
def test_tensor_parallel_splits_layer_gemm_flops_exactly(name):
    m = load_model(name)
    whole = gemm_flops(layer_ops(m, 1, 1, False, "fp32").forward)
    degrees = tp_degrees(m)
    assert len(degrees) >= 4
    for t in degrees:
        assert close(t * gemm_flops(layer_ops(m, t, 1, False, "fp32").forward), whole), t


@pytest.mark.parametrize("name", ["fugaku-llm-13b", "llama2-7b"])
def test_micro_batch_scales_gemm_flops_linearly(name):
    m = load_model(name)
    one_layer = gemm_flops(layer_ops(m, 2, 1, False, "fp32").forward)
    one_head = gemm_flops(head_ops(m, 2, 1, "fp32"))
    for b in (2, 3, 8):
        assert close(gemm_flops(layer_ops(m, 2, b, False, "fp32").forward), b * one_layer)
        assert close(gemm_flops(head_ops(m, 2, b, "fp32")), b * one_head)


def test_fugaku_llm_flops_per_token():
    # docs/facts.md: training FLOPs per token ~84.0 GFLOP (Megatron formula, no recompute).
    assert close(model_flops_per_token(load_model("fugaku-llm-13b")), 84.0e9, rtol=1e-3)


# ---------------------------------------------------------------- FlashAttention
def test_flash_attention_replaces_the_score_matrix_with_one_fused_kernel():
    from perfmodel.memory import activation_bytes_per_layer
    from perfmodel.ops import FLASH_BACKWARD, causal_fraction
    model = ModelSpec(layers=2, hidden=2048, heads=16, vocab=50368, seq=4096, name="fa")
    flash = layer_ops(model, 1, 2, False, "bf16", "flash")
    plain = layer_ops(model, 1, 2, False, "bf16")
    names = [op.name for op in flash.forward]
    assert "attn_flash" in names and not {"softmax", "attn_scores", "attn_v"} & set(names)
    fa, = (op for op in flash.forward if op.name == "attn_flash")
    scores = sum(op.flops for op in plain.forward if op.name in ("attn_scores", "attn_v"))
    assert fa.flops == pytest.approx(scores * causal_fraction(4096))   # causal blocks only
    assert causal_fraction(4096) == pytest.approx(33 / 64)            # 32 x 32 blocks of 128
    bwd, = (op for op in flash.backward if op.name == "attn_flash.bwd")
    assert bwd.flops == pytest.approx(FLASH_BACKWARD * fa.flops) and FLASH_BACKWARD == 2.5
    # the other ops are the same, and no s x s matrix is kept for the backward
    rest = lambda ops: [op for op in ops if not op.name.startswith("attn")]  # noqa: E731
    assert rest(flash.forward) == [op for op in rest(plain.forward) if op.name != "softmax"
                                   and op.name != "attn_dropout"]
    kept = activation_bytes_per_layer(model, 1, 2, False, "none", "bf16", "flash")
    full = activation_bytes_per_layer(model, 1, 2, False, "none", "bf16")
    assert full - kept > 16 * 4096 * 4096 * 2 * 2 * 0.9               # heads x s^2 x b x 2 B
    assert kept == pytest.approx(activation_bytes_per_layer(model, 1, 2, False, "selective",
                                                            "bf16") + 4.0 * 16 * 4096 * 2)


def test_an_unknown_attention_kernel_is_refused():
    from fpcore.errors import SpecError
    with pytest.raises(SpecError, match="must be one of materialized, flash"):
        layer_ops(ModelSpec(layers=1, hidden=64, heads=4, vocab=256, seq=64), 1, 1, False,
                  "fp32", "paged")
