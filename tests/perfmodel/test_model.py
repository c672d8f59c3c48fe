"""ModelSpec: exact parameter counts against published figures, and field-naming errors."""

import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model, model_names


def narayanan_eq2(l: int, h: int, V: int, s: int) -> int:
    """Narayanan et al. 2021 Eq. 2, P = 12 l h^2 (1 + 13/(12h) + (V+s)/(12 l h)), expanded
    to integers: 12 l h^2 + 13 l h + (V + s) h."""
    return 12 * l * h * h + 13 * l * h + (V + s) * h


def is_eq2_gpt(m: ModelSpec) -> bool:
    """The architecture Eq. 2 describes: GPT-2 style, 4h FFN, biases, learned, tied, dense."""
    return (m.norm == "layernorm" and m.activation == "gelu" and m.position == "learned"
            and m.tied_embeddings and m.bias and m.ffn == 4 * m.hidden
            and m.kv_heads == m.heads and not m.experts)


EQ2_PRESETS = [n for n in model_names() if is_eq2_gpt(load_model(n))]


def test_fugaku_llm_13b_parameter_count():
    # docs/formulas.md / docs/facts.md: Fugaku-LLM-13B has 13,167,577,728 parameters.
    assert load_model("fugaku-llm-13b").params == 13_167_577_728


def test_eq2_presets_cover_the_gpt_families():
    assert "fugaku-llm-13b" in EQ2_PRESETS
    assert sum(n.startswith("gpt3-") for n in EQ2_PRESETS) == 8
    assert sum(n.startswith("megatron-") for n in EQ2_PRESETS) == 11


@pytest.mark.parametrize("name", EQ2_PRESETS)
def test_params_equal_narayanan_eq2_plus_final_layernorm(name):
    m = load_model(name)
    final_layernorm = 2 * m.hidden
    assert m.params == narayanan_eq2(m.layers, m.hidden, m.vocab, m.seq) + final_layernorm


# Narayanan et al. 2021 Table 1, "number of parameters (billion)".
MEGATRON_TABLE1 = {
    "megatron-1.7b": 1.7, "megatron-3.6b": 3.6, "megatron-7.5b": 7.5,
    "megatron-18.4b": 18.4, "megatron-39.1b": 39.1, "megatron-76.1b": 76.1,
    "megatron-145.6b": 145.6, "megatron-310.1b": 310.1, "megatron-529.6b": 529.6,
    "megatron-1t": 1008.0,
}


@pytest.mark.parametrize("name,billions", sorted(MEGATRON_TABLE1.items()))
def test_megatron_table1_sizes_round_to_published(name, billions):
    assert round(load_model(name).params / 1e9, 1) == billions


# Released Llama-2 checkpoints (Touvron et al. 2023), as in perfmodel/data/models/llama2.toml.
LLAMA2 = {"llama2-7b": 6_738_415_616, "llama2-13b": 13_015_864_320,
          "llama2-70b": 68_976_648_192}


@pytest.mark.parametrize("name,expected", sorted(LLAMA2.items()))
def test_llama2_parameter_counts(name, expected):
    assert load_model(name).params == expected


BASE = dict(layers=2, hidden=64, heads=4, vocab=100, seq=16)


@pytest.mark.parametrize("changes,field", [
    (dict(heads=3), "heads"),                      # 3 does not divide 64
    (dict(activation="swiglu"), "ffn"),            # swiglu has no default ffn
    (dict(norm="batchnorm"), "norm"),
    (dict(layers=0), "layers"),
    (dict(kv_heads=3), "kv_heads"),                # 3 does not divide 4 heads
    (dict(layers=2.5), "layers"),
])
def test_invalid_spec_names_the_field(changes, field):
    with pytest.raises(SpecError) as info:
        ModelSpec(**{**BASE, **changes})
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_valid_base_spec_constructs():
    # guards the parametrized error cases above: they fail for the stated reason only
    assert ModelSpec(**BASE).params > 0


def test_a_models_hash_is_kept_and_not_pickled():
    import pickle
    from perfmodel.presets import load_model
    m = load_model("fugaku-llm-13b")
    h = hash(m)
    copy = pickle.loads(pickle.dumps(m))
    assert "_hash" not in copy.__dict__           # a string's hash differs between processes
    assert copy == m and hash(copy) == h
