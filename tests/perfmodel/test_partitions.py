"""Uneven pipeline partitions: layer counts pp does not divide, placed as DeepSpeed's
pipeline engine places them (Megatron-DeepSpeed --pp-partition-method), through the
layout, memory, estimator, DES, search and validate --against. A BLOOM-like model
(70 layers, 12 stages) is the running example."""

import csv
import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from fpcore.errors import SpecError
from fugakuperf.cli import main
from perfmodel.des import simulate
from perfmodel.estimator import estimate
from perfmodel.layout import Layout, check_runnable
from perfmodel.memory import pipeline_memory, stage_params
from perfmodel.model import ModelSpec
from perfmodel.partitions import (PARTITIONS, UNEVEN, _fill, distinct_splits,
                                  partition_error, stage_layers)
from perfmodel.search import search
from perfmodel.system import load_system

BLOOM_LIKE = ModelSpec(layers=70, hidden=14336, heads=112, vocab=250880, seq=2048,
                       name="bloom-like")
JEANZAY = load_system("jeanzay-a100")                 # megatron-deepspeed: uneven splits
NO_OVERLAP = JEANZAY.with_stack(JEANZAY.stack.replace(overlap_dp=False))


def bloom_layout(system=JEANZAY, **kw) -> Layout:
    base = dict(tp=4, pp=12, dp=8, micro_batch=1, global_batch=512, precision="bf16",
                partition="type:transformer|embedding")
    return Layout(**{**base, **system.stack.layout_settings(), **kw})


# ------------------------------------------------------------------- the methods
def test_bloom_placement_is_five_layers_at_the_ends_and_six_between():
    """70 layers + embedding + head = 72 items on 12 stages: 6 each (BigScience's choice)."""
    assert stage_layers(70, 12, "type:transformer|embedding") == (5,) + (6,) * 10 + (5,)


def test_deepspeed_fill_puts_the_rest_on_the_last_stage():
    """partition_balanced's smallest bottleneck is ceil(70 / 12) = 6; _lprobe fills the
    stages in turn up to it, so the last holds what is left."""
    assert stage_layers(70, 12, "type:transformer") == (6,) * 11 + (4,)


def test_even_is_l_over_p_and_refuses_a_remainder():
    assert stage_layers(72, 12, "even") == (6,) * 12
    with pytest.raises(SpecError) as e:
        stage_layers(70, 12, "even")
    assert e.value.field == "pp" and "must divide" in e.value.message


@settings(max_examples=300, deadline=None)
@given(layers=st.integers(1, 200), pp=st.integers(1, 64), method=st.sampled_from(UNEVEN))
def test_a_fill_keeps_every_layer_and_no_stage_is_heavier_than_it_must_be(layers, pp, method):
    """Every layer is placed once; each stage's items (its layers, plus the embedding on
    the first and the head on the last for |embedding) are at most ceil(items / p), the
    least any split can reach; the stages before the last are full; a split that
    would leave a stage without a layer is refused, never returned."""
    err = partition_error(layers, pp, 1, method)
    ends = PARTITIONS[method].end_items
    items = layers + 2 * ends
    cap = math.ceil(items / pp)
    if err is not None:
        assert err.field == "pp" and "without a transformer layer" in err.message
        assert min(_fill(layers, pp, method)) < 1          # refused for that reason only
        return
    split = stage_layers(layers, pp, method)
    assert len(split) == pp and sum(split) == layers and min(split) >= 1
    held = list(split)
    held[0] += ends
    held[-1] += ends
    assert max(held) == cap
    assert all(n == cap for n in held[:-1])


def test_a_split_leaving_a_stage_empty_is_refused_with_the_framework_rule():
    """13 layers on 12 stages: DeepSpeed fills 2 per stage, and stages 7-11 get none;
    Megatron-DeepSpeed fails unless every stage holds a transformer layer."""
    err = partition_error(13, 12, 1, "type:transformer")
    assert err is not None and "stage(s) 7, 8, 9, 10 ..." in err.message
    assert "gpt_model.py" in err.message


def test_uneven_placements_run_no_virtual_stages():
    err = partition_error(72, 12, 2, "type:transformer")
    assert err is not None and err.field == "partition"
    assert partition_error(72, 12, 2, "even") is None


def test_distinct_splits_try_each_placement_once():
    """24 layers on 4 stages: DeepSpeed's type:transformer fill is the even split (tried
    once); counting the ends gives 26 items, 7 per stage: 6, 7, 7, 4 layers."""
    methods = ("even",) + UNEVEN
    assert distinct_splits(24, 4, methods) == ["even", "type:transformer|embedding"]
    assert stage_layers(24, 4, "type:transformer|embedding") == (6, 7, 7, 4)
    assert distinct_splits(70, 12, methods) == list(UNEVEN)
    assert distinct_splits(70, 12, ("even",)) == []


def test_counting_the_ends_needs_two_layers_fewer_than_a_multiple_of_the_stages():
    """72 layers + 2 = 74 items on 12 stages: 7 per stage fill 10 stages and a half, and
    the last gets nothing, which Megatron-DeepSpeed cannot run; 70 layers fill all 12."""
    assert partition_error(72, 12, 1, "type:transformer|embedding") is not None
    assert partition_error(70, 12, 1, "type:transformer|embedding") is None


# ---------------------------------------------------------------- layout, memory
def test_layout_names_its_split_and_refuses_an_unknown_method():
    lay = bloom_layout()
    assert lay.label().endswith("split=type:transformer|embedding")
    assert lay.stage_layers(BLOOM_LIKE)[0] == 5
    check_runnable(lay, BLOOM_LIKE, 384)
    with pytest.raises(SpecError) as e:
        bloom_layout(partition="parameters")
    assert e.value.field == "partition"


@pytest.mark.parametrize("method", UNEVEN)
def test_stages_hold_every_parameter_once(method):
    """The stages' weights add up to the model's (tp 1), plus the last stage's copy of
    the tied embedding (Megatron-LM keeps one there when the embedding is elsewhere)."""
    lay = bloom_layout(tp=1, dp=32, partition=method)
    held = sum(stage_params(BLOOM_LIKE, lay, i) for i in range(lay.pp))
    tied_copy = BLOOM_LIKE.vocab * BLOOM_LIKE.hidden
    assert held == pytest.approx(BLOOM_LIKE.params + tied_copy, rel=1e-12)


def test_memory_follows_each_stages_layers():
    """Stage 0 holds the most micro-batches in flight; with 6 layers instead of 5 it also
    holds more weights: the greedy fill needs more memory than BLOOM's placement."""
    greedy = {m.stage: m for m in pipeline_memory(
        BLOOM_LIKE, bloom_layout(partition="type:transformer"), every_stage=True)}
    bloom = {m.stage: m for m in pipeline_memory(BLOOM_LIKE, bloom_layout(), every_stage=True)}
    assert greedy[0].weights == pytest.approx(bloom[0].weights * 6 / 5, rel=0.05)
    assert greedy[0].activations == pytest.approx(bloom[0].activations * 6 / 5, rel=1e-3)
    assert greedy[11].activations == pytest.approx(bloom[11].activations * 4 / 5, rel=1e-9)
    shown = pipeline_memory(BLOOM_LIKE, bloom_layout(partition="type:transformer"))
    assert max(m.total for m in shown) == max(m.total for m in greedy.values())


# ----------------------------------------------------------- estimator and DES
@pytest.mark.parametrize("method", UNEVEN)
@pytest.mark.parametrize("mb,gb,recompute,zero", [(1, 512, "full", 0), (2, 512, "selective", 1),
                                                   (1, 96, "none", 1), (4, 2048, "full", 1)])
def test_des_and_analytic_agree_within_2_percent_where_nothing_overlaps(method, mb, gb,
                                                                        recompute, zero):
    lay = bloom_layout(NO_OVERLAP, partition=method, micro_batch=mb, global_batch=gb,
                       recompute=recompute, zero=zero)
    analytic = estimate(BLOOM_LIKE, NO_OVERLAP, lay).iteration_s
    des = simulate(BLOOM_LIKE, NO_OVERLAP, lay).iteration_s
    assert des == pytest.approx(analytic, rel=0.02)


def test_the_slowest_stage_sets_the_pace():
    """1F1B's steady state runs at the slowest stage. With a 250,880-word vocabulary the
    head costs about a layer and a third, so BLOOM's placement (the head counted as one layer)
    leaves its last stage, 5 layers and the head, the slowest; DeepSpeed's plain fill
    leaves the last stage 4 layers and is faster, its 6-layer stages now the slowest."""
    greedy, bloom = (simulate(BLOOM_LIKE, NO_OVERLAP, bloom_layout(NO_OVERLAP, partition=m))
                     for m in ("type:transformer", "type:transformer|embedding"))
    work = {name: [s.busy_s["compute"] for s in sim.stages]
            for name, sim in (("greedy", greedy), ("bloom", bloom))}
    assert max(work["bloom"]) == work["bloom"][11] > 1.05 * work["bloom"][1]
    assert max(work["greedy"]) == pytest.approx(work["greedy"][1], rel=0.01)   # + embedding
    head = work["greedy"][11] - work["greedy"][1] * 4 / 6
    assert 1.2 < head / (work["greedy"][1] / 6) < 1.5
    assert max(work["greedy"]) < max(work["bloom"])
    assert greedy.iteration_s < bloom.iteration_s


def test_the_simulator_runs_each_stage_with_its_own_layers():
    sim = simulate(BLOOM_LIKE, NO_OVERLAP, bloom_layout(NO_OVERLAP))
    busy = [s.busy_s["compute"] for s in sim.stages]
    assert busy[1] == pytest.approx(busy[5], rel=1e-9)
    assert busy[0] < busy[1] and busy[0] == pytest.approx(busy[1] * 5 / 6, rel=0.02)


# ------------------------------------------------------------------------ search
def test_search_places_layers_unevenly_where_the_stack_does_and_it_helps():
    """70 layers: the even depths are 1, 2, 5, 7, 10, 14, 35 and 70, and no tp (dividing
    112 heads) times such a pp takes the factor 3 of 384 GPUs with dp dividing the
    batch of 512: evenly, 48 nodes run nothing. DeepSpeed's fill runs 12 or 24 stages."""
    even_only = JEANZAY.with_stack(JEANZAY.stack.replace(pipeline_partitions=("even",)))
    pins = {"precision": "bf16"}
    best, _ = search(BLOOM_LIKE, JEANZAY, 512, nodes=[48], pins=pins, top=1)
    plain, _ = search(BLOOM_LIKE, even_only, 512, nodes=[48], pins=pins, top=1)
    assert plain == []
    assert best[0].layout.pp in (12, 24) and best[0].layout.partition in UNEVEN
    assert best[0].memory_fits


def test_a_pinned_depth_gets_each_distinct_split():
    found, _ = search(BLOOM_LIKE, JEANZAY, 512, nodes=[48], top=50,
                      pins={"tp": 4, "pp": 12, "precision": "bf16"})
    assert {e.layout.partition for e in found} == set(UNEVEN)


def test_a_stack_that_places_layers_evenly_refuses_uneven_pins():
    fugaku = load_system("fugaku")
    model = ModelSpec(layers=40, hidden=5120, heads=40, vocab=50000, seq=2048)
    with pytest.raises(SpecError) as e:
        search(model, fugaku, 2016, nodes=[13824], pins={"partition": "type:transformer"})
    assert e.value.field == "partition" and "13b_pp8_tp6_dp288_inner.sh" in e.value.message
    with pytest.raises(SpecError) as e:
        search(model, fugaku, 2016, nodes=[13824], pins={"pp": 7})
    assert e.value.field == "pp" and "must divide" in e.value.message


# ------------------------------------------------------------- the command line
B = ["--system", "jeanzay-a100", "--layers", "70", "--hidden", "14336", "--heads", "112",
     "--vocab", "250880", "--seq", "2048", "--precision", "bf16", "--global-batch", "512"]


def test_plan_shows_the_layers_of_each_stage():
    result = CliRunner().invoke(main, ["plan", *B, "--nodes", "48", "--tp", "4", "--pp", "12",
                                       "--top", "2"])
    assert result.exit_code == 0, result.output
    assert "[6x11,4]" in result.stdout or "[5,6x10,5]" in result.stdout
    data = json.loads(CliRunner().invoke(main, ["plan", *B, "--nodes", "48", "--tp", "4",
                                                "--pp", "12", "--json"]).stdout)
    layout = data["best"][0]["layout"]
    assert sum(layout["stage_layers"]) == 70 and layout["partition"] in UNEVEN


def test_simulate_a_pinned_depth_takes_the_stacks_placement():
    result = CliRunner().invoke(main, ["simulate", *B, "--nodes", "48", "--tp", "4", "--pp",
                                       "12", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layout"]["partition"] == "type:transformer"     # Megatron-DeepSpeed's default
    assert data["layout"]["stage_layers"] == [6] * 11 + [4]
    text = CliRunner().invoke(main, ["simulate", *B, "--nodes", "48", "--tp", "4", "--pp", "12",
                                     "--partition", "type:transformer|embedding"]).stdout
    assert "PP12 [5,6x10,5]" in text and "layers placed by type:transformer|embedding" in text


def test_simulate_refuses_an_uneven_pin_the_stack_does_not_run():
    result = CliRunner().invoke(main, ["simulate", "--model", "fugaku-llm-13b", "--nodes",
                                       "13824", "--tp", "6", "--pp", "8", "--partition",
                                       "type:transformer"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: partition: stack fugaku-llm of fugaku")


def test_validate_against_predicts_uneven_rows_and_names_what_it_cannot(tmp_path):
    header = ["system", "model", "layers", "hidden", "heads", "vocab", "seq", "ranks", "tp",
              "pp", "dp", "global_batch", "micro_batch", "interleave", "recompute",
              "sequence_parallel", "zero", "precision", "clock_ghz", "measured", "unit",
              "flops_convention", "source", "partition"]
    row = dict(system="jeanzay-a100", model="bloom-like", layers=70, hidden=14336, heads=112,
               vocab=250880, seq=2048, ranks=384, tp=4, pp=12, dp=8, global_batch=512,
               micro_batch=2, interleave=1, recompute="full", sequence_parallel="no", zero=1,
               precision="bf16", clock_ghz="", measured=20.0, unit="sec_per_iter",
               flops_convention="", source="a row written for this test")
    rows = [dict(row, partition="type:transformer|embedding"), dict(row, partition=""),
            dict(row, partition="even"), dict(row, partition="zigzag")]
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    result = CliRunner().invoke(main, ["validate", "--against", str(path), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    done = [r for r in data["rows"] if r["error"] is not None]
    assert [r["layout"].split()[-1] for r in done] == ["split=type:transformer|embedding",
                                                       "split=type:transformer"]
    lay = bloom_layout(micro_batch=2, recompute="full", zero=1)
    assert done[0]["predicted"] == pytest.approx(simulate(BLOOM_LIKE, JEANZAY, lay).iteration_s)
    why = {r["row"].split()[-1]: r["why"] for r in data["rows"] if r["error"] is None}
    assert "must divide the number of layers (70)" in why["4"]
    assert why["5"].startswith("partition:") and "zigzag" in why["5"]


def test_a_pinned_even_partition_leaves_the_interleaved_depths_to_the_search():
    """45 layers: pp 3 with 3 virtual stages divides them, though 2 virtual stages on
    one stage would not; pinning the even partition must not refuse the search."""
    model = ModelSpec(layers=45, hidden=1024, heads=16, vocab=50000, seq=1024)
    found, _ = search(model, JEANZAY, 96, nodes=[3], top=1,
                      pins={"partition": "even", "schedule": "interleaved", "precision": "bf16"})
    assert found and found[0].layout.schedule == "interleaved"
    with pytest.raises(SpecError) as e:
        search(model, JEANZAY, 96, nodes=[3], pins={"partition": "type:transformer",
                                                   "schedule": "interleaved"})
    assert e.value.field == "partition" and "no virtual stages" in e.value.message
