"""Memory per rank against Korthikanti et al. 2022 (Table 2, Fig. 1) and docs/formulas.md."""

import csv
from pathlib import Path

import pytest

from perfmodel.layout import Layout
from perfmodel.memory import (activation_bytes_per_layer, in_flight_layers,
                              layer_params_per_rank, stage_memory, stage_params)
from perfmodel.model import ModelSpec
from perfmodel.precisions import STATE_BYTES

DATA = Path(__file__).resolve().parent.parent / "data"
RTOL = 1e-12
GIB = 2**30

# A 22B-like shape (Korthikanti et al. 2022 Table 3): l=48, h=6144, a=64, s=2048, V=51200.
SHAPE = dict(layers=48, hidden=6144, heads=64, seq=2048, vocab=51200)
WITH_DROPOUT = ModelSpec(**SHAPE, dropout=True)
NO_DROPOUT = ModelSpec(**SHAPE, dropout=False)
TB = [(t, b) for t in (1, 2, 4, 8) for b in (1, 2)]

# (label, sequence_parallel, recompute)
CONFIGS = [("tp", False, "none"), ("tp+sp", True, "none"), ("tp+selective", False, "selective"),
           ("tp+sp+selective", True, "selective"), ("full", False, "full")]


def close(actual, ref, rtol=RTOL, atol=0.0):
    return abs(actual - ref) <= atol + rtol * abs(ref)


def two_and_one_byte_parts(sp, mode, s, b, h, a, t):
    """Korthikanti Table 2 with dropout, split into (2-byte terms, 1-byte mask terms), bytes.

    From the breakdown (docs/formulas.md): per layer, 2-byte tensors are the two layernorm
    inputs, QKV and FC1 inputs (8 sbh outside the TP region), Q, K, V, the projection
    input and the GELU input and output (24 sbh / t inside it), the softmax output and
    its dropout output (4 a s^2 b / t); 1-byte are the two residual dropout masks (2 sbh)
    and the attention dropout mask (a s^2 b / t). SP divides the outside terms by t,
    selective drops the a s^2 terms, full keeps only the 2-byte layer input.
    """
    sbh, att = s * b * h, a * s * s * b / t
    if mode == "full":
        return 2 * sbh, 0.0
    outside = 1 / t if sp else 1
    scores = 1 if mode == "none" else 0
    two = 8 * sbh * outside + 24 * sbh / t + 4 * att * scores
    one = 2 * sbh * outside + att * scores
    return two, one


def acts(model, t, b, sp, mode, precision):
    return activation_bytes_per_layer(model, t, b, sp, mode, precision)


def assert_matches(model, t, b, expected):
    """fp16 activations of every CONFIGS row equal ``expected[label]`` (bytes)."""
    for label, sp, mode in CONFIGS:
        if sp and t == 1:
            continue                       # sequence parallelism needs t > 1
        got = acts(model, t, b, sp, mode, "fp16")
        assert close(got, expected[label]), (label, got, expected[label])


# ---------------------------------------------------------- Korthikanti Table 2
@pytest.mark.parametrize("t,b", TB)
def test_table2_fp16_with_dropout(t, b):
    s, h, a = WITH_DROPOUT.seq, WITH_DROPOUT.hidden, WITH_DROPOUT.heads
    sbh = s * b * h
    table2 = {  # Korthikanti et al. 2022 Table 2 (docs/formulas.md)
        "tp": sbh * (10 + 24 / t + 5 * a * s / (h * t)),
        "tp+sp": sbh * (34 / t + 5 * a * s / (h * t)),
        "tp+selective": sbh * (10 + 24 / t),
        "tp+sp+selective": 34 * sbh / t,
        "full": 2 * sbh,
    }
    assert_matches(WITH_DROPOUT, t, b, table2)


@pytest.mark.parametrize("b", [1, 2])
def test_table2_no_parallelism(b):
    s, h, a = WITH_DROPOUT.seq, WITH_DROPOUT.hidden, WITH_DROPOUT.heads
    assert close(acts(WITH_DROPOUT, 1, b, False, "none", "fp16"),
                 s * b * h * (34 + 5 * a * s / h))


@pytest.mark.parametrize("t,b", TB)
def test_breakdown_split_sums_to_table2(t, b):
    # guards the 2-byte / 1-byte split used by the fp32 test against Table 2 itself
    s, h, a = WITH_DROPOUT.seq, WITH_DROPOUT.hidden, WITH_DROPOUT.heads
    two, one = two_and_one_byte_parts(False, "none", s, b, h, a, t)
    assert close(two + one, s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))


@pytest.mark.parametrize("t,b", TB)
def test_fp32_doubles_2_byte_terms_keeps_1_byte_masks(t, b):
    m = WITH_DROPOUT
    s, h, a = m.seq, m.hidden, m.heads
    for label, sp, mode in CONFIGS:
        if sp and t == 1:
            continue
        two, one = two_and_one_byte_parts(sp, mode, s, b, h, a, t)
        assert close(acts(m, t, b, sp, mode, "fp16"), two + one), label
        assert close(acts(m, t, b, sp, mode, "fp32"), 2 * two + one), label


@pytest.mark.parametrize("t,b", TB)
def test_fp32_tp_value(t, b):
    # the closed form of the above for TP, no SP, no recompute: s b h (18 + 48/t + 9 a s/(h t))
    m = WITH_DROPOUT
    s, h, a = m.seq, m.hidden, m.heads
    assert close(acts(m, t, b, False, "none", "fp32"),
                 s * b * h * (18 + 48 / t + 9 * a * s / (h * t)))


@pytest.mark.parametrize("t,b", TB)
def test_no_dropout_drops_masks_and_dropout_output(t, b):
    """Without dropout: no 1-byte masks (2 sbh outside, a s^2 b / t scores) and no
    attention-dropout output; the softmax output is kept once (it is the attention-over-V
    input). From Table 2's breakdown: TP s b h (8 + 24/t + 2 a s/(h t)),
    TP+SP s b h (32/t + 2 a s/(h t)), selective s b h (8 + 24/t), SP+selective 32 s b h/t,
    full 2 s b h."""
    m = NO_DROPOUT
    s, h, a = m.seq, m.hidden, m.heads
    sbh = s * b * h
    expected = {
        "tp": sbh * (8 + 24 / t + 2 * a * s / (h * t)),
        "tp+sp": sbh * (32 / t + 2 * a * s / (h * t)),
        "tp+selective": sbh * (8 + 24 / t),
        "tp+sp+selective": 32 * sbh / t,
        "full": 2 * sbh,
    }
    assert_matches(m, t, b, expected)


# ---------------------------------------------------------------- model states
def test_state_bytes_per_parameter():
    # docs/formulas.md: fp32 + Adam 4 + 4 + 8 = 16; mixed precision with fp32 gradient
    # accumulation (Megatron-LM) 2 + 4 + 12 = 18.
    assert sum(STATE_BYTES["fp32"]) == 16
    assert sum(STATE_BYTES["fp16"]) == 18


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("stage", [0, 1, 3])
def test_zero_shards_optimizer_then_gradients_then_weights(precision, stage):
    dp = 4
    layouts = [Layout(tp=2, pp=4, dp=dp, global_batch=8, zero=z, precision=precision)
               for z in range(4)]
    base = stage_memory(WITH_DROPOUT, layouts[0], stage)
    params = stage_params(WITH_DROPOUT, layouts[0], stage)
    w, g, o = STATE_BYTES[precision]
    assert (base.weights, base.gradients, base.optimizer) == (params * w, params * g, params * o)
    expected = {1: (w, g, o / dp), 2: (w, g / dp, o / dp), 3: (w / dp, g / dp, o / dp)}
    for zero, (we, ge, oe) in expected.items():
        got = stage_memory(WITH_DROPOUT, layouts[zero], stage)
        assert close(got.weights, params * we), zero
        assert close(got.gradients, params * ge), zero
        assert close(got.optimizer, params * oe), zero


# ------------------------------------------------------------ pipeline in flight
def pipeline(p, m, schedule="1f1b", v=1):
    return Layout(pp=p, global_batch=m, schedule=schedule, virtual_stages=v)


@pytest.mark.parametrize("p,m", [(4, 2), (4, 4), (4, 16), (8, 3), (8, 64)])
def test_1f1b_stage_holds_min_p_minus_i_and_m_microbatches(p, m):
    l = WITH_DROPOUT.layers
    for i in range(p):
        assert in_flight_layers(WITH_DROPOUT, pipeline(p, m), i) == min(p - i, m) * l / p


@pytest.mark.parametrize("p,m", [(4, 2), (4, 16), (8, 64)])
def test_gpipe_stage_holds_every_microbatch(p, m):
    l = WITH_DROPOUT.layers
    for i in range(p):
        assert in_flight_layers(WITH_DROPOUT, pipeline(p, m, "gpipe"), i) == m * l / p


@pytest.mark.parametrize("p,v", [(2, 2), (4, 2), (4, 3), (8, 2), (4, 4)])
def test_interleaved_first_stage_korthikanti_factor(p, v):
    # Korthikanti et al. 2022 (docs/formulas.md, its interleaving count written v):
    # the first stage holds l (1 + (p - 1) / (p v)) layers when m v is large
    l = WITH_DROPOUT.layers
    got = in_flight_layers(WITH_DROPOUT, pipeline(p, 64 * p, "interleaved", v), 0)
    assert close(got, l * (1 + (p - 1) / (p * v)))


# ------------------------------------------------ Korthikanti Fig. 1 (tests/data)
def fig1_rows():
    with open(DATA / "korthikanti_memory.csv", newline="") as f:
        return list(csv.DictReader(f))


def fig1_model(row):
    return ModelSpec(layers=int(row["layers"]), hidden=int(row["hidden"]),
                     heads=int(row["heads"]), seq=int(row["seq"]), vocab=51200)


def fig1_param(row):
    # measured with perfmodel at the time of writing: 22B +1.99%, 175B +3.86%, 530B +9.19%,
    # 1T +11.01% (46.47, 47.32, 34.55, 36.59 GiB vs 45.56, 45.56, 31.64, 32.96)
    if row["model"] == "1T":
        return pytest.param(row, id=row["model"], marks=pytest.mark.xfail(strict=True, reason=(
            "first-stage states 36.59 GiB vs Fig. 1 32.96 GiB: +11.0% > 10%; the figure "
            "counts transformer layers only (18 B x 12 l h^2 / (t p) = 32.96 GiB), the model "
            "adds the first stage's vocab shard and positions (3.63 GiB)")))
    return pytest.param(row, id=row["model"])


def test_fig1_table_is_the_copied_one():
    rows = fig1_rows()
    assert [r["model"] for r in rows] == ["22B", "175B", "530B", "1T"]
    assert all(r["source"].startswith("Korthikanti et al. 2022 Fig. 1") for r in rows)


@pytest.mark.parametrize("row", [fig1_param(r) for r in fig1_rows()])
def test_first_stage_model_states_within_10_percent_of_fig1(row):
    layout = Layout(tp=int(row["tp"]), pp=int(row["pp"]), precision="fp16", zero=0)
    got = stage_memory(fig1_model(row), layout, 0).model_states / GIB
    ref = float(row["params_and_optimizer_gib"])
    assert close(got, ref, rtol=0.10), (got, ref, got / ref - 1)


@pytest.mark.parametrize("row", fig1_rows(), ids=lambda r: r["model"])
def test_transformer_layer_states_match_fig1(row):
    """Fig. 1's parameters + optimizer equal 18 bytes x the first stage's transformer-layer
    parameters per rank (no embedding): within 0.2% (the figures are rounded to 0.01 GiB
    and the model keeps norms and two biases replicated across TP ranks)."""
    m, t, p = fig1_model(row), int(row["tp"]), int(row["pp"])
    got = m.layers / p * layer_params_per_rank(m, t) * sum(STATE_BYTES["fp16"]) / GIB
    assert close(got, float(row["params_and_optimizer_gib"]), rtol=2e-3, atol=0.005)
