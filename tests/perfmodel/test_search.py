"""The layout search: pruning never changes the answer; rules keep it honest."""

import pytest

from fpcore.errors import SpecError
from perfmodel.estimator import estimate
from perfmodel.memory import peak_memory
from perfmodel.presets import load_model
from perfmodel.layout import tensor_parallel_sizes
from perfmodel.search import allocatable, divisors, job_shapes, search
from perfmodel.sizing import model_for_params
from perfmodel.parts import StackSpec
from perfmodel.system import load_system

FUGAKU = load_system()
ANALYTIC = load_system(network_model="analytic")   # one tier: what the search ranks with
FUGAKU_LLM = load_model("fugaku-llm-13b")


def test_divisors():
    assert divisors(40) == [1, 2, 4, 5, 8, 10, 20, 40]
    assert divisors(1) == [1]
    assert tensor_parallel_sizes(FUGAKU_LLM) == [1, 2, 3, 4, 6, 9, 12, 18, 36]


def test_llama_70b_tensor_parallel_respects_grouped_kv_heads():
    opts = tensor_parallel_sizes(load_model("llama2-70b"))
    assert opts == [1, 2, 4, 8]          # tp divides the 8 key/value heads (Megatron-core)


def test_job_shapes_multiply_out_to_the_node_count():
    shapes = list(job_shapes(FUGAKU_LLM, FUGAKU, 2016, {}, lambda n: n == 13824))
    assert (13824, 6, 8, 288) in shapes
    assert all(tp * pp * dp == 13824 and 2016 % dp == 0 for _, tp, pp, dp in shapes)


def test_allocation_units():
    assert allocatable(FUGAKU, 384) and allocatable(FUGAKU, 36)
    assert not allocatable(FUGAKU, 390)           # 12-node units up to 384 nodes
    assert allocatable(FUGAKU, 432) and not allocatable(FUGAKU, 444)   # 48 above
    assert not allocatable(FUGAKU, 200_000)       # larger than the machine


@pytest.mark.parametrize("model,lo,hi", [
    (FUGAKU_LLM, 6913, 13824),
    (FUGAKU_LLM, 1, 384),
    (model_for_params(13e9), 3073, 6912),
    (load_model("gpt3-2.7b"), 1, 96),
])
def test_pruning_never_changes_the_best_layouts(model, lo, hi):
    pruned, stats = search(model, ANALYTIC, 2016, min_nodes=lo, max_nodes=hi, top=3)
    everything, full = search(model, ANALYTIC, 2016, min_nodes=lo, max_nodes=hi, top=10**9)
    assert stats.pruned > 0 and full.pruned == 0
    assert [e.iteration_s for e in pruned] == pytest.approx(
        [e.iteration_s for e in everything[:3]], rel=1e-12)


def test_every_result_fits_and_is_sorted():
    found, _ = search(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], top=50)
    assert all(e.network == "tofu flow-level" for e in found)
    assert found
    assert all(e.memory_fits for e in found)
    times = [e.iteration_s for e in found]
    assert times == sorted(times)


def test_least_recompute_that_fits_is_chosen():
    """At 1,536 nodes TP6 PP8 DP32 holds 7 micro-batches in flight per stage 0: more than
    fits without recomputation, so the search recomputes on a few stages only."""
    found, _ = search(FUGAKU_LLM, FUGAKU, 2016, nodes=[1536], pins={"tp": 6, "pp": 8, "zero": 0},
                      top=20)
    assert found
    for est in found:
        lay = est.layout
        if lay.recompute == "full" and lay.recompute_stages:
            less = lay.replace(recompute_stages=lay.recompute_stages - 1) \
                if lay.recompute_stages > 1 else lay.replace(recompute="selective",
                                                            recompute_stages=None)
            assert peak_memory(FUGAKU_LLM, less).total > FUGAKU.rank.usable_memory_bytes


def test_pins_are_respected():
    found, _ = search(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824],
                      pins={"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4}, top=10)
    assert found
    for e in found:
        assert (e.layout.tp, e.layout.pp, e.layout.dp) == (6, 8, 288)
        assert (e.layout.recompute, e.layout.recompute_stages) == ("full", 4)


def test_the_shortlist_is_repriced_with_the_flow_model():
    """Two tiers: screened with alpha-beta, the shortlist re-priced on the torus."""
    flow, stats = search(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], top=3)
    assert stats.confirmed >= len(flow) == 3
    for e in flow:
        direct = estimate(FUGAKU_LLM, FUGAKU, e.layout)
        assert direct.iteration_s == pytest.approx(e.iteration_s)
        assert direct.network == "tofu flow-level"


def test_the_fugaku_llm_layout_is_a_fitting_candidate():
    found, _ = search(FUGAKU_LLM, ANALYTIC, 2016, nodes=[13824], top=10**9)
    real = [e for e in found if (e.layout.tp, e.layout.pp, e.layout.dp) == (6, 8, 288)]
    assert real, "TP6 PP8 DP288 must be among the fitting layouts"
    direct = estimate(FUGAKU_LLM, ANALYTIC, real[0].layout)
    assert direct.iteration_s == pytest.approx(real[0].iteration_s)


@pytest.mark.parametrize("pins,field", [
    ({"tp": 7}, "tp"), ({"pp": 3}, "pp"), ({"dp": 5}, "dp"), ({"micro_batch": 5}, "micro_batch"),
    ({"recompute": "none", "recompute_stages": 2}, "recompute_stages"),
    ({"tp": 1, "sequence_parallel": True}, "sequence_parallel"),
    ({"schedule": "1f1b", "virtual_stages": 2}, "virtual_stages"),
    ({"colour": "red"}, "colour"),
])
def test_impossible_pins_are_refused_naming_the_field(pins, field):
    with pytest.raises(SpecError) as err:
        search(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], pins=pins)
    assert err.value.field == field


def test_shortlist_keeps_whole_shapes_with_a_few_variants():
    from perfmodel.search import Shortlist, screen
    screened, _ = screen(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], top=2, shapes=3, variants=2)
    shapes = {(e.layout.tp, e.layout.pp, e.layout.dp) for e in screened}
    assert len(shapes) == 3
    assert all(sum((e.layout.tp, e.layout.pp, e.layout.dp) == s for e in screened) <= 2
               for s in shapes)
    short = Shortlist(shapes=1, variants=1)
    for e in screened:
        short.add(e)
    assert short.estimates() == [min(screened, key=lambda e: e.iteration_s)]


def test_parallel_and_serial_confirmation_agree(monkeypatch):
    from perfmodel.search import confirm, screen
    screened, _ = screen(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], top=3)
    parallel = confirm(FUGAKU_LLM, FUGAKU, screened)
    monkeypatch.setenv("FUGAKUPERF_WORKERS", "1")
    serial = confirm(FUGAKU_LLM, FUGAKU, screened)
    assert [(e.layout, e.iteration_s) for e in parallel] == [(e.layout, e.iteration_s) for e in serial]
    assert all(e.system is FUGAKU and e.model is FUGAKU_LLM for e in parallel)


def runnable(lay, model) -> bool:
    """The framework rules, written out: tp | heads, kv_heads, ffn; ZeRO-2/3 only without a
    pipeline; interleaving on more than two stages."""
    return (model.heads % lay.tp == 0 and model.kv_heads % lay.tp == 0
            and model.ffn % lay.tp == 0 and (lay.zero < 2 or lay.pp == 1)
            and (lay.schedule != "interleaved" or lay.pp > 2))


@pytest.mark.parametrize("model,nodes", [
    (load_model("llama2-70b"), [16128]),
    (model_for_params(13e9), [10080]),
    (FUGAKU_LLM, [13824]),
])
def test_the_search_never_proposes_layouts_frameworks_cannot_run(model, nodes):
    gb = round(2016 * 2048 / model.seq)
    found, _ = search(model, ANALYTIC, gb, nodes=nodes, top=10**9)
    assert found
    bad = [e.layout.label() for e in found if not runnable(e.layout, model)]
    assert not bad, bad[:5]


def test_a_stack_that_overlaps_its_pipeline_sends_is_searched_with_two_interleaved_stages():
    """Megatron-Core interleaves two stages when it overlaps the pipeline sends (the DGX
    H100 stack does; Grok-1 ran PP 2 VP 8 on 128 GPUs): the search proposes them there,
    its bounds allow for them, and it still refuses them where the stack does not."""
    from perfmodel.search import _max_virtual, screen
    h100 = load_system("dgx-h100", network_model="analytic")
    assert h100.stack.overlap_p2p and not FUGAKU.stack.overlap_p2p
    model = load_model("llama2-70b")
    found, _ = screen(model, h100, 256, nodes=[32], pins={"pp": 2, "tp": 8}, top=10**6)
    interleaved = [e.layout for e in found if e.layout.schedule == "interleaved"]
    assert interleaved and all(lay.pp == 2 and lay.overlap_p2p for lay in interleaved)
    assert _max_virtual(model, 2, {}, h100.stack.overlap_p2p) > 1 == _max_virtual(model, 2, {})
    pinned, _ = search(model, h100, 256, nodes=[32], pins={"pp": 2, "tp": 8,
                                                           "schedule": "interleaved"})
    assert pinned and pinned[0].layout.schedule == "interleaved"
    with pytest.raises(SpecError, match="interleaved needs pp >= 3"):
        search(FUGAKU_LLM, ANALYTIC, 1008, max_nodes=13824,
               pins={"schedule": "interleaved", "pp": 2})


@pytest.mark.parametrize("model,pins,field", [
    (load_model("llama2-70b"), {"tp": 16}, "tp"),
    (FUGAKU_LLM, {"zero": 3, "pp": 2}, "zero"),
    (FUGAKU_LLM, {"zero": 2, "pp": 8}, "zero"),
    (FUGAKU_LLM, {"schedule": "interleaved", "pp": 2}, "schedule"),
    (FUGAKU_LLM, {"zero": 1, "dp": 1}, "zero"),
    (FUGAKU_LLM, {"virtual_stages": 7}, "virtual_stages"),
    (FUGAKU_LLM, {"recompute_stages": 3, "pp": 2}, "recompute_stages"),
])
def test_pins_no_framework_runs_are_refused_naming_the_field(model, pins, field):
    with pytest.raises(SpecError) as err:
        search(model, ANALYTIC, 1008, max_nodes=13824, pins=pins)
    assert err.value.field == field, str(err.value)


def test_zero_3_without_a_pipeline_pin_searches_pp_1_only():
    any_zero = load_system(network_model="analytic", stack=StackSpec(name="any-zero"))
    found, _ = search(FUGAKU_LLM, any_zero, 2016, max_nodes=13824, pins={"zero": 3}, top=20)
    assert found and all(e.layout.pp == 1 and e.layout.zero == 3 for e in found)
