"""What perfmodel's ops are, for each thing the trainer times.

A measurement is stored as the list of perfmodel ops (perfmodel.ops.Op) it ran and
the seconds it took; the fit then prices the same ops with candidate parameters,
so it calibrates exactly the quantities the simulator adds up. The trainer's
kernel names map as:

    matmul_forward NxCxOC     gemm(m=N, n=OC, k=C)              (backward: .bwd, 2x)
    attention_forward         attn_flash: the tiled causal attention, QK^T and PV on the
                              causal tiles with their softmax (backward 2.5x: 5 products)
    layernorm_forward         norm        gelu_forward   gelu
    residual_forward          residual (fwd and .bwd: the trainer's residual backward is free,
                              so the fitted residual bandwidth absorbs it)
    crossentropy_forward      cross_entropy     encoder_forward   embedding
    adamw + grad_norm         optimizer (estimator.OPTIMIZER_BYTES per parameter)
"""

from __future__ import annotations

import dataclasses

from perfmodel.compute import ComputeFit, ComputeModel
from perfmodel.model import ModelSpec
from perfmodel.ops import (ACT_BYTES, FLOPS_PER_ELEMENT, Op, embedding_ops, flash_attention_op,
                           gemm, head_ops, layer_ops, mem)
from perfmodel.precisions import OPTIMIZER_BYTES

E = ACT_BYTES["fp32"]
TRAINER_ATTENTION = "flash"     # the trainer's attention kernel, in perfmodel's terms


def to_dicts(ops) -> list[dict]:
    return [dataclasses.asdict(op) for op in ops]


def from_dicts(rows) -> list[Op]:
    return [Op(**row) for row in rows]


def optimizer_op(params: int) -> Op:
    return Op("optimizer", "mem", 0.0, float(params) * OPTIMIZER_BYTES["fp32"])


def both(op: Op) -> list[Op]:
    """A kernel's forward and backward (perfmodel: backward = 2x forward)."""
    return [op, op.scaled(2.0, ".bwd")]


def kernel_ops(name: str, model: ModelSpec, micro_batch: int) -> list[Op] | None:
    """perfmodel ops of one call of the trainer kernel ``name`` (None: not a model op)."""
    kernel, _, shape = name.partition(" ")
    B, T, C, NH = micro_batch, model.seq, model.hidden, model.heads
    N, hs = B * T, model.head_dim
    if kernel in ("matmul_forward", "matmul_backward"):
        n_rows, k, n = (int(v) for v in shape.split("x"))
        op = gemm("matmul", n_rows, n, k, E)
        return [op] if kernel == "matmul_forward" else [op.scaled(2.0, ".bwd")]
    if kernel in ("attention_forward", "attention_backward"):
        op = flash_attention_op(B * NH, T, hs, E)
        return [op] if kernel == "attention_forward" else [op.scaled(op.backward, ".bwd")]
    simple = {"layernorm": mem("norm1", N * C, 1, 1, E, FLOPS_PER_ELEMENT["layernorm"]),
              "gelu": mem("gelu", N * model.ffn, 1, 1, E, FLOPS_PER_ELEMENT["gelu"]),
              "crossentropy": mem("cross_entropy", N * model.vocab, 1, 1, 4,
                                  FLOPS_PER_ELEMENT["cross_entropy"]),
              "encoder": embedding_ops(model, 1, micro_batch, "fp32")[0]}
    base, _, direction = kernel.rpartition("_")
    if base in simple:
        op = simple[base]
        return [op] if direction == "forward" else [op.scaled(2.0, ".bwd")]
    if kernel == "residual_forward":
        return both(mem("residual1", N * C, 2, 1, E, FLOPS_PER_ELEMENT["residual"]))
    return None


def step_seconds(fit: ComputeFit, model: ModelSpec, micro_batch: int, micro_batches: int,
                 params: int) -> float:
    """One optimizer step of one rank with no communication, summed as the estimator
    sums one pipeline stage holding the whole model (pp = tp = dp = 1); a test checks
    the two agree."""
    compute = _compute(fit)
    layer = layer_ops(model, 1, micro_batch, False, "fp32", TRAINER_ATTENTION)
    ends = (compute.ops_time(embedding_ops(model, 1, micro_batch, "fp32"))
            + compute.ops_time(head_ops(model, 1, micro_batch, "fp32")))
    per_micro = model.layers * (compute.ops_time(layer.forward)
                                + compute.ops_time(layer.backward)) + 3 * ends
    return micro_batches * per_micro + compute.optimizer_time(params * OPTIMIZER_BYTES["fp32"])


def _compute(fit: ComputeFit) -> ComputeModel:
    return ComputeModel(peak_flops=fit.gemm_rate, memory_bandwidth=1.0, gemm_efficiency=1.0,
                        fit=fit)


def price(fit: ComputeFit, ops) -> float:
    """Seconds of a list of ops under ``fit``."""
    return _compute(fit).ops_time(ops)
