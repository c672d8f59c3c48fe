"""Software stacks (StackSpec): what a framework reaches on a system, chosen by name.

The fugaku preset's default stack (fugaku-llm) changes nothing; deepspeedfugaku-2023
caps memory-bound kernels at a rate per clock cycle, scales collective bandwidth and
does not overlap the data-parallel reduction.
"""

import tomllib
from importlib import resources

import pytest

from fpcore.errors import SpecError
from perfmodel.estimator import estimate
from perfmodel.layout import Layout
from perfmodel.model import ModelSpec
from perfmodel.plan import plan
from perfmodel.system import StackSpec, load_system

OLD = "deepspeedfugaku-2023"
GPT124M = ModelSpec(layers=12, hidden=768, heads=12, vocab=50257, seq=1024, name="gpt 124M")


def preset_text() -> str:
    return (resources.files("perfmodel.data") / "systems" / "fugaku.toml").read_text()


def test_the_default_stack_is_fugaku_llm_and_leaves_the_preset_as_given():
    system = load_system("fugaku")
    assert system.stack.name == "fugaku-llm"
    assert {s.name for s in system.stacks} == {"fugaku-llm", OLD}
    assert system.rank.memory_bandwidth == pytest.approx(804e9)
    assert system.network.link_efficiency == pytest.approx(6.35 / 6.8, rel=1e-3)
    assert system.settings()["stack"] == "fugaku-llm"


def test_the_fugaku_stacks_say_what_their_launch_scripts_say():
    """Fugaku-LLM's 13B script: --DDP-impl local (the all-reduce after the backward), no
    DeepSpeed configuration (no ZeRO); the 2023 benchmark scripts the same."""
    for name in ("fugaku-llm", OLD):
        stack = load_system("fugaku", stack=name).stack
        assert stack.overlap_dp is False and stack.zero_stages == (0,)
    sources = load_system("fugaku").sources
    assert "--DDP-impl local" in sources["stacks.fugaku-llm.overlap_dp"]
    assert "no --deepspeed" in sources["stacks.fugaku-llm.zero_stages"]


@pytest.mark.parametrize("clock", [2.0, 2.2])
def test_a_core_bound_kernel_rate_scales_with_the_clock(clock):
    system = load_system("fugaku", stack=OLD, clock_ghz=clock)
    rate = system.stack.kernel_bytes_per_cycle
    assert system.rank.memory_bandwidth == pytest.approx(rate * clock * 1e9)
    assert system.rank.memory_bandwidth < 0.05 * system.node.stream_bandwidth


def test_four_ranks_per_node_share_the_kernel_rate():
    one = load_system("fugaku", stack=OLD).rank.memory_bandwidth
    four = load_system("fugaku", stack=OLD, ppn=4).rank.memory_bandwidth
    assert four == pytest.approx(one / 4)


def test_a_kernel_rate_above_stream_leaves_stream_in_charge():
    fast = StackSpec(name="fast", kernel_bytes_per_cycle=1e4)
    assert load_system("fugaku", stack=fast).rank.memory_bandwidth == pytest.approx(804e9)


def test_collective_efficiency_scales_link_and_injection_and_says_so():
    c = 0.5
    base, old = load_system("fugaku"), load_system("fugaku", stack=StackSpec(
        name="slowmpi", collective_efficiency=c))
    assert old.network.effective_link_bandwidth == pytest.approx(
        base.network.effective_link_bandwidth * c)
    assert old.network.effective_injection_bandwidth == pytest.approx(
        base.network.effective_injection_bandwidth * c)
    assert "slowmpi" in old.sources["network.link_efficiency"]
    assert load_system("fugaku", stack=OLD).stack.collective_efficiency == 1.0   # not needed


def test_gemm_overrides_reach_the_node_with_their_source():
    stack = StackSpec(name="slowblas", gemm_efficiency=0.5, gemm_half_size=100.0)
    system = load_system("fugaku", stack=stack)
    assert system.node.gemm_efficiency == 0.5 and system.node.gemm_half_size == 100.0
    assert "slowblas" in system.sources["node.gemm_efficiency"]


def test_every_fitted_stack_value_has_a_source():
    table = tomllib.loads(preset_text())["fugaku"]["stacks"][OLD]
    system = load_system("fugaku")
    for key in ("kernel_bytes_per_cycle", "overlap_dp"):
        assert key in table
        assert system.sources[f"stacks.{OLD}.{key}"].strip(), key


def test_the_old_stack_is_slower_and_reduces_after_the_backward():
    layout = Layout(tp=1, pp=1, dp=512, global_batch=1024, micro_batch=1)
    new = estimate(GPT124M, load_system("fugaku", clock_ghz=2.0), layout)
    system = load_system("fugaku", stack=OLD, clock_ghz=2.0)
    old = estimate(GPT124M, system, Layout(tp=1, pp=1, dp=512, global_batch=1024, micro_batch=1,
                                           overlap_dp=system.stack.overlap_dp))
    assert old.iteration_s > 4 * new.iteration_s
    assert old.breakdown.dp_comm > 0         # exposed: no overlap with the backward


def test_slower_kernels_and_collectives_never_speed_a_run_up():
    layout = Layout(tp=4, pp=1, dp=16, global_batch=1024, micro_batch=1, overlap_dp=False)
    model = ModelSpec(layers=24, hidden=2048, heads=32, vocab=50257, seq=1024)
    times = []
    for k, c in ((20.0, 1.0), (10.0, 1.0), (10.0, 0.5)):
        stack = StackSpec(name="s", kernel_bytes_per_cycle=k, collective_efficiency=c,
                          overlap_dp=False)
        times.append(estimate(model, load_system("fugaku", stack=stack), layout).iteration_s)
    assert times[0] < times[1] < times[2]


def test_plans_use_the_stacks_overlap_rule():
    system = load_system("fugaku", stack=OLD)
    result = plan(GPT124M, system, nodes=[48], global_batch=96, top=2)
    assert result.best and all(not e.layout.overlap_dp for e in result.best)
    pinned = plan(GPT124M, system, nodes=[48], global_batch=96,
                  pins=dict(tp=1, pp=1, micro_batch=1))
    assert pinned.best and not pinned.best[0].layout.overlap_dp


def test_an_unknown_stack_is_refused_naming_the_known_ones():
    with pytest.raises(SpecError) as err:
        load_system("fugaku", stack="pytorch-0.1")
    assert err.value.field == "stack" and "fugaku-llm" in str(err.value)
    with pytest.raises(SpecError, match="no stack"):
        load_system("selene", stack=OLD)


# ------------------------------------------------------------ user TOML files
def _load(tmp_path, old: str, new: str):
    text = preset_text()
    assert old in text
    path = tmp_path / "mysystem.toml"
    path.write_text(text.replace(old, new, 1))
    return load_system(str(path))


@pytest.mark.parametrize("old,new,field", [
    ("kernel_bytes_per_cycle = { value = 6", "kernel_bytes_per_cycle = { value = -6",
     "kernel_bytes_per_cycle"),
    ("overlap_dp = { value = false", "overlap_dp = { value = \"no\"", "overlap_dp"),
    ('default_stack = { value = "fugaku-llm"', 'default_stack = { value = "nope"',
     "default_stack"),
    ("kernel_bytes_per_cycle = {", "kernel_bytes_per_second = {", "deepspeedfugaku-2023"),
])
def test_bad_stack_tables_are_refused_naming_the_key(tmp_path, old, new, field):
    with pytest.raises(SpecError) as err:
        _load(tmp_path, old, new)
    assert field in err.value.field or field in str(err.value)
