"""Predictions against published training runs (validate --against), with thresholds:
a later change that breaks accuracy fails here."""

import csv
import json
from importlib import resources

import pytest

from calibration.against import COLUMNS, predict_row, read_runs, validate_against
from fpcore.errors import SpecError

RUNS = resources.files("perfmodel.data") / "validation"


@pytest.fixture(scope="module")
def selene():
    return validate_against(str(RUNS / "runs_selene.csv"))


@pytest.mark.slow
def test_selene_runs_mean_within_10_percent_and_no_row_past_20(selene):
    # the stack's GEMM curve fitted on 3 of the 13 rows (selene.toml says which) under
    # the data parallelism its source gives (Megatron-LM's local DDP: one flat all-reduce
    # after the backward); one model, no per-row tuning. Was 5.7%, 15.2% on the node's
    # curve with the reduction assumed overlapped.
    assert selene["mean_abs_error"] <= 0.031, selene["mean_abs_error"]
    worst = max(selene["rows"], key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) <= 0.068, worst


@pytest.mark.slow
def test_every_selene_layout_the_model_says_fits_is_one_that_ran(selene):
    assert all(r["memory_fits"] for r in selene["rows"])
    searched = [r for r in selene["rows"] if r["micro_batch_searched"]]
    assert len(searched) == 5 and all(r["unit"] == "tflops_per_rank" for r in searched)


@pytest.fixture(scope="module")
def fugaku():
    return validate_against(str(RUNS / "runs_fugaku.csv"))


def test_fugaku_runs_mean_within_10_percent_and_no_row_past_20(fugaku):
    # the deepspeedfugaku-2023 stack is fitted on runs_fugaku_fit.csv, never on these rows
    assert {r["stack"] for r in fugaku["rows"]} == {"deepspeedfugaku-2023"}
    assert fugaku["mean_abs_error"] <= 0.070, fugaku["mean_abs_error"]     # was 6.9%
    worst = max(fugaku["rows"], key=lambda r: abs(r["error"]))
    assert abs(worst["error"]) <= 0.143, worst                             # was 14.2%


def _config(row: dict) -> tuple:
    keys = ("layers", "hidden", "ranks", "tp", "pp", "dp", "global_batch", "micro_batch",
            "recompute", "clock_ghz")
    return tuple(row[k] for k in keys)


# Sharded runs (FSDP FULL_SHARD, llm-foundry's MPT benchmarks on A100): each stack's
# fitted values come from its *_fit.csv rows only (at most a third of the table); every
# other row is a prediction. (mean, max) |error| the held-out rows must keep.
SHARDED = {
    "mosaic-a100-40gb": (0.08, 0.20),
    # one row misses the 20% this log is held to, recorded, not tuned away: 13b at seq
    # 1024 (+23.5%: the full-recompute rows ran at 72-79% of peak in hardware FLOPs where
    # the same models without recompute ran at 59-64%, so recomputation cost them less
    # than the forward pass the model prices it as); 760m at seq 512 comes close (-19.9%:
    # slower than the same model at seq 2048 with the same tokens per micro-batch)
    "mosaic-a100": (0.08, 0.24),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHARDED))
def test_sharded_runs_held_out_of_the_stack_fit_are_predicted(name):
    result = validate_against(str(RUNS / f"runs_{name}.csv"))
    mean, worst = SHARDED[name]
    assert result["failed"] == [] and result["predicted"] >= 40
    assert {r["stack"] for r in result["rows"]} == {"llm-foundry-fsdp"}
    assert all("FULL_SHARD" in r["layout"] and "flash" in r["layout"] for r in result["rows"])
    assert result["mean_abs_error"] <= mean, result["mean_abs_error"]
    assert result["max_abs_error"] <= worst, max(result["rows"], key=lambda r: abs(r["error"]))


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_sharded_fit_rows_are_a_third_at_most_and_never_held_out_rows(name):
    fit = [_sharded_config(r) for r in read_runs(RUNS / f"runs_{name}_fit.csv")]
    held_out = [_sharded_config(r) for r in read_runs(RUNS / f"runs_{name}.csv")]
    assert len(fit) * 3 <= len(fit) + len(held_out)
    assert not set(fit) & set(held_out)
    for row in read_runs(RUNS / f"runs_{name}.csv"):
        assert "llm-foundry scripts/train/benchmarking/README.md @" in row["source"]


def _sharded_config(row: dict) -> tuple:
    keys = ("layers", "hidden", "seq", "ranks", "global_batch", "micro_batch", "recompute",
            "precision")
    return tuple(row[k] for k in keys)


def test_the_fugaku_validation_runs_are_held_out_of_the_stack_fit():
    fit = {_config(r) for r in read_runs(RUNS / "runs_fugaku_fit.csv")}
    held_out = [_config(r) for r in read_runs(RUNS / "runs_fugaku.csv")]
    assert len(fit) >= 10 and not fit & set(held_out)


def test_the_fugaku_runs_on_the_preset_default_stack_miss_by_far(fugaku):
    # the same rows on Fugaku-LLM's tuned stack: the early stack's runs were 4-10x slower,
    # so the stack, not a per-row factor, carries the difference
    rows = []
    for i, row in enumerate(read_runs(RUNS / "runs_fugaku.csv")):
        row = dict(row, stack="fugaku-llm")
        rows.append(predict_row(row, f"row {i + 2}"))
    assert all(r["error"] < -0.6 for r in rows)
    assert all(abs(r["predicted"] / f["predicted"]) < 0.4 for r, f in zip(rows, fugaku["rows"]))


def _row(**changes):
    with (RUNS / "runs_selene.csv").open() as f:
        row = next(csv.DictReader(f))
    row.update(changes)
    return row


def test_both_flop_conventions():
    hw = predict_row(_row(micro_batch="1"))
    model = predict_row(_row(micro_batch="1", flops_convention="model"))
    # full recompute: hardware FLOPs are 4/3 of model FLOPs, up to the logits' share
    ratio = hw["predicted"] / model["predicted"]
    assert 1.25 < ratio < 4 / 3 and hw["iteration_s"] == model["iteration_s"]
    secs = predict_row(_row(micro_batch="1", unit="sec_per_iter", measured="1.0"))
    assert secs["predicted"] == pytest.approx(hw["iteration_s"])


@pytest.mark.parametrize("changes,field", [
    ({"unit": "furlongs"}, "unit"), ({"ranks": "33"}, "ranks"), ({"layers": "x"}, "layers"),
    ({"flops_convention": ""}, "flops_convention"), ({"measured": "fast"}, "measured"),
    ({"sequence_parallel": "maybe"}, "sequence_parallel"), ({"system": "nowhere"}, "system"),
    ({"stack": "pytorch-0.1"}, "stack"), ({"clock_ghz": "fast"}, "clock_ghz"),
    # values that parse but no run can have
    ({"measured": "nan"}, "measured"), ({"measured": "NaN"}, "measured"),
    ({"measured": "inf"}, "measured"), ({"measured": "-5"}, "measured"),
    ({"measured": "0"}, "measured"), ({"measured": ""}, "measured"),
    ({"measured": "1e-310"}, "measured"),       # a ratio to it would overflow to inf
    ({"measured": "1e308"}, "measured"), ({"flops_convention": "weird"}, "flops_convention"),
    ({"clock_ghz": "1e-300"}, "clock_ghz"),
    ({"clock_ghz": "nan"}, "clock_ghz"), ({"clock_ghz": "-1"}, "clock_ghz"),
    ({"tp": "0"}, "tp"), ({"dp": "-8"}, "dp"), ({"zero": "-1"}, "zero"),
    ({"interleave": "0"}, "interleave"), ({"micro_batch": "0"}, "micro_batch"),
    ({"recompute": "some"}, "recompute"), ({"precision": "fp8"}, "precision"),
    ({"layers": "99999999999999"}, "layers"),
    ({"expert_tp": "maybe"}, "expert_tp"), ({"expert_tp": "no"}, "expert_tp"),  # (dense)
    # a row names a preset, never a file (/etc/passwd was once parsed as a system)
    ({"system": "/etc/passwd"}, "system"), ({"system": "../my_system.toml"}, "system"),
])
def test_bad_rows_are_refused_naming_the_field(changes, field):
    with pytest.raises(SpecError) as err:
        predict_row(_row(**changes), "runs.csv row 2")
    assert err.value.field == field


def test_a_log_without_the_schema_is_refused(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("system,model\nselene,x\n")
    with pytest.raises(SpecError, match="missing column"):
        read_runs(path)
    assert len(COLUMNS) == 23


def _log(tmp_path, rows):
    path = tmp_path / "runs.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
    return path


def test_a_bad_row_is_listed_with_why_and_never_abandons_the_others(tmp_path, monkeypatch):
    """A NaN figure (once it made a log whose first row missed by 14% pass --max-error
    0.1) and a layout that cannot exist are listed, each with why; every other row is
    predicted. Every row is checked before the first is simulated."""
    import calibration.against as against
    simulated = []
    real = against.predict_row
    monkeypatch.setattr(against, "predict_row",
                        lambda row, where, stack=None, **kw: simulated.append(where) or
                        real(row, where, stack, **kw))
    path = _log(tmp_path, [_row(micro_batch="1"), _row(measured="nan"),
                           _row(micro_batch="1", tp="3"), _row(micro_batch="1")])
    result = validate_against(path)
    assert simulated == ["runs.csv row 2", "runs.csv row 5"]
    assert result["failed"] == ["runs.csv row 3", "runs.csv row 4"] and result["predicted"] == 2
    bad = {r["row"]: r for r in result["rows"] if r["error"] is None}
    assert bad["runs.csv row 3"]["why"] == "measured: must be a finite number, got nan"
    assert bad["runs.csv row 4"]["why"].startswith("ranks: tp x pp x dp")
    assert result["max_abs_error"] == max(abs(r["error"]) for r in result["rows"]
                                          if r["error"] is not None)
    json.dumps(result, allow_nan=False)


def test_a_field_past_the_csv_limit_is_refused_by_name(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "selene," + "x" * 2_000_000 + "\n")
    with pytest.raises(SpecError, match="malformed CSV") as err:
        read_runs(path)
    assert str(path) in err.value.field


def test_published_checks_of_a_users_file_named_like_a_preset_say_what_they_checked(tmp_path):
    """A user's system file whose table is called ``fugaku`` is not the preset: the
    published runs check the preset, and every line says so."""
    from importlib import resources

    from calibration.against import published_checks
    from perfmodel.system import load_system
    shipped = resources.files("perfmodel.data") / "systems" / "fugaku.toml"
    mine = tmp_path / "fugaku.toml"
    mine.write_text(shipped.read_text().replace("link_bandwidth_gbs = { value = 6.8",
                                                "link_bandwidth_gbs = { value = 3.4"))
    system = load_system(str(mine))
    assert system.name == "fugaku" and system.network.link_bandwidth == 3.4e9
    lines = published_checks(system)
    assert lines and all(line.endswith(f"not {mine}:fugaku)") or
                         line.endswith(f"not {mine}:fugaku") for line in lines), lines
    assert not any("not " in line and "preset" in line for line in
                   published_checks(load_system("fugaku")))


def test_a_logged_hybrid_sharded_run_is_predicted_with_its_group(tmp_path):
    """A row with shard_ranks runs HYBRID_SHARD over that many ranks; a group that
    cannot be is that row's error, named, and the other rows are still predicted."""
    from calibration.against import COLUMNS, validate_against
    row = dict(system="mosaic-a100-40gb", model="mpt 1b", layers=24, hidden=2048, heads=16,
               vocab=50368, seq=2048, ranks=16, tp=1, pp=1, dp=16, global_batch=256,
               micro_batch=4, interleave=1, recompute="none", sequence_parallel="no", zero=3,
               precision="bf16", clock_ghz="", measured=10.0, unit="sec_per_iter",
               flops_convention="", source="a test row")
    path = tmp_path / "runs.csv"
    header = list(COLUMNS) + ["shard_ranks"]
    lines = [",".join(header)] + [",".join(str({**row, "shard_ranks": s}.get(c, ""))
                                           for c in header) for s in ("", 8, 5)]
    path.write_text("\n".join(lines) + "\n")
    result = validate_against(path)
    full, hybrid, bad = result["rows"]
    assert "FULL_SHARD" in full["layout"] and "HYBRID_SHARD/8" in hybrid["layout"]
    assert hybrid["predicted"] < full["predicted"]
    assert bad["error"] is None and "shard_ranks" in bad["why"]


# Context-parallel and mixture-of-experts runs on DGX H100 (NVIDIA's DGX Cloud
# benchmarking recipes, BF16): the nemo-megatron-core stack's two values are fitted on
# the 4 dense runs of runs_dgx-h100_fit.csv; the 17 of runs_dgx-h100.csv are held out.
@pytest.fixture(scope="module")
def h100():
    return validate_against(str(RUNS / "runs_dgx-h100.csv"))


def _h100_rows(result, moe: bool):
    return [r for r in result["rows"] if r["error"] is not None
            and ("grok" in r["model"]) == moe]


@pytest.mark.slow
def test_h100_context_parallel_runs_held_out_of_the_fit_are_predicted(h100):
    """Llama 3.1 70B and 405B (and its proxies) with CP 2, interleaved pipelines,
    sequence parallelism and the distributed optimizer: 1.4% mean, 2.8% at most."""
    rows = _h100_rows(h100, moe=False)
    assert len(rows) == 8 and all("CP2" in r["layout"] for r in rows)
    errors = [abs(r["error"]) for r in rows]
    assert sum(errors) / len(errors) <= 0.02 and max(errors) <= 0.03, errors


@pytest.mark.slow
def test_h100_mixture_of_experts_runs_are_predicted_as_far_as_they_are(h100):
    """Grok-1 (8 experts, top 2, EP 8 across nodes; the 2-8 layer proxies on one to
    eight nodes): predicted 13-26% fast, every row (mean 16.7%). Held to that, so that
    it cannot silently get worse; the issue's 10% / 20% is the strict xfail below."""
    rows = _h100_rows(h100, moe=True)
    assert len(rows) == 9 and all(r["error"] < 0 for r in rows)
    errors = [abs(r["error"]) for r in rows]
    assert sum(errors) / len(errors) <= 0.17 and max(errors) <= 0.26, errors
    # every row is predicted: the 128-GPU run interleaves a pipeline of two stages,
    # which Megatron-Core allows when it overlaps the pipeline sends (the stack says so)
    assert h100["failed"] == []
    assert any("PP2" in r["layout"] and "interleaved" in r["layout"] for r in rows)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="Grok-1 on DGX H100 is predicted 13-26% fast (mean "
                                       "16.7%), not tuned away; the cause is not established "
                                       "(candidates: the grouped expert GEMMs' efficiency, "
                                       "the permutation kernels' real cost, the unfused "
                                       "loss and the proxies' fixed costs)")
def test_h100_mixture_of_experts_runs_meet_the_issues_thresholds(h100):
    errors = [abs(r["error"]) for r in _h100_rows(h100, moe=True)]
    assert sum(errors) / len(errors) <= 0.10 and max(errors) <= 0.20, errors


def test_h100_fit_rows_are_a_third_at_most_and_never_held_out_rows():
    fit = read_runs(RUNS / "runs_dgx-h100_fit.csv")
    held_out = read_runs(RUNS / "runs_dgx-h100.csv")
    assert len(fit) * 3 <= len(fit) + len(held_out)
    key = ("model", "layers", "ranks", "global_batch")
    assert not {tuple(r[k] for k in key) for r in fit} & \
        {tuple(r[k] for k in key) for r in held_out}
    assert all("grok" not in r["model"] for r in fit)          # every MoE run predicted
    for row in fit + held_out:
        assert "NVIDIA/dgxc-benchmarking @" in row["source"]
