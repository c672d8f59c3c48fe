"""SystemSpec: the Fugaku preset against published figures, rank views, and user TOML files.

Reference figures (project fact sheet): A64FX peak FP32 6.144 TFLOP/s per node at
2.0 GHz and 6.758 at 2.2 GHz, FP16 twice that; STREAM 804 GB/s per node with one
process, 207.69 GB/s per CMG; ~25 GB usable per node; 158,976 nodes; torus jobs in
12-node units, 48-node units above 384 nodes.
"""

import re
import tomllib
from importlib import resources

import pytest

from fpcore.errors import SpecError
from perfmodel.system import load_system

FUGAKU = load_system("fugaku")


def preset_text() -> str:
    return (resources.files("perfmodel.data") / "systems" / "fugaku.toml").read_text()


# ------------------------------------------------------------------ peak FLOPs
@pytest.mark.parametrize("clock, fp32", [(2.0, 6.144e12), (2.2, 6.7584e12)])
def test_node_peak_matches_the_published_figures(clock, fp32):
    node = load_system("fugaku", clock_ghz=clock).node
    assert node.peak_flops("fp32") == pytest.approx(fp32, rel=1e-12)
    assert node.peak_flops("fp16") == pytest.approx(2 * fp32, rel=1e-12)
    assert node.peak_flops("fp64") == pytest.approx(fp32 / 2, rel=1e-12)


def test_default_clock_is_fugaku_llm_boost_clock():
    assert FUGAKU.node.peak_flops("fp32") == pytest.approx(6.7584e12, rel=1e-12)
    assert FUGAKU.ranks_per_node == 1


@pytest.mark.parametrize("clock", [2.0, 2.2])
def test_eco_mode_halves_the_peak(clock):
    eco = load_system("fugaku", clock_ghz=clock, eco=True).node
    full = load_system("fugaku", clock_ghz=clock, eco=False).node
    for precision in ("fp32", "fp16"):
        assert eco.peak_flops(precision) == pytest.approx(full.peak_flops(precision) / 2, rel=1e-12)


@pytest.mark.parametrize("clock", [2.5, 1.0, 2.1])
def test_clocks_other_than_2_0_and_2_2_are_rejected(clock):
    with pytest.raises(SpecError) as info:
        load_system("fugaku", clock_ghz=clock)
    assert info.value.field == "clock"
    assert "2.2" in str(info.value)   # says what is allowed


@pytest.mark.parametrize("ppn", [3, 2, 48])
def test_ranks_per_node_is_1_or_4(ppn):
    with pytest.raises(SpecError) as info:
        load_system("fugaku", ppn=ppn)
    assert info.value.field == "ppn"
    assert "1, 4" in str(info.value)


# ------------------------------------------------------------------- rank view
def test_one_rank_per_cmg_gets_a_quarter_node_and_the_cmg_stream_bandwidth():
    system = load_system("fugaku", ppn=4)
    node, rank = system.node, system.rank
    assert node.usable_memory_bytes == pytest.approx(25e9)
    assert rank.usable_memory_bytes == pytest.approx(25e9 / 4, rel=1e-12)
    assert rank.memory_bandwidth == pytest.approx(207.69e9, rel=1e-12)
    for precision in ("fp32", "fp16"):
        assert rank.peak_flops[precision] == pytest.approx(node.peak_flops(precision) / 4,
                                                           rel=1e-12)


def test_one_rank_per_node_gets_the_whole_node():
    rank = load_system("fugaku", ppn=1).rank
    assert rank.memory_bandwidth == pytest.approx(804e9, rel=1e-12)
    assert rank.usable_memory_bytes == pytest.approx(25e9, rel=1e-12)
    assert rank.peak_flops["fp32"] == pytest.approx(6.7584e12, rel=1e-12)


# --------------------------------------------------------------------- network
def test_network_has_every_fugaku_node():
    net = FUGAKU.network
    product = 1
    for n in net.shape:
        product *= n
    assert product == net.nodes == 158_976
    assert len(net.axes) == len(net.shape) == len(net.wrap) == 6


@pytest.mark.parametrize("nodes, unit", [(12, 12), (100, 12), (384, 12), (385, 48),
                                         (1000, 48), (13824, 48)])
def test_allocation_unit(nodes, unit):
    assert FUGAKU.network.allocation_unit(nodes) == unit


# --------------------------------------------------------------------- sources
def test_every_preset_value_has_a_source():
    table = tomllib.loads(preset_text())["fugaku"]
    checked = 0
    for part in ("node", "network"):
        for key, raw in table[part].items():
            if key in ("name", "kind"):          # identifiers, not measured values
                assert isinstance(raw, str)
                continue
            assert FUGAKU.sources.get(f"{part}.{key}", "").strip(), f"{part}.{key} has no source"
            checked += 1
    assert checked >= 25   # 14 node values, 11 network values


# ------------------------------------------------------------ user TOML files
def write(tmp_path, text: str):
    path = tmp_path / "mysystem.toml"
    path.write_text(text)
    return path


def load_error(path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_system(str(path))
    return info.value


def test_a_copy_of_the_preset_loads_like_the_preset(tmp_path):
    path = write(tmp_path, preset_text().replace("[fugaku", "[mysys"))
    system = load_system(str(path))
    assert system.name == "mysys"
    assert system.node == FUGAKU.node
    assert system.network == FUGAKU.network
    assert dict(system.sources) == dict(FUGAKU.sources)


@pytest.mark.parametrize("table, key", [("[fugaku.node]", "corse"), ("[fugaku.network]", "hops")])
def test_unknown_keys_are_named(tmp_path, table, key):
    path = write(tmp_path, preset_text().replace(f"{table}\n", f"{table}\n{key} = 3\n"))
    err = load_error(path)
    assert err.field.endswith(f".{key}")
    assert key in str(err) and str(path) in str(err)


def test_unknown_key_field_names_the_location_once(tmp_path):
    path = write(tmp_path, preset_text().replace("[fugaku.node]\n", "[fugaku.node]\ncorse = 3\n"))
    assert load_error(path).field == f"{path}:fugaku.node.corse"


def test_unknown_top_level_key_is_named(tmp_path):
    path = write(tmp_path, preset_text().replace("description =", "descripton ="))
    assert load_error(path).field == f"{path}:fugaku.descripton"


def test_a_missing_required_key_is_named(tmp_path):
    text, removed = re.subn(r"^cores = .*\n", "", preset_text(), flags=re.M)
    assert removed == 1
    err = load_error(write(tmp_path, text))
    assert "cores" in str(err)
    assert "missing" in str(err)


def test_gemm_efficiency_above_one_is_rejected(tmp_path):
    text = preset_text().replace("gemm_efficiency = { value = 0.90,",
                                 "gemm_efficiency = { value = 1.5,")
    assert "value = 1.5" in text
    path = write(tmp_path, text)
    err = load_error(path)
    assert err.field == f"{path}:fugaku.node.gemm_efficiency"
    assert "1.5" in str(err)


def test_malformed_toml_names_the_file(tmp_path):
    path = write(tmp_path, preset_text() + "\n[[[broken\n")
    err = load_error(path)
    assert err.field == str(path)
    assert "malformed TOML" in str(err)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.toml"
    err = load_error(path)
    assert err.field == str(path)
