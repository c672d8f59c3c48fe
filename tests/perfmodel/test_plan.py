"""plan: the node ladder, the budget answer and the pinned comparison."""

import pytest

from fpcore.errors import SpecError
from perfmodel.plan import (DEFAULT_LADDER, default_global_batch, explain, ladder, plan,
                            plan_to_dict)
from perfmodel.presets import load_model
from perfmodel.search import search
from perfmodel.sizing import model_for_params
from perfmodel.system import load_system

FUGAKU = load_system()
FUGAKU_LLM = load_model("fugaku-llm-13b")


def test_ladder():
    assert ladder(13824) == list(DEFAULT_LADDER)
    assert ladder(1000) == [384, 768, 1000]
    assert ladder(60000) == [*DEFAULT_LADDER, 27648, 55296, 60000]


def test_default_global_batch_keeps_fugaku_llm_tokens():
    assert default_global_batch(FUGAKU_LLM) == 2016
    assert default_global_batch(load_model("llama2-7b")) == 1008


@pytest.fixture(scope="module")
def default_plan():
    return plan(model_for_params(13e9), FUGAKU)


def test_budget_answer_is_the_best_of_the_rungs(default_plan):
    rung_best = min(r.best.iteration_s for r in default_plan.rungs if r.best)
    assert default_plan.best[0].iteration_s == pytest.approx(rung_best)
    lo = 1
    for rung in default_plan.rungs:
        if rung.best:
            assert lo <= rung.best.nodes <= rung.max_nodes
        lo = rung.max_nodes + 1


def test_budget_answer_equals_an_unsplit_search(default_plan):
    whole, _ = search(default_plan.model, FUGAKU, default_plan.global_batch, max_nodes=13824,
                      top=1)
    assert whole[0].iteration_s == pytest.approx(default_plan.best[0].iteration_s)


def test_tokens_default_to_twenty_per_parameter(default_plan):
    assert default_plan.tokens == 20 * default_plan.model.params
    d = plan_to_dict(default_plan)
    assert d["best"][0]["time_to_train_s"] == pytest.approx(
        d["tokens"] / d["best"][0]["tokens_per_s"])


def test_pinned_plan_ranks_the_real_run_and_explains_it():
    result = plan(FUGAKU_LLM, FUGAKU, nodes=[13824], global_batch=2016,
                  pins={"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4})
    c = result.comparison
    assert c is not None and c.pinned.layout.dp == 288
    assert 1 <= c.rank <= c.of
    assert c.best.iteration_s <= c.pinned.iteration_s
    assert any("bubble" in r for r in c.reasons)


def test_explain_names_the_largest_difference_first():
    found, _ = search(FUGAKU_LLM, FUGAKU, 2016, nodes=[13824], top=10**9)
    worst, best = found[-1], found[0]
    reasons = explain(worst, best)
    assert reasons and reasons[0].startswith("+")
    assert explain(best, best) == ["it is the best layout the search finds"]


def test_exact_node_count_that_no_layout_divides_suggests_neighbours():
    with pytest.raises(SpecError) as err:
        plan(FUGAKU_LLM, FUGAKU, nodes=[13823])
    assert err.value.field == "nodes" and "13,824" in str(err.value)


def test_a_model_too_big_for_the_nodes_says_so():
    with pytest.raises(SpecError) as err:
        plan(load_model("megatron-1t"), FUGAKU, nodes=[12], global_batch=12)
    assert err.value.field == "nodes" and "memory" in str(err.value)


def test_budget_larger_than_the_machine_is_refused():
    with pytest.raises(SpecError) as err:
        plan(FUGAKU_LLM, FUGAKU, max_nodes=200_000)
    assert err.value.field == "max_nodes"


def test_the_node_counts_a_refusal_suggests_are_ones_that_run():
    import re
    model, system = model_for_params(1e9), load_system(network_model="analytic")
    with pytest.raises(SpecError) as err:
        plan(model, system, nodes=[396])              # above 384: 48-node units on Fugaku
    assert err.value.field == "nodes" and "units of 48 nodes" in str(err.value)
    suggested = [int(c.replace(",", "")) for c in
                 re.search(r"can run: (.*)$", str(err.value)).group(1).split(", ")]
    assert suggested
    for n in suggested:
        assert plan(model, system, nodes=[n], top=1).rungs, n
