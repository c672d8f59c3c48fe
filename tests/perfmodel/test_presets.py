"""Preset loading: package presets, user TOML files, and errors that name what is wrong."""

import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model, model_names

ONE_TABLE = """
["tiny"]
layers = 2
hidden = 64
heads = 4
vocab = 100
seq = 16
source = "test fixture"
"""


def test_there_are_presets():
    assert len(model_names()) >= 20


@pytest.mark.parametrize("name", model_names())
def test_every_model_preset_loads_with_a_source(name):
    m = load_model(name)
    assert isinstance(m, ModelSpec)
    assert m.name == name
    assert m.source.strip()


def test_user_file_with_one_table_loads(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(ONE_TABLE)
    m = load_model(str(path))
    assert (m.name, m.layers, m.hidden, m.heads, m.vocab, m.seq) == ("tiny", 2, 64, 4, 100, 16)
    assert m.params == ModelSpec(layers=2, hidden=64, heads=4, vocab=100, seq=16).params


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('["tiny"]\nlayers = = 2\n')
    with pytest.raises(SpecError) as info:
        load_model(str(path))
    assert str(path) in str(info.value)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(ONE_TABLE + "layer = 3\n")
    with pytest.raises(SpecError) as info:
        load_model(str(path))
    assert info.value.field == f"{path}:tiny.layer"
    assert "unknown key" in str(info.value)


def test_two_tables_is_an_error(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(ONE_TABLE + ONE_TABLE.replace('["tiny"]', '["tiny2"]'))
    with pytest.raises(SpecError) as info:
        load_model(str(path))
    assert info.value.field == str(path)
    assert "exactly one" in str(info.value)


def test_unknown_preset_lists_known_presets():
    with pytest.raises(SpecError) as info:
        load_model("gpt-5-turbo")
    assert info.value.field == "model"
    message = str(info.value)
    assert "gpt-5-turbo" in message
    for name in model_names():
        assert name in message


def test_a_narrowed_preset_keeps_its_attention_kind():
    from perfmodel.inputs import resolve_model
    # multi-head stays multi-head when --heads changes; FFN follows --hidden
    gpt = resolve_model(model="fugaku-llm-13b", layers=1, hidden=64, heads=4)
    assert (gpt.heads, gpt.kv_heads, gpt.ffn) == (4, 4, 256)
    # grouped-query keeps its own kv_heads (here it must then divide the new heads)
    gqa = resolve_model(model="llama2-70b", heads=16, hidden=2048, ffn=8192)
    assert gqa.kv_heads == 8
