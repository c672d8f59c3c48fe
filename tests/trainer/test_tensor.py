"""Tensor parallelism's layout (trainer.tensor): which part of every tensor a rank holds.
The runs under mpiexec that check the training itself are in test_mpi_tp.py."""

import numpy as np
import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from trainer.params import allocate, initialize, parameter_shapes
from trainer.tensor import SPLIT, Layout, check_splits

MODEL = ModelSpec(layers=2, hidden=24, heads=4, vocab=64, seq=8, ffn=48, name="tiny")


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_the_ranks_parts_are_the_whole_model(tp):
    """Every rank's part has the shapes of parameter_shapes(model, tp), and putting every
    rank's part back gives the whole model exactly."""
    whole = initialize(MODEL, seed=3)
    rebuilt = allocate(MODEL)
    shapes = dict(parameter_shapes(MODEL, tp))
    for r in range(tp):
        layout = Layout(MODEL, tp, r)
        for name, view in whole.views.items():
            part = layout.take(name, view)
            assert part.shape == shapes[name], name
            layout.put(name, rebuilt[name], part)
    np.testing.assert_array_equal(rebuilt.buffer, whole.buffer)


def test_a_rank_holds_its_heads_of_q_k_and_v():
    """Of 4 heads of 6 channels (C = 24) over 2 ranks, rank 1 holds heads 2 and 3: rows
    12..23 of Q, of K (24 + 12..) and of V (48 + 12..)."""
    whole = np.arange(3 * 24, dtype=np.float32)[None, :]       # qkvb of one layer
    part = Layout(MODEL, 2, 1).take("qkvb", whole)
    assert part[0].tolist() == [*range(12, 24), *range(36, 48), *range(60, 72)]
    # row-parallel weights: the rank's input columns; the rest whole
    w = np.arange(24 * 24, dtype=np.float32).reshape(1, 24, 24)
    np.testing.assert_array_equal(Layout(MODEL, 2, 1).take("attprojw", w), w[:, :, 12:])
    assert "ln1w" not in SPLIT and Layout(MODEL, 2, 1).take("ln1w", w) is not None


def test_tp_must_divide_heads_ffn_and_vocab():
    check_splits(MODEL, 4)
    for model, what in ((MODEL.replace(heads=3, kv_heads=3), "heads"),
                        (MODEL.replace(vocab=66), "vocab"), (MODEL.replace(ffn=50), "ffn")):
        with pytest.raises(SpecError, match=what) as err:
            check_splits(model, 4)
        assert err.value.field == "tp"


def test_pipeline_stages_hold_their_ends():
    """Of two stages, the first holds the embedding, the last the final LayerNorm and the
    output layer: its own copy of wte when tied, lm_head when not; both hold layers."""
    from trainer.params import Stage
    first = dict(parameter_shapes(MODEL, 1, Stage(first=True, last=False)))
    last = dict(parameter_shapes(MODEL, 1, Stage(first=False, last=True)))
    assert {"wte", "wpe"} <= set(first) and not {"lnfw", "lm_head"} & set(first)
    assert {"wte", "lnfw", "lnfb"} <= set(last) and "wpe" not in last
    untied = dict(parameter_shapes(MODEL.replace(tied_embeddings=False), 1,
                                   Stage(first=False, last=True)))
    assert "lm_head" in untied and "wte" not in untied
    assert first["qkvw"] == last["qkvw"] == (MODEL.layers, 3 * 24, 24)
