"""Layout: construction-time validation (one named field per mistake) and validate_layout.

Property tests: every layout the rules allow constructs and reports the derived
quantities its definition gives; every rule broken on its own is rejected with a
SpecError naming exactly the broken field.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fpcore.errors import SpecError
from perfmodel.layout import Layout, validate_layout
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model

# The rules as the docs state them (written out here, not imported from the module).
SCHEDULES = ("gpipe", "1f1b", "interleaved")
RECOMPUTE = ("none", "selective", "full")
PRECISIONS = ("fp32", "fp16")

SMALL = ModelSpec(layers=8, hidden=256, heads=8, vocab=1000, seq=128)
FUGAKU_LLM = load_model("fugaku-llm-13b")   # 40 layers, 36 heads, seq 2048
MODELS = pytest.mark.parametrize("model", [SMALL, FUGAKU_LLM], ids=["small", "fugaku-llm-13b"])


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def rejects(kwargs: dict, field: str) -> SpecError:
    """Layout(**kwargs) must raise a SpecError naming ``field`` (and say so first)."""
    with pytest.raises(SpecError) as info:
        Layout(**kwargs)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    return info.value


# ------------------------------------------------------------------ strategies
@st.composite
def layout_kwargs(draw, min_tp: int = 1, min_pp: int = 1, min_dp: int = 1):
    """A valid layout, as keyword arguments, plus the accumulation steps k."""
    tp = draw(st.integers(min_tp, 16))
    pp = draw(st.integers(min_pp, 16))
    dp = draw(st.integers(min_dp, 64))
    micro_batch = draw(st.integers(1, 8))
    k = draw(st.integers(1, 16))
    schedule = draw(st.sampled_from(SCHEDULES if pp >= 2 else ("gpipe", "1f1b")))
    virtual = draw(st.integers(2, 8)) if schedule == "interleaved" else 1
    recompute = draw(st.sampled_from(RECOMPUTE))
    stages = draw(st.none() | st.integers(1, pp)) if recompute == "full" else None
    return dict(tp=tp, pp=pp, dp=dp, micro_batch=micro_batch,
                global_batch=dp * micro_batch * k, schedule=schedule, virtual_stages=virtual,
                zero=draw(st.integers(0, 3)), recompute=recompute, recompute_stages=stages,
                sequence_parallel=draw(st.booleans()) if tp > 1 else False,
                precision=draw(st.sampled_from(PRECISIONS))), k


# ------------------------------------------------------------- valid layouts
@given(layout_kwargs())
def test_valid_layouts_construct_with_the_defined_derived_values(drawn):
    kw, k = drawn
    layout = Layout(**kw)
    assert layout.micro_batches == k == kw["global_batch"] // (kw["dp"] * kw["micro_batch"])
    assert layout.ranks == kw["tp"] * kw["pp"] * kw["dp"]
    assert Layout(**layout.to_dict()) == layout
    assert layout.label().startswith(f"TP{kw['tp']} PP{kw['pp']} DP{kw['dp']} "
                                     f"mb{kw['micro_batch']} {kw['schedule']}")


@given(layout_kwargs())
def test_each_stage_runs_the_recompute_mode_it_was_given(drawn):
    kw, _ = drawn
    layout = Layout(**kw)
    stages = kw["recompute_stages"]
    modes = [layout.stage_recomputes(i) for i in range(kw["pp"])]
    if stages is None:
        assert modes == [kw["recompute"]] * kw["pp"]
    else:   # only "full" may be limited to the first k stages
        assert modes == ["full"] * stages + ["none"] * (kw["pp"] - stages)


def test_fugaku_llm_recomputes_on_the_first_4_of_8_stages():
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)
    assert [layout.stage_recomputes(i) for i in range(8)] == ["full"] * 4 + ["none"] * 4
    assert layout.micro_batches == 7 and layout.ranks == 13824


# ----------------------------------------------------------- invalid layouts
@given(layout_kwargs(min_dp=2), st.data())
def test_global_batch_not_divisible_by_dp_times_micro_batch(drawn, data):
    kw, k = drawn
    step = kw["dp"] * kw["micro_batch"]
    kw["global_batch"] = step * k + data.draw(st.integers(1, step - 1))
    rejects(kw, "global_batch")


@given(layout_kwargs(min_pp=2))
def test_interleaved_needs_two_or_more_virtual_stages(drawn):
    kw, _ = drawn
    rejects(kw | {"schedule": "interleaved", "virtual_stages": 1}, "virtual_stages")


@given(layout_kwargs(), st.sampled_from(("1f1b", "gpipe")), st.integers(2, 8))
def test_virtual_stages_need_the_interleaved_schedule(drawn, schedule, virtual):
    kw, _ = drawn
    rejects(kw | {"schedule": schedule, "virtual_stages": virtual}, "virtual_stages")


@given(layout_kwargs(), st.sampled_from(("none", "selective")), st.data())
def test_recompute_stages_need_full_recompute(drawn, recompute, data):
    kw, _ = drawn
    stages = data.draw(st.integers(1, kw["pp"]))
    rejects(kw | {"recompute": recompute, "recompute_stages": stages}, "recompute_stages")


@given(layout_kwargs(), st.integers(1, 10))
def test_recompute_stages_at_most_pp(drawn, excess):
    kw, _ = drawn
    rejects(kw | {"recompute": "full", "recompute_stages": kw["pp"] + excess}, "recompute_stages")


@given(layout_kwargs())
def test_sequence_parallel_needs_tensor_parallelism(drawn):
    kw, _ = drawn
    rejects(kw | {"tp": 1, "sequence_parallel": True}, "sequence_parallel")


@given(layout_kwargs(), st.integers(4, 10) | st.integers(-5, -1))
def test_zero_stage_is_0_to_3(drawn, zero):
    kw, _ = drawn
    rejects(kw | {"zero": zero}, "zero")


@given(layout_kwargs(), st.integers(-8, 0))
def test_tp_must_be_positive(drawn, tp):
    kw, _ = drawn
    rejects(kw | {"tp": tp, "sequence_parallel": False}, "tp")


@given(layout_kwargs(), st.sampled_from(("fp8", "fp64", "FP32", "BF16", "")))
def test_precision_is_fp32_fp16_or_bf16(drawn, precision):
    kw, _ = drawn
    rejects(kw | {"precision": precision}, "precision")


@given(layout_kwargs(), st.sampled_from(("zb", "ZB-V", "1F1B", "")))
def test_unknown_schedules_are_rejected(drawn, schedule):
    kw, _ = drawn
    err = rejects(kw | {"schedule": schedule}, "schedule")
    assert "1f1b" in str(err)   # the message lists what is allowed


def test_interleaved_needs_two_pipeline_stages():
    rejects(dict(pp=1, schedule="interleaved", virtual_stages=2), "schedule")


# ------------------------------------------------------------ validate_layout
@st.composite
def fitting_kwargs(draw, model: ModelSpec):
    """A layout that ``model`` can run: tp | heads, pp x v | layers."""
    tp = draw(st.sampled_from([t for t in divisors(model.heads)
                               if model.ffn % t == 0 and model.kv_heads % t == 0]))
    pp = draw(st.sampled_from(divisors(model.layers)))
    chunks = [v for v in divisors(model.layers // pp) if v >= 2] if pp >= 2 else []
    schedule = draw(st.sampled_from(("1f1b", "gpipe", "interleaved") if chunks
                                    else ("1f1b", "gpipe")))
    virtual = draw(st.sampled_from(chunks)) if schedule == "interleaved" else 1
    dp = draw(st.integers(1, 32))
    micro_batch = draw(st.integers(1, 4))
    k = pp * draw(st.integers(1, 4)) if schedule == "interleaved" else draw(st.integers(1, 16))
    return dict(tp=tp, pp=pp, dp=dp, micro_batch=micro_batch, global_batch=dp * micro_batch * k,
                schedule=schedule, virtual_stages=virtual,
                sequence_parallel=tp > 1 and model.seq % tp == 0 and draw(st.booleans()))


def rejects_for(model: ModelSpec, kwargs: dict, field: str, ranks: int | None = None):
    layout = Layout(**kwargs)   # a valid layout on its own ...
    with pytest.raises(SpecError) as info:
        validate_layout(layout, model, ranks)   # ... that this model cannot run
    assert info.value.field == field, str(info.value)


@MODELS
@given(data=st.data())
def test_layouts_that_fit_the_model_validate(model, data):
    kw = data.draw(fitting_kwargs(model))
    layout = Layout(**kw)
    validate_layout(layout, model)
    validate_layout(layout, model, kw["tp"] * kw["pp"] * kw["dp"])


@MODELS
@given(data=st.data())
def test_tp_must_divide_the_heads(model, data):
    kw = data.draw(fitting_kwargs(model))
    tp = data.draw(st.integers(2, 4 * model.heads).filter(lambda t: model.heads % t))
    rejects_for(model, kw | {"tp": tp, "sequence_parallel": False}, "tp")


@MODELS
@given(data=st.data())
def test_pp_times_virtual_stages_must_divide_the_layers(model, data):
    kw = data.draw(fitting_kwargs(model))
    pp = data.draw(st.integers(2, 2 * model.layers))
    if model.layers % pp:        # pp alone misfits, whatever the virtual stages
        virtual = data.draw(st.integers(1, 6))
    else:                        # pp fits, the chunks pp x v do not
        virtual = data.draw(st.integers(2, 12).filter(lambda v: model.layers % (pp * v)))
    schedule = "interleaved" if virtual > 1 else "1f1b"
    assert model.layers % (pp * virtual)
    rejects_for(model, kw | {"pp": pp, "virtual_stages": virtual, "schedule": schedule,
                             "global_batch": kw["dp"] * kw["micro_batch"] * pp}, "pp")


@MODELS
@given(data=st.data())
def test_ranks_must_equal_tp_pp_dp(model, data):
    kw = data.draw(fitting_kwargs(model))
    ranks = kw["tp"] * kw["pp"] * kw["dp"]
    other = data.draw(st.integers(1, 4 * ranks + 8).filter(lambda r: r != ranks))
    rejects_for(model, kw, "dp", ranks=other)


@MODELS
@given(data=st.data())
def test_interleaved_needs_micro_batches_divisible_by_pp(model, data):
    pairs = [(p, v) for p in divisors(model.layers) for v in divisors(model.layers // p)
             if p >= 2 and v >= 2]
    pp, virtual = data.draw(st.sampled_from(pairs))
    kw = data.draw(fitting_kwargs(model))
    k = data.draw(st.integers(1, 50).filter(lambda m: m % pp))
    rejects_for(model, kw | {"pp": pp, "virtual_stages": virtual, "schedule": "interleaved",
                             "global_batch": kw["dp"] * kw["micro_batch"] * k}, "global_batch")


def test_sequence_parallel_needs_tp_dividing_the_sequence():
    # Fugaku-LLM's TP6 does not divide its 2048-token sequence.
    rejects_for(FUGAKU_LLM, dict(tp=6, pp=8, dp=288, global_batch=2016, sequence_parallel=True),
                "sequence_parallel")


def test_fugaku_llm_layout_validates_on_13824_ranks():
    layout = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full", recompute_stages=4)
    validate_layout(layout, FUGAKU_LLM, 13824)


# ------------------------------------------- rules of the training frameworks
LLAMA2_70B = load_model("llama2-70b")   # 64 heads, 8 key/value heads (GQA), ffn 28672


@pytest.mark.parametrize("tp", [16, 32, 64])
def test_tp_must_divide_the_kv_heads(tp):
    """Megatron-core divides the query groups (kv heads) by tp: 16 > 8 kv heads cannot run."""
    lay = Layout(tp=tp, pp=1, dp=1, global_batch=1)
    with pytest.raises(SpecError) as info:
        validate_layout(lay, LLAMA2_70B)
    assert info.value.field == "tp" and "kv_heads" in info.value.message


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_tp_dividing_the_kv_heads_validates(tp):
    validate_layout(Layout(tp=tp, pp=1, dp=1, global_batch=1), LLAMA2_70B)


@pytest.mark.parametrize("zero", [2, 3])
def test_zero_2_and_3_cannot_run_with_pipeline_parallelism(zero):
    """DeepSpeed's PipelineEngine refuses ZeRO-2/3; Megatron-LM has no ZeRO-2/3."""
    from perfmodel.layout import check_runnable
    lay = Layout(tp=1, pp=2, dp=4, global_batch=8, zero=zero)
    validate_layout(lay, SMALL)                 # the model can be split this way ...
    with pytest.raises(SpecError) as info:
        check_runnable(lay, SMALL)              # ... but no framework runs it
    assert info.value.field == "zero" and "pipeline" in info.value.message
    check_runnable(lay.replace(pp=1, dp=8), SMALL)
    check_runnable(lay.replace(zero=1), SMALL)


def test_interleaved_schedule_needs_more_than_two_stages():
    """Megatron-LM (megatron/arguments.py, as its Megatron-DeepSpeed forks run it)."""
    from perfmodel.layout import check_runnable
    two = Layout(tp=1, pp=2, dp=1, global_batch=4, schedule="interleaved", virtual_stages=2)
    validate_layout(two, SMALL)
    with pytest.raises(SpecError) as info:
        check_runnable(two, SMALL)
    assert info.value.field == "schedule"
    check_runnable(Layout(tp=1, pp=4, dp=1, global_batch=8, schedule="interleaved",
                          virtual_stages=2), SMALL)


def test_check_runnable_applies_the_model_rules_too():
    from perfmodel.layout import check_runnable
    with pytest.raises(SpecError) as info:
        check_runnable(Layout(tp=16, pp=1, dp=1, global_batch=1), LLAMA2_70B)
    assert info.value.field == "tp"


def test_pinned_switches_read_as_words():
    from perfmodel.layout import pins_text
    assert pins_text({"tp": 4, "pp": 8, "ep": 8, "expert_tp": False}) == \
        "tp = 4, pp = 8, ep = 8, experts whole on every TP rank"
    assert pins_text({"sequence_parallel": True, "expert_tp": True}) == \
        "sequence parallelism, experts split over TP"
    assert pins_text({"sequence_parallel": False}) == "no sequence parallelism"
