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


def model_error(tmp_path, text: str, name: str = "bad.toml") -> SpecError:
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    with pytest.raises(SpecError) as info:
        load_model(str(path))
    return info.value


@pytest.mark.parametrize("key", ["layers", "hidden", "heads", "vocab", "seq"])
def test_a_missing_model_key_is_named(tmp_path, key):
    text = "\n".join(line for line in ONE_TABLE.splitlines() if not line.startswith(f"{key} "))
    err = model_error(tmp_path, text)
    assert (err.field, err.message) == (f"{tmp_path / 'bad.toml'}:tiny.{key}",
                                        "missing required key")


@pytest.mark.parametrize("line, key", [
    ("layers = 2.5", "layers"), ('hidden = "64"', "hidden"), ("heads = true", "heads"),
    ("vocab = nan", "vocab"), ("seq = inf", "seq"), ("source = 5", "source"),
    ('expect_params = "many"', "expect_params"), ("expect_params = 1.5", "expect_params"),
    ("expect_params = 7", "expect_params"), ("bias = 1", "bias"), ('norm = "batchnorm"', "norm"),
    ("kv_heads = 3", "kv_heads"), ("ffn = -1", "ffn"),
])
def test_a_wrongly_typed_model_value_is_named(tmp_path, line, key):
    kept = [old for old in ONE_TABLE.splitlines() if not old.startswith(f"{key} ")]
    err = model_error(tmp_path, "\n".join(kept + [line, ""]))
    assert err.field == f"{tmp_path / 'bad.toml'}:tiny.{key}", err


@pytest.mark.parametrize("content, words", [
    (b'["caf\xe9"]\nlayers = 2\n', "not UTF-8"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "more than 32 deep"),
    ("x = " + "{ y = " * 40 + "1" + " }" * 40 + "\n", "more than 32 deep"),
])
def test_unreadable_model_files_are_named(tmp_path, content, words):
    err = model_error(tmp_path, content)
    assert err.field == str(tmp_path / "bad.toml") and words in err.message


def test_unreadable_system_files_are_named(tmp_path):
    from perfmodel.system import load_system
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'["caf\xe9"]\n')
    with pytest.raises(SpecError) as info:
        load_system(str(path))
    assert info.value.field == str(path) and "not UTF-8" in info.value.message


def test_a_variant_preset_is_its_base_with_what_it_changes():
    from perfmodel.system import load_system
    fugaku, variant = load_system("fugaku"), load_system("fugaku-fp16mx")
    assert variant.network == fugaku.network
    assert variant.node.peak_flops("fp32") == fugaku.node.peak_flops("fp32")
    assert variant.node.peak_flops("fp16") == 4 * fugaku.node.peak_flops("fp16")
    assert variant.node.supports("bf16") and not fugaku.node.supports("bf16")
    assert variant.sources["node.flops_per_cycle_per_core"].startswith("[A]")
    assert variant.sources["node.cores"] == fugaku.sources["node.cores"]
    assert {s.name for s in variant.stacks} == {s.name for s in fugaku.stacks}


def test_the_successor_preset_meets_its_published_targets():
    from perfmodel.system import load_system
    s = load_system("fugakunext-targets")
    nodes = s.network.nodes
    # 600 EFLOPS FP8 (taken as sparse: 150 EFLOPS dense BF16) within 40 MW
    assert nodes * s.node.peak_flops("bf16") == pytest.approx(150e18)
    assert nodes * s.node.power_w == pytest.approx(40e6)
    assert s.stack.name == "nemo-megatron-core"


def test_based_on_names_a_system_preset(tmp_path):
    from perfmodel.system import load_system
    path = tmp_path / "mine.toml"
    path.write_text('[mine]\nbased_on = "nowhere"\n')
    with pytest.raises(SpecError, match="based_on.*must name a system preset"):
        load_system(str(path))
    path.write_text('[mine]\nbased_on = "fugaku"\n[mine.node]\npower_w = 250.0\n')
    mine = load_system(str(path))
    assert mine.node.power_w == 250.0 and mine.node.cores == 48
