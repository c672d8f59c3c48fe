"""plan: the node ladder, the budget answer and the pinned comparison."""

import pytest

from fpcore.errors import SpecError
from perfmodel.plan import (DEFAULT_LADDER, default_global_batch, differences, explain, ladder,
                            plan)
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
                      top=1, objective=default_plan.objective)
    assert whole[0].layout == default_plan.best[0].layout
    assert whole[0].iteration_s == pytest.approx(default_plan.best[0].iteration_s)


def test_the_recommendation_does_not_depend_on_how_many_shapes_are_repriced(default_plan):
    """The shortlist re-priced on the torus is the best by the plan's objective (p90 on
    each band), so re-pricing more shapes finds the same best layouts, not layouts the
    model's own times had left out."""
    wider = plan(default_plan.model, FUGAKU, confirm_shapes=12)
    assert [e.layout for e in wider.best[:3]] == [e.layout for e in default_plan.best[:3]]
    assert default_plan.objective == "p90"


def test_tokens_default_to_twenty_per_parameter(default_plan):
    assert default_plan.tokens == 20 * default_plan.model.params
    best = default_plan.best[0]
    assert best.time_to_train_s(default_plan.tokens) == pytest.approx(
        default_plan.tokens / best.tokens_per_s)


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


# ------------------------------------------------------------ honest comparisons
from perfmodel.estimator import estimate            # noqa: E402
from perfmodel.layout import Layout                 # noqa: E402

ANALYTIC = load_system(network_model="analytic")
REAL_RUN = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)


def identical_vs(text: str) -> list[str]:
    """Every "A vs B" in ``text`` whose A and B are the same words."""
    import re
    out = []
    for m in re.finditer(r" vs ", text):
        left, right = text[:m.start()].split(), text[m.end():].split()
        for n in range(1, 4):
            if len(left) >= n and len(right) >= n and left[-n:] == right[:n]:
                out.append(" ".join(left[-n:]) + " vs " + " ".join(right[:n]))
    return out


def test_explain_a_recompute_difference_names_what_really_differs():
    """Same 7 micro-batches over 8 stages: the bubble grows because each micro-batch takes
    longer with recomputation, and that is what the reason says."""
    a = estimate(FUGAKU_LLM, ANALYTIC, REAL_RUN)
    b = estimate(FUGAKU_LLM, ANALYTIC, REAL_RUN.replace(recompute="none", recompute_stages=None))
    reasons = explain(a, b)
    assert reasons and all(not identical_vs(r) for r in reasons), reasons
    bubble = [r for r in reasons if "bubble" in r]
    assert bubble and "per micro-batch" in bubble[0] and "over 8 stages vs" not in bubble[0]
    compute = [r for r in reasons if r.split(" s ", 1)[1].startswith("compute")]
    assert not compute          # the same compute: no reason names it


def test_differences_name_every_field_that_differs():
    a = REAL_RUN.replace(precision="fp16", zero=1)
    b = REAL_RUN.replace(recompute="none", recompute_stages=None, micro_batch=7)
    text = "; ".join(differences(a, b))
    for word in ("precision", "recompute", "ZeRO", "micro-batch"):
        assert word in text, text
    assert "TP" not in text and "schedule" not in text     # equal fields are not named
    assert differences(a, a) == []
    assert not identical_vs(text)


def test_a_pinned_precision_is_compared_within_that_precision():
    result = plan(FUGAKU_LLM, FUGAKU, nodes=[13824], global_batch=2016,
                  pins={"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4,
                        "precision": "fp16"})
    c = result.comparison
    assert c.best.layout.precision == c.pinned.layout.precision == "fp16"
    assert c.best.iteration_s <= c.pinned.iteration_s
    assert all(not identical_vs(r) for r in c.reasons + c.differences)


def test_pinning_only_the_precision_makes_no_comparison():
    result = plan(FUGAKU_LLM, ANALYTIC, nodes=[13824], global_batch=2016,
                  pins={"precision": "fp16"}, top=1)
    assert result.comparison is None
    assert result.best[0].layout.precision == "fp16"


# ------------------------------------------------------------ hostile inputs
def test_duplicate_node_counts_are_planned_once():
    result = plan(FUGAKU_LLM, ANALYTIC, nodes=[13824, 13824], top=3)
    assert result.node_counts == [13824]
    labels = [e.layout for e in result.best]
    assert len(labels) == len(set(labels))


def test_confirm_below_top_is_refused():
    with pytest.raises(SpecError) as err:
        plan(FUGAKU_LLM, FUGAKU, nodes=[13824], top=5, confirm_shapes=1)
    assert err.value.field == "confirm" and "top" in err.value.message


@pytest.mark.parametrize("kw", [dict(global_batch=1), dict(global_batch=2**8 * 5**8),
                                dict(max_nodes=1)])
def test_no_job_shape_in_the_budget_is_not_blamed_on_memory(kw):
    """13 B: 40 heads and 40 layers (2^3 5) cannot supply the factor 3 of Fugaku's 12- and
    48-node allocation units; a global batch without one leaves no job at all."""
    with pytest.raises(SpecError) as err:
        plan(model_for_params(13e9), ANALYTIC, **kw)
    assert "memory" not in err.value.message and "units" in err.value.message, err.value


def test_exact_node_counts_above_the_budget_are_refused():
    with pytest.raises(SpecError) as err:
        plan(FUGAKU_LLM, ANALYTIC, nodes=[384], max_nodes=100)
    assert err.value.field == "nodes" and "--max-nodes" in err.value.message


def test_a_node_count_the_batch_cannot_run_suggests_batches_that_can():
    """12,000 nodes: no dp dividing 2016 makes tp x pp x dp equal it; the refusal names
    node counts that can, and global batches that keep the 12,000 nodes, each of which
    then plans."""
    import re
    model = model_for_params(13e9)
    with pytest.raises(SpecError, match="global batch of") as refused:
        plan(model, FUGAKU, nodes=[12000])
    batches = [int(b.replace(",", "")) for b in
               re.search(r"global batch of ([\d, or]+) \(", str(refused.value)).group(1)
               .split(" or ")]
    assert batches and all(1008 <= b <= 4032 for b in batches)
    assert plan(model, FUGAKU, nodes=[12000], global_batch=batches[0], top=1).best[0].nodes \
        == 12000


def test_a_pinned_layout_with_context_parallelism_takes_dp_from_the_nodes():
    from perfmodel.plan import layout_for
    system = load_system("dgx-h100")
    est = layout_for(load_model("llama3.1-8b"), system, nodes=8, global_batch=64,
                     pins={"tp": 4, "pp": 1, "cp": 2, "sequence_parallel": True,
                           "precision": "bf16"})
    # 64 ranks = tp 4 x cp 2 x pp 1 x dp 8
    assert (est.layout.dp, est.layout.cp, est.nodes) == (8, 2, 8)
    with pytest.raises(SpecError, match="tp x cp x pp"):
        layout_for(load_model("llama3.1-8b"), system, nodes=1, global_batch=64,
                   pins={"tp": 4, "pp": 1, "cp": 4, "precision": "bf16"})
