"""The compute fit: recovers known parameters, and prices steps as the estimator does."""

import math

import numpy as np
import pytest

from calibration.fit import fit_compute, fit_from_dict, fit_to_dict
from calibration.measure import record, trainer_model
from calibration.opmap import TRAINER_ATTENTION, both, kernel_ops, optimizer_op, step_seconds
from perfmodel.compute import KERNEL_CLASSES, ComputeFit
from fpcore.errors import SpecError
from perfmodel.estimator import estimate
from perfmodel.layout import Layout
from perfmodel.ops import ACT_BYTES, gemm, mem
from perfmodel.system import load_system

TRUE = ComputeFit(gemm_rate=120e9, gemm_m0=40.0, gemm_n0=60.0, gemm_k0=80.0,
                  gemm_overhead_s=4e-6,
                  bandwidth=tuple((c, bw) for c, bw in zip(
                      KERNEL_CLASSES, (4e9, 3e9, 1.5e9, 80e9, 2e9, 3.5e9, 7e9))),
                  kernel_overhead_s=2e-6, glue_s=30e-6, gemm_backward_slowdown=1.3)
E = ACT_BYTES["fp32"]
CONFIGS = (dict(layers=2, hidden=128, heads=4, seq=128, micro_batch=2, global_batch=2),
           dict(layers=1, hidden=256, heads=4, seq=64, micro_batch=4, global_batch=8),
           dict(layers=3, hidden=64, heads=2, seq=256, micro_batch=1, global_batch=2),
           dict(layers=2, hidden=96, heads=3, seq=64, micro_batch=2, global_batch=4))
CLASS_OPS = {"norm": "norm1", "softmax": "softmax", "gelu": "gelu", "residual": "residual1",
             "embedding": "embedding", "cross_entropy": "cross_entropy"}


def synthetic(fit: ComputeFit, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Records a machine with ``fit`` would produce: a GEMM sweep, kernel pairs at three
    sizes, trainer kernels and whole steps of four configurations."""
    from calibration.opmap import price
    rng = np.random.default_rng(seed)
    jitter = (lambda: 1.0 + noise * rng.standard_normal()) if noise else (lambda: 1.0)
    out = []
    for m in (64, 256, 1024):
        for n in (64, 256, 1024):
            for k in (64, 256, 1024):
                ops = [gemm("matmul", m, n, k, E)]
                out.append(record("gemm", "sweep", ops, (price(fit, ops) - fit.glue_s) * jitter()))
                ops = [gemm("matmul", m, n, k, E).scaled(2.0, ".bwd")]
                out.append(record("trainer-kernel", "matmul_backward", ops,
                                  (price(fit, ops) - fit.glue_s) * jitter()))
    for n in (1 << 14, 1 << 17, 1 << 20):
        for cls, name in CLASS_OPS.items():
            ops = both(mem(name, n, 1, 1, E, 1))
            out.append(record("kernel", cls, ops, (price(fit, ops) - 2 * fit.glue_s) * jitter()))
        ops = [optimizer_op(n)]
        out.append(record("kernel", "optimizer", ops, (price(fit, ops) - fit.glue_s) * jitter()))
    for cfg in CONFIGS:
        model = trainer_model(cfg)
        micro = cfg["global_batch"] // cfg["micro_batch"]
        params = model.params
        out.append({"kind": "step", "name": str(cfg), "config": cfg, "ops": [], "calls": 1,
                    "ranks": 1, "params": params, "micro_batches": micro,
                    "model": {f: getattr(model, f) for f in model.__dataclass_fields__},
                    "seconds": step_seconds(fit, model, cfg["micro_batch"], micro, params) * jitter()})
    return out


def test_fit_recovers_known_parameters_from_noiseless_measurements():
    fit, summary = fit_compute(synthetic(TRUE))
    assert summary["status"] > 0 and summary["residual_norm"] < 1e-3
    assert fit.gemm_rate == pytest.approx(TRUE.gemm_rate, rel=0.01)
    assert fit.gemm_backward_slowdown == pytest.approx(TRUE.gemm_backward_slowdown, rel=0.01)
    for (cls, got), (_, want) in zip(fit.bandwidth, TRUE.bandwidth):
        assert got == pytest.approx(want, rel=0.02), cls
    assert fit.glue_s == pytest.approx(TRUE.glue_s, rel=0.05)
    for size in ((100, 300, 700), (2048, 2048, 2048), (32, 4096, 128)):
        assert fit.gemm_rate_for(*size) == pytest.approx(TRUE.gemm_rate_for(*size), rel=0.01)


def test_fit_with_5_percent_noise_predicts_steps_within_a_few_percent():
    fit, summary = fit_compute(synthetic(TRUE, noise=0.05, seed=3))
    assert summary["success"]
    model = trainer_model(dict(layers=4, hidden=160, heads=5, seq=96))
    got = step_seconds(fit, model, 2, 3, model.params)
    want = step_seconds(TRUE, model, 2, 3, model.params)
    assert got == pytest.approx(want, rel=0.05)


def test_the_fit_round_trips_through_a_dict():
    assert fit_from_dict(fit_to_dict(TRUE)) == TRUE
    with pytest.raises(SpecError) as err:
        fit_from_dict({"gemm_rate": 1.0}, "x.json")
    assert err.value.field == "calibration" and "x.json" in str(err.value)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_step_seconds_is_the_estimators_sum_for_one_rank(cfg):
    # one formula: the fit prices steps exactly as the estimator (and so the DES) does
    model = trainer_model(cfg)
    system = load_system().with_calibration(TRUE, None, source="test")
    layout = Layout(micro_batch=cfg["micro_batch"], global_batch=cfg["global_batch"],
                    overlap_dp=False, attention=TRAINER_ATTENTION)
    micro = cfg["global_batch"] // cfg["micro_batch"]
    want = estimate(model, system, layout).iteration_s
    assert step_seconds(TRUE, model, cfg["micro_batch"], micro, model.params) == \
        pytest.approx(want, rel=1e-12)


def test_every_timed_trainer_kernel_maps_to_perfmodel_ops():
    from trainer.gpt import Activations, gpt_backward, gpt_forward
    from trainer.params import allocate, initialize
    from trainer.timers import Timers
    cfg = CONFIGS[0]
    model = trainer_model(cfg)
    timers = Timers()
    acts = Activations(model, 2, model.seq)
    x = np.zeros((2, model.seq), dtype=np.int64)
    gpt_forward(model, initialize(model), acts, x, x, timer=timers)
    gpt_backward(model, initialize(model), allocate(model), acts, x, x, 1.0, timer=timers)
    for r in timers.records():
        ops = kernel_ops(r["name"], model, 2)
        assert ops, r["name"]
        if r["flops"] and r["kernel"].startswith(("matmul", "attention")):
            # the same GEMM FLOPs as the trainer counted
            assert sum(o.flops for o in ops if o.kind == "gemm") == \
                pytest.approx(r["flops"] / r["calls"])


def test_nothing_to_fit_is_refused():
    with pytest.raises(SpecError) as err:
        fit_compute([{"kind": "collective", "op": "allreduce", "ranks": 2, "bytes": 8,
                      "seconds": 1e-5}])
    assert err.value.field == "measurements"
    assert math.isfinite(TRUE.gemm_rate)


def test_a_fused_attention_under_a_fit_is_its_gemms_and_its_softmax():
    """FlashAttention's op, priced by a calibration: its FLOPs at the fitted GEMM rate of
    its tile shape, plus one softmax pass over the scores its tiles compute at the fitted
    softmax bandwidth (two in the backward, which runs 2.5x the products)."""
    from perfmodel.compute import ComputeModel
    from perfmodel.ops import FLASH_BACKWARD, causal_fraction, flash_attention_op
    heads, s, hd = 32, 256, 64
    op = flash_attention_op(heads, s, hd, 4)
    scores = heads * s * s * causal_fraction(s)
    softmax_bw = dict(TRUE.bandwidth)["softmax"]
    compute = ComputeModel(peak_flops=TRUE.gemm_rate, memory_bandwidth=1.0, gemm_efficiency=1.0,
                           fit=TRUE)
    gemm = TRUE.gemm_time(op.flops, s, s, hd)
    assert compute.op_time(op) == pytest.approx(
        gemm + 8 * scores / softmax_bw + TRUE.kernel_overhead_s + TRUE.glue_s, rel=1e-12)
    back = op.scaled(FLASH_BACKWARD, ".bwd")
    assert compute.op_time(back) == pytest.approx(
        TRUE.gemm_time(back.flops, s, s, hd, backward=True) + 16 * scores / softmax_bw
        + TRUE.kernel_overhead_s + TRUE.glue_s, rel=1e-12)
