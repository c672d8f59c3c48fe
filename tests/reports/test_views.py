"""The views of results (reports.views): what plan and simulate say, as JSON and as the
prose of their assumptions."""

import dataclasses
import re

import pytest

from perfmodel.plan import Comparison, differences, explain, plan
from perfmodel.presets import load_model
from perfmodel.system import load_system
from reports.text import render_plan
from reports.views import assumptions, plan_to_dict

FUGAKU = load_system()
ANALYTIC = load_system(network_model="analytic")
FUGAKU_LLM = load_model("fugaku-llm-13b")


def test_the_plan_view_gives_each_layout_its_time_to_train():
    result = plan(FUGAKU_LLM, ANALYTIC, nodes=[13824], global_batch=2016, top=2)
    d = plan_to_dict(result)
    assert d["tokens"] == result.tokens and len(d["best"]) == 2
    for row, est in zip(d["best"], result.best):
        assert row["time_to_train_s"] == pytest.approx(d["tokens"] / row["tokens_per_s"])
        assert row["layout"] == {**{k: v for k, v in est.layout.to_dict().items()
                                    if k not in ("overlap_dp", "attention", "gather",
                                                 "prefetch", "optimizer",
                                                 "overlap_p2p")},   # stack settings
                                 "stage_layers": list(est.layout.stage_layers(est.model))}


def test_fp16_assumptions_say_what_the_precision_changes():
    text = " ".join(assumptions(FUGAKU, ("fp16",)))
    for word in ("FP16", "loss scaling", "18 bytes", "master"):
        assert word in text, word
    assert "loss scaling" not in " ".join(assumptions(FUGAKU, ("fp32",)))


def test_a_mixture_of_experts_plan_says_how_its_experts_are_split_and_routed():
    moe = load_model("fugaku-llm-moe-8x")
    text = " ".join(assumptions(FUGAKU, ("fp32",), moe))
    # the Fugaku stacks' DeepSpeed runs the experts either way, whole by default
    for words in ("8 experts, top 2", "split over the TP ranks", "(layouts marked ETP1) whole",
                  "--enable-expert-tensor-parallelism", "all-to-alls over the EP ranks",
                  "--moe-load", "dropless"):
        assert words in text, words
    h100 = " ".join(assumptions(load_system("dgx-h100"), ("bf16",), moe))
    assert "split over the TP ranks" in h100 and "--expert-tensor-parallel-size" in h100
    assert "ETP1" not in h100
    assert "experts" not in " ".join(assumptions(FUGAKU, ("fp32",), FUGAKU_LLM))
    assert "capacity factor 1 caps" in " ".join(assumptions(FUGAKU, ("fp32",),
                                                            load_model("grok-1")))


def test_a_pinned_layout_faster_than_the_unpinned_best_is_called_faster():
    """A pin can reach layouts the search does not try (e.g. more virtual stages than it
    explores); the comparison then says faster, never a negative slower."""
    result = plan(FUGAKU_LLM, ANALYTIC, nodes=[13824], global_batch=2016, top=1,
                  pins={"tp": 6, "pp": 8, "recompute": "full", "recompute_stages": 4})
    c = result.comparison
    swapped = Comparison(pinned=c.best, best=c.pinned, rank=1, of=c.of,
                         reasons=explain(c.best, c.pinned),
                         differences=differences(c.best.layout, c.pinned.layout))
    d = plan_to_dict(dataclasses.replace(result, comparison=swapped))
    assert d["comparison"]["relation"] == "faster"
    text = render_plan(d)
    assert "faster than the fastest without the pins" in text
    assert not re.search(r"-\d[\d.]*% slower", text)


def test_the_simulation_text_names_the_data_parallel_mode_as_its_framework_does():
    from reports.text import _sharding_name
    base = {"zero": 3, "sharding": "fsdp", "shard_ranks": 0}
    assert _sharding_name(base) == "FULL_SHARD (ZeRO-3)"
    assert _sharding_name({**base, "shard_ranks": 8}) == "HYBRID_SHARD/8 (ZeRO-3)"
    assert _sharding_name({**base, "zero": 1, "sharding": "megatron"}) == \
        "distributed optimizer (ZeRO-1)"
    assert _sharding_name({**base, "zero": 2, "sharding": "deepspeed"}) == "ZeRO-2"
