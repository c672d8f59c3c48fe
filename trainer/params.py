"""All parameters of a GPT in one flat float32 buffer, with named views (llm.c style).

The optimizer and the gradient all-reduce see one contiguous buffer; the kernels
see named tensors. Tensors of the transformer layers are stacked over layers
(first axis L), as in llm.c's ``ParameterTensors``. Shapes (C hidden, L layers,
V vocabulary, T sequence, F ffn, K = width of the K and V projections):

    wte (V, C)            token embedding (also the output layer when tied)
    wpe (T, C)            learned positions
    ln1w, ln1b (L, C)     pre-attention LayerNorm
    qkvw (L, C+2K, C)     Q, K, V projection         qkvb (L, C+2K)
    attprojw (L, C, C)    attention output           attprojb (L, C)
    ln2w, ln2b (L, C)     pre-MLP LayerNorm
    fcw (L, F, C)         MLP up                     fcb (L, F)
    fcprojw (L, C, F)     MLP down                   fcprojb (L, C)
    lnfw, lnfb (C,)       final LayerNorm
    lm_head (V, C)        only when embeddings are not tied

Weights are stored (out, in), so a layer computes ``x @ w.T + b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec


def check_trainable(model: ModelSpec) -> None:
    """The reference trainer runs GPT-style models (Fugaku-LLM's architecture)."""
    wants = {"norm": "layernorm", "activation": "gelu", "position": "learned", "bias": True}
    for field, value in wants.items():
        if getattr(model, field) != value:
            raise SpecError(field, f"the reference trainer runs GPT-style models "
                                   f"({', '.join(f'{k} {v}' for k, v in wants.items())}); "
                                   f"{model.name} has {field} {getattr(model, field)}")
    if model.kv_heads != model.heads:
        raise SpecError("kv_heads", f"the reference trainer runs multi-head attention "
                                    f"(kv_heads = heads = {model.heads}); got {model.kv_heads}")


@dataclass(frozen=True)
class Stage:
    """The ends of the model a pipeline stage holds: the first the embedding, the last the
    final LayerNorm and the output layer (with tied embeddings its own copy of ``wte``,
    whose gradient the two ends sum, as Megatron-LM does). The whole model is both."""

    first: bool = True
    last: bool = True


WHOLE = Stage()
# the tensors stacked over layers (their first axis), which pipeline stages divide
STACKED = ("ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw",
           "fcb", "fcprojw", "fcprojb")


def parameter_shapes(model: ModelSpec, tp: int = 1,
                     stage: Stage = WHOLE) -> list[tuple[str, tuple[int, ...]]]:
    """The views' shapes; with ``tp`` > 1, one rank's of a TP group (trainer.tensor:
    V, F and the Q, K, V heads split t ways, the attention and MLP outputs' inputs too);
    of a pipeline ``stage``, its ``model.layers`` layers and the ends it holds."""
    check_trainable(model)
    C, L, V, T, F = model.hidden, model.layers, model.vocab // tp, model.seq, model.ffn // tp
    qkv = (C + 2 * model.kv_dim) // tp
    embedding = stage.first or (stage.last and model.tied_embeddings)
    shapes = [
        *([("wte", (V, C))] if embedding else []), *([("wpe", (T, C))] if stage.first else []),
        ("ln1w", (L, C)), ("ln1b", (L, C)),
        ("qkvw", (L, qkv, C)), ("qkvb", (L, qkv)),
        ("attprojw", (L, C, C // tp)), ("attprojb", (L, C)),
        ("ln2w", (L, C)), ("ln2b", (L, C)),
        ("fcw", (L, F, C)), ("fcb", (L, F)),
        ("fcprojw", (L, C, F)), ("fcprojb", (L, C)),
    ]
    if stage.last:
        shapes += [("lnfw", (C,)), ("lnfb", (C,))]
        if not model.tied_embeddings:
            shapes.append(("lm_head", (V, C)))
    return shapes


@dataclass
class FlatTensors:
    """One contiguous float32 buffer and named views into it."""

    buffer: np.ndarray
    views: dict

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name]

    @property
    def size(self) -> int:
        return int(self.buffer.size)


def allocate(model: ModelSpec, dtype=np.float32, tp: int = 1, stage: Stage = WHOLE) -> FlatTensors:
    """A zeroed buffer laid out as ``parameter_shapes`` (for parameters or gradients)."""
    total = sum(int(np.prod(s)) for _, s in parameter_shapes(model, tp, stage))
    return wrap(np.zeros(total, dtype=dtype), model, tp, stage)


def wrap(buffer: np.ndarray, model: ModelSpec, tp: int = 1, stage: Stage = WHOLE) -> FlatTensors:
    """Named views of ``parameter_shapes`` into an existing flat ``buffer``."""
    shapes = parameter_shapes(model, tp, stage)
    views, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        views[name] = buffer[offset:offset + n].reshape(shape)
        offset += n
    return FlatTensors(buffer, views)


def initialize(model: ModelSpec, seed: int = 0) -> FlatTensors:
    """GPT-2 initialisation (Radford et al. 2019, as in nanoGPT and llm.c): weights
    N(0, 0.02), the two residual projections N(0, 0.02 / sqrt(2 L)), biases 0,
    LayerNorm weights 1. Deterministic for a seed."""
    params = allocate(model)
    rng = np.random.default_rng(seed)
    residual = 0.02 / np.sqrt(2 * model.layers)
    for name, view in params.views.items():
        if name in ("ln1w", "ln2w", "lnfw"):
            view[...] = 1.0
        elif name.endswith("b") and name not in ("wte",):
            view[...] = 0.0
        else:
            std = residual if name in ("attprojw", "fcprojw") else 0.02
            view[...] = rng.normal(0.0, std, size=view.shape).astype(np.float32)
    return params
