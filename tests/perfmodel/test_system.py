"""SystemSpec: the Fugaku preset against published figures, rank views, and user TOML files.

Reference figures (docs/facts.md): A64FX peak FP32 6.144 TFLOP/s per node at
2.0 GHz and 6.758 at 2.2 GHz, FP16 twice that; STREAM 804 GB/s per node with one
process, 207.69 GB/s per CMG; ~25 GB usable per node; 158,976 nodes; torus jobs in
12-node units, 48-node units above 384 nodes.
"""

import re
import tomllib
from importlib import resources

import pytest

from fpcore.errors import SpecError
from perfmodel.presets import system_names
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
def shipped_tables() -> dict[str, dict]:
    """Every table of every shipped system file, by preset name."""
    tables = {}
    for entry in (resources.files("perfmodel.data") / "systems").iterdir():
        if entry.name.endswith(".toml"):
            tables.update(tomllib.loads(entry.read_text(encoding="utf-8")))
    return tables


def test_every_shipped_system_file_is_a_preset():
    assert sorted(shipped_tables()) == system_names()
    assert {"fugaku", "selene", "jeanzay-a100"} <= set(system_names())


@pytest.mark.parametrize("name", system_names())
def test_every_preset_value_has_a_source(name):
    """Each value of the file (node, network, the preset's own settings and each
    software stack's values) is loaded with a non-empty source; names and
    descriptions are identifiers, not values."""
    from perfmodel.presets import system_table
    table = system_table(name)[1]        # a variant (based_on) with its base's values
    system = load_system(name)
    keys = [key for key in table
            if key not in ("description", "stacks", "node", "network", "uncertainty")]
    keys += [f"{part}.{key}" for part in ("node", "network") for key in table[part]
             if key not in ("name", "kind")]
    keys += [f"stacks.{stack}.{key}" for stack, body in table.get("stacks", {}).items()
             for key in body if key != "description"]
    for key in ("node.name", "network.kind"):
        part, field = key.split(".")
        assert isinstance(table[part][field], str), key
    missing = [key for key in keys if not system.sources.get(key, "").strip()]
    missing += [u.key for u in system.uncertain if not u.source.strip()]    # each range's own
    assert missing == [], f"{name}: no source for {', '.join(missing)}"
    assert len(keys) >= 30          # node and network values, ranks per node


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


# ------------------------------------------- every value is checked on loading
def edited(tmp_path, old: str, new: str, name: str = "mysystem"):
    """The Fugaku preset with one edit, written to a file; (path, field prefix)."""
    text = preset_text()
    assert old in text, old
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace(old, new, 1))
    return path, f"{path}:fugaku"


@pytest.mark.parametrize("old, new, field", [
    ("allowed_clocks_ghz = { value = [2.0, 2.2]", "allowed_clocks_ghz = { value = []",
     "node.allowed_clocks_ghz"),
    ("allowed_clocks_ghz = { value = [2.0, 2.2]", "allowed_clocks_ghz = { value = [2.0, nan]",
     "node.allowed_clocks_ghz[1]"),
    ("allowed_clocks_ghz = { value = [2.0, 2.2]", "allowed_clocks_ghz = { value = [2.0]",
     "node.clock_ghz"),                          # the default clock is not an allowed one
    ("allocation_unit_nodes = { value = 12,", "allocation_unit_nodes = { value = 0,",
     "network.allocation_unit_nodes"),
    ("allocation_unit_nodes = { value = 12,", "allocation_unit_nodes = { value = 10,",
     "network.allocation_unit_nodes"),           # must be a x b x c
    ("large_allocation_unit_nodes = { value = 48,", "large_allocation_unit_nodes = { value = 50,",
     "network.large_allocation_unit_nodes"),
    ("large_allocation_threshold_nodes = { value = 384,",
     "large_allocation_threshold_nodes = { value = \"abc\",", "network.large_allocation_threshold_nodes"),
    ("large_allocation_threshold_nodes = { value = 384,",
     "large_allocation_threshold_nodes = { value = nan,", "network.large_allocation_threshold_nodes"),
    ("large_allocation_threshold_nodes = { value = 384,",
     "large_allocation_threshold_nodes = { value = 100,", "network.large_allocation_threshold_nodes"),
    ("cores = { value = 48,", "cores = { value = \"48\",", "node.cores"),
    ("fp64 = 32,", "fp64 = \"32\",", "node.flops_per_cycle_per_core.fp64"),
    ("fp64 = 32,", "fp64 = inf,", "node.flops_per_cycle_per_core.fp64"),
    ("fp64 = 32,", "fp80 = 32,", "node.flops_per_cycle_per_core"),
    ("wrap = { value = [true,", "wrap = { value = [1,", "network.wrap[0]"),
    ("axes = { value = [\"X\",", "axes = { value = [5,", "network.axes[0]"),
    ("axes = { value = [\"X\", \"Y\",", "axes = { value = [\"X\", \"X\",", "network.axes"),
    ("shape = { value = [24,", "shape = { value = [0,", "network.shape[X]"),
    ("allowed_ranks_per_node = { value = [1, 4]", "allowed_ranks_per_node = { value = [\"1\", 4]",
     "allowed_ranks_per_node[0]"),
    ("allowed_ranks_per_node = { value = [1, 4]", "allowed_ranks_per_node = { value = []",
     "allowed_ranks_per_node"),
    ("name = \"A64FX\"", "name = 5", "node.name"),
    ("kind = \"torus\"", "kind = \"mesh\"", "network.kind"),
    ("[fugaku.node]\n", "[fugaku.node]\nkind = \"x\"\n", "node.kind"),     # a network key
    ("cores = { value = 48, source =", "cores = { value = 48, sauce =", "node.cores.sauce"),
    ("cores = { value = 48, source = ", "cores = { source = ", "node.cores.value"),
    ("cores = { value = 48, source = \"A64FX Microarchitecture Manual Table 1-1 (48 compute + "
     "2 assistant cores)\" }", "cores = { value = 48, source = 5 }", "node.cores.source"),
    ("link_bandwidth_gbs = { value = 6.8,", "link_bandwidth_gbs = { value = nan,",
     "network.link_bandwidth_gbs"),
    ("link_bandwidth_gbs = { value = 6.8,", "link_bandwidth_gbs = { value = 1e-300,",
     "network.link_bandwidth_gbs"),              # would price a transfer at infinity
    ("link_efficiency = { value = 0.9338,", "link_efficiency = { value = 1e-300,",
     "network.link_efficiency"),
    ("latency_us = { value = 1.05,", "latency_us = { value = -inf,", "network.latency_us"),
    ("memory_gib = { value = 32,", "memory_gib = { value = inf,", "node.memory_gib"),
    ("memory_gib = { value = 32,", "memory_gib = { value = 1e300,", "node.memory_gib"),
    ("mtbf_hours = { value = 9538560.0,", "mtbf_hours = { value = true,", "node.mtbf_hours"),
    ("eco_mode = { value = false,", "eco_mode = { value = 0,", "node.eco_mode"),
    ("job_torus = { value = true,", "job_torus = { value = \"yes\",", "network.job_torus"),
    ("kernel_bytes_per_cycle = { value = 6.344,", "kernel_bytes_per_cycle = { value = nan,",
     "stacks.deepspeedfugaku-2023.kernel_bytes_per_cycle"),
    ("overlap_dp = { value = false,", "overlap_dp = { value = 0,",
     "stacks.fugaku-llm.overlap_dp"),
    ("zero_stages = { value = [0],", "zero_stages = { value = [4],",
     "stacks.fugaku-llm.zero_stages[0]"),
    ("zero_stages = { value = [0],", "zero_stages = { value = [],",
     "stacks.fugaku-llm.zero_stages"),
    ('collective_algorithms = { value = ["any"],', 'collective_algorithms = { value = ["any", "ring"],',
     "stacks.fugaku-llm.collective_algorithms"),
    ('description = "Fugaku (RIKEN): 158,976 A64FX nodes, 6D Tofu interconnect D"',
     "description = 5", "description"),
])
def test_every_value_is_checked_and_named_as_in_the_file(tmp_path, old, new, field):
    path, prefix = edited(tmp_path, old, new)
    err = load_error(path)
    assert err.field == f"{prefix}.{field}", err


@pytest.mark.parametrize("key", ["cores", "numa_domains", "clock_ghz", "flops_per_cycle_per_core",
                                 "eco_mode", "memory_gib", "usable_memory_gb",
                                 "memory_bandwidth_gbs", "stream_bandwidth_gbs",
                                 "stream_bandwidth_per_domain_gbs", "inter_domain_bandwidth_gbs",
                                 "gemm_efficiency", "power_w", "axes", "shape", "wrap",
                                 "link_bandwidth_gbs", "link_efficiency", "latency_us",
                                 "injection_bandwidth_gbs", "injection_efficiency"])
def test_every_missing_required_key_is_named(tmp_path, key):
    text, removed = re.subn(rf"^{key} = .*\n", "", preset_text(), flags=re.M)
    assert removed == 1
    path = write(tmp_path, text)
    err = load_error(path)
    part = "node" if f"\n{key} = " in preset_text().split("[fugaku.network]")[0] else "network"
    assert (err.field, err.message) == (f"{path}:fugaku.{part}.{key}", "missing required key")


def test_a_machine_too_large_to_model_is_refused_at_once(tmp_path):
    """10^6 per axis: the allocator's search would never end."""
    path, prefix = edited(tmp_path, "shape = { value = [24, 23, 24,",
                          "shape = { value = [1000000, 1000000, 1000000,")
    err = load_error(path)
    assert err.field == f"{prefix}.network.shape" and "1,000,000" in err.message


def test_a_torus_the_flow_model_cannot_place_is_refused(tmp_path):
    path, prefix = edited(tmp_path, 'axes = { value = ["X", "Y", "Z", "a", "b", "c"]',
                          'axes = { value = ["X", "Y", "Z", "a", "b"]')
    assert load_error(path).field == f"{prefix}.network.shape"        # lengths differ
    text = (preset_text().replace('["X", "Y", "Z", "a", "b", "c"]', '["X"]')
            .replace("[24, 23, 24, 2, 3, 2]", "[24]")
            .replace("[true, true, true, false, true, false]", "[true]"))
    err = load_error(write(tmp_path, text))
    assert err.field.endswith("fugaku.network.axes") and "analytic" in err.message
    flat = load_system(str(write(tmp_path, text.replace('value = "flow"', 'value = "analytic"'))))
    assert flat.network.nodes == 24
    with pytest.raises(SpecError) as info:
        load_system(str(write(tmp_path, text.replace('value = "flow"', 'value = "analytic"'))),
                    shape="2x3x2")
    assert info.value.field == "shape"


def test_a_fat_tree_needs_nics_that_divide_its_ranks(tmp_path):
    text = (resources.files("perfmodel.data") / "systems" / "selene.toml").read_text()
    path = tmp_path / "gpus.toml"
    path.write_text(text.replace("nics_per_node = { value = 8,", "nics_per_node = { value = 3,"))
    assert load_error(path).field == f"{path}:selene.network.nics_per_node"


def test_every_shipped_preset_still_loads():
    from perfmodel.presets import system_names
    for name in system_names():
        system = load_system(name)
        assert system.origin.endswith(f".toml:{name}")


# ------------------------------------------------- where a system came from
def test_a_custom_file_named_like_a_preset_describes_itself(tmp_path):
    from perfmodel.presets import system_values
    path, _ = edited(tmp_path, "cores = { value = 48,", "cores = { value = 24,", name="fugaku")
    custom = load_system(str(path))
    assert custom.name == "fugaku" and custom.node.cores == 24
    assert custom.origin == f"{path}:fugaku"
    assert system_values(custom)["node.cores"] == 24           # not the shipped 48
    assert system_values(FUGAKU)["node.cores"] == 48


def test_a_custom_file_with_any_table_name_has_values(tmp_path):
    from perfmodel.presets import system_values
    path = write(tmp_path, preset_text().replace("[fugaku", "[mymachine"))
    system = load_system(str(path))
    values = system_values(system)
    assert values == system_values(FUGAKU)
    assert set(values) >= set(system.sources)


def test_values_describe_the_system_in_use():
    """An option or a stack that changes a value shows in the values and the sources."""
    from perfmodel.presets import system_values
    from perfmodel.system import StackSpec
    slow = load_system("fugaku", clock_ghz=2.0)
    assert system_values(slow)["node.clock_ghz"] == 2.0
    assert "clock option" in slow.sources["node.clock_ghz"]
    assert system_values(FUGAKU)["node.clock_ghz"] == 2.2
    stacked = load_system("fugaku", stack=StackSpec(name="half", collective_efficiency=0.5))
    assert system_values(stacked)["network.link_efficiency"] == pytest.approx(0.9338 / 2)
    assert "0.9338 x 0.5" in stacked.sources["network.link_efficiency"]


def test_a_system_pickles_with_its_origin():
    import pickle
    system = load_system("fugaku", ppn=4, shape="48x6x48:torus")
    back = pickle.loads(pickle.dumps(system))
    assert back == system and dict(back.sources) == dict(system.sources)
    assert (back.origin, back.file_values) == (system.origin, system.file_values)
    assert back.rank == system.rank and back.job_allocation.nodes == 13_824


# ------------------------------------------------------ jobs and given shapes
def test_a_given_shape_is_checked_when_the_system_is_made():
    with pytest.raises(SpecError) as info:
        load_system("fugaku", shape="48x7x48")
    assert info.value.field == "shape"
    with pytest.raises(SpecError) as info:
        load_system("selene", shape="2x3x2")
    assert info.value.field == "shape" and "fattree" in info.value.message


def test_a_job_larger_than_the_given_shape_is_refused_naming_both():
    system = load_system("fugaku", shape="2x3x4")
    assert system.check_nodes(24) == 24
    with pytest.raises(SpecError) as info:
        system.check_nodes(384)
    assert info.value.field == "shape"
    assert "24 nodes" in info.value.message and "384" in info.value.message
    with pytest.raises(SpecError) as info:
        FUGAKU.check_nodes(200_000)
    assert info.value.field == "nodes" and "158976" in info.value.message


def test_a_system_hashes_by_its_compared_values_once():
    """A system keys many caches, so its hash is kept; systems equal in every compared
    value hash alike, and a changed value hashes apart (a copy read again, a pickled
    copy, a replaced clock)."""
    import dataclasses
    import pickle
    a, b = load_system("fugaku"), load_system("fugaku")
    assert a == b and hash(a) == hash(b) == hash(pickle.loads(pickle.dumps(a)))
    assert hash(a) == hash(tuple(getattr(a, f.name) for f in dataclasses.fields(a) if f.compare))
    slower = load_system("fugaku", clock_ghz=2.0)
    assert slower != a and hash(slower) != hash(a)
    assert hash(dataclasses.replace(a, ranks_per_node=4)) != hash(a)
