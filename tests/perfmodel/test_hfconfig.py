"""Hugging Face config.json files read as models (perfmodel.hfconfig): the fixtures
give the shipped presets' models, and what a config says that the model cannot
represent is refused by the field's name."""

import json
from pathlib import Path

import pytest

from fpcore.errors import SpecError
from perfmodel.presets import load_model

HF = Path(__file__).resolve().parents[1] / "data" / "hf"
SHAPE = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq", "tied_embeddings",
         "norm", "activation", "position", "bias", "dropout")


@pytest.mark.parametrize("fixture,preset", [("fugaku-llm-13b.json", "fugaku-llm-13b"),
                                            ("llama-2-7b.json", "llama2-7b")])
def test_a_config_gives_the_presets_model(fixture, preset):
    model, shipped = load_model(str(HF / fixture)), load_model(preset)
    assert {k: getattr(model, k) for k in SHAPE} == {k: getattr(shipped, k) for k in SHAPE}
    assert model.params == shipped.params
    assert "Hugging Face config" in model.source


MOE = ("experts", "top_k", "expert_ffn", "shared_experts", "first_dense", "moe_every")


@pytest.mark.parametrize("fixture,preset", [("mixtral-8x7b.json", "mixtral-8x7b"),
                                            ("deepseek-moe-16b.json", "deepseek-moe-16b")])
def test_a_mixture_of_experts_config_gives_the_presets_model(fixture, preset):
    """The presets train 4096-token sequences (Mixtral's config takes 32k)."""
    model, shipped = load_model(str(HF / fixture), seq=4096), load_model(preset)
    assert {k: getattr(model, k) for k in SHAPE + MOE} == \
        {k: getattr(shipped, k) for k in SHAPE + MOE}
    assert (model.params, model.active_params) == (shipped.params, shipped.active_params)


def write(tmp_path, **fields) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(fields))
    return str(path)


LLAMA = dict(model_type="llama", hidden_act="silu", hidden_size=512, intermediate_size=1376,
             max_position_embeddings=2048, num_attention_heads=8, num_hidden_layers=4,
             num_key_value_heads=2, vocab_size=1000)


def test_grouped_query_attention_and_the_other_families(tmp_path):
    m = load_model(write(tmp_path, **LLAMA))
    assert (m.kv_heads, m.norm, m.activation, m.position, m.bias, m.tied_embeddings) == \
        (2, "rmsnorm", "swiglu", "rope", False, False)
    neox = load_model(write(tmp_path, model_type="gpt_neox", hidden_act="gelu", hidden_size=512,
                            intermediate_size=2048, max_position_embeddings=2048,
                            num_attention_heads=8, num_hidden_layers=6, vocab_size=50304))
    assert (neox.norm, neox.activation, neox.position, neox.bias, neox.dropout) == \
        ("layernorm", "gelu", "rope", True, False)
    qwen = load_model(write(tmp_path, **dict(LLAMA, model_type="qwen2")))
    assert not qwen.bias and "left out" in qwen.source
    # a window as long as the sequence trained changes nothing
    window = write(tmp_path, **dict(LLAMA, model_type="mistral", sliding_window=1024))
    assert load_model(window, seq=1024).seq == 1024
    with pytest.raises(SpecError, match="sliding_window.*--seq 1024"):
        load_model(window)


@pytest.mark.parametrize("changes,field", [
    (dict(model_type="t5"), "model_type"),
    (dict(model_type="mistral", sliding_window=1024), "sliding_window"),
    (dict(num_local_experts=8, num_experts_per_tok=2), "num_local_experts"),
    (dict(model_type="qwen2", num_experts=8), "num_experts"),           # (not read there)
    (dict(model_type="mixtral"), "num_local_experts"),                  # (required there)
    (dict(model_type="mixtral", num_local_experts=8, num_experts_per_tok=9), "top_k"),
    (dict(head_dim=128), "head_dim"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(num_hidden_layers="four"), "num_hidden_layers"),
    (dict(num_hidden_layers=None), "num_hidden_layers"),
    (dict(num_attention_heads=7), "heads"),
    (dict(model_type="mistral", sliding_window=0), "sliding_window: must be a whole number >= 1"),
    (dict(num_hidden_layers=True), "num_hidden_layers: must be a whole number; got True"),
    (dict(attention_bias="false", mlp_bias="false"), "attention_bias: must be true or false"),
    (dict(num_hidden_layers=10 ** 400), r"layers: must be an integer between 1 and \d+, got "
                                         r"1000000000000000000000000000\.\.\. \(401 characters\)$"),
])
def test_what_cannot_be_modelled_is_refused_by_name(tmp_path, changes, field):
    with pytest.raises(SpecError, match=field):
        load_model(write(tmp_path, **dict(LLAMA, **changes)))


def test_a_file_that_is_not_a_config_is_named(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(SpecError, match="list.json"):
        load_model(str(path))
    with pytest.raises(SpecError, match="missing.json"):
        load_model(str(tmp_path / "missing.json"))
