"""Error bands: the published runs in a prediction's regime, the declared ranges of
assumed values, and a planner ranked on the bands (perfmodel.evidence,
perfmodel.uncertainty). The coverage checks predict every shipped run with a band
built from the other logs only (leave one source out)."""

import dataclasses
import math
import statistics

import pytest

from calibration.against import all_logs, evidence_runs, validate_against
from fpcore.errors import SpecError
from perfmodel.estimator import estimate
from perfmodel.evidence import (FLOOR, NEAR, NO_EVIDENCE, EvidenceRun, Ranker, Regime,
                                band_for, distance, regime_of, shipped_evidence, source_of)
from perfmodel.layout import Layout
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model
from perfmodel.sizing import model_for_params
from perfmodel.system import load_system
from perfmodel.uncertainty import parameter_spread, read_uncertainty, varied

FUGAKU = load_system("fugaku")
ANALYTIC = load_system("fugaku", network_model="analytic")
MOSAIC = load_system("mosaic-a100-40gb")
BARE = dataclasses.replace(MOSAIC, uncertain=())       # its assumed values' ranges left out
MPT_1B = ModelSpec(layers=24, hidden=2048, heads=16, vocab=50368, seq=2048, name="mpt-1b")
BASE = Regime(machine="fattree", stack="s", sharding="gathers", pipeline="none", dp_nodes=False,
              tp_nodes=False, recompute="none", precision="16-bit", log_params=9.0)


def run(ratio: float, source: str = "other", **changes) -> EvidenceRun:
    return EvidenceRun(source=source, row="log row 2", system="x",
                       regime=dataclasses.replace(BASE, **changes),
                       predicted_s=1.0, measured_s=ratio)


# ----------------------------------------------------------------------- regimes
def test_distance_adds_a_weight_per_mechanism_that_differs():
    assert distance(BASE, BASE) == 0
    assert distance(BASE, dataclasses.replace(BASE, machine="torus")) == 3.0
    assert distance(BASE, dataclasses.replace(BASE, pipeline="filled")) == 1.0
    assert distance(dataclasses.replace(BASE, pipeline="bubble"),
                    dataclasses.replace(BASE, pipeline="filled")) == 0.5
    two = dataclasses.replace(BASE, recompute="full", dp_nodes=True)
    assert distance(BASE, two) == 2.0 <= NEAR < distance(BASE, dataclasses.replace(
        two, tp_nodes=True))
    assert distance(BASE, dataclasses.replace(BASE, log_params=12.0)) == 1.5    # capped
    assert distance(BASE, dataclasses.replace(BASE, log_dp=1.0)) == 0.5           # dp 10x
    assert distance(BASE, dataclasses.replace(BASE, log_dp=4.0)) == 1.0           # capped
    # a mixture of experts is two mechanisms (its experts and its all-to-alls); context
    # parallelism one (its ring)
    assert distance(BASE, dataclasses.replace(BASE, moe=True)) == 2.0
    assert distance(BASE, dataclasses.replace(BASE, cp=True)) == 1.0


def test_a_regime_names_what_the_layout_does():
    lay = Layout(dp=32, micro_batch=2, global_batch=512, zero=3, precision="bf16",
                 **MOSAIC.stack.layout_settings())
    r = regime_of(MPT_1B, MOSAIC, lay)
    assert (r.machine, r.sharding, r.pipeline, r.dp_nodes, r.tp_nodes) == \
        ("fattree", "gathers", "none", True, False)
    lay = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full")
    r = regime_of(model_for_params(13e9), FUGAKU, lay)
    assert (r.machine, r.sharding, r.pipeline, r.tp_nodes) == ("torus", "replicated", "bubble",
                                                               True)
    assert not r.moe and not r.cp
    grok, h100 = load_model("grok-1"), load_system("dgx-h100")
    lay = Layout(tp=4, cp=2, pp=8, dp=8, ep=8, global_batch=1024, virtual_stages=8,
                 schedule="interleaved", sequence_parallel=True, zero=1, precision="bf16",
                 **h100.stack.layout_settings())
    r = regime_of(grok, h100, lay)
    assert r.moe and r.cp


def test_a_mixture_of_experts_band_rests_on_the_mixture_of_experts_runs():
    """The model predicts Grok-1 on DGX H100 13-26% fast (tests/calibration): a plan
    for it gets a band from those runs, slow of the model's own time, not from the
    dense runs the same machine and stack predict within a few percent."""
    grok, h100 = load_model("grok-1"), load_system("dgx-h100")
    lay = Layout(tp=4, cp=2, pp=8, dp=8, ep=8, global_batch=1024, virtual_stages=8,
                 schedule="interleaved", sequence_parallel=True, zero=1, precision="bf16",
                 **h100.stack.layout_settings())
    band = band_for(grok, h100, lay, 20.0, parameters=False)
    near = [r for r in shipped_evidence()
            if distance(regime_of(grok, h100, lay), r.regime) <= NEAR]
    moe = [r for r in near if r.regime.moe]
    assert band.evidence == len(near) and len(moe) >= 2 * (len(near) - len(moe)) > 0
    assert band.median_s > 20.0 * 1.10 and band.high_s > 20.0 * 1.15
    dense = band_for(load_model("llama3.1-70b"), h100, lay.replace(ep=1), 20.0,
                     parameters=False)
    assert dense.median_s < 20.0 * 1.05


# ------------------------------------------------------------------------- bands
LAY = Layout(dp=8, micro_batch=2, global_batch=64, zero=3, precision="bf16",
             **MOSAIC.stack.layout_settings())


def test_no_evidence_gives_the_wide_band_never_a_narrow_one():
    far = tuple(run(1.01, machine="torus") for _ in range(50))      # precise, but elsewhere
    band = band_for(MPT_1B, BARE, LAY, 10.0, runs=far)
    assert band.evidence == 0 and band.evidence_error is None
    assert (math.log(band.low_s / 10), math.log(band.high_s / 10)) == pytest.approx(NO_EVIDENCE)
    assert band.width > 1.0


def test_the_band_is_the_evidences_spread_widened_for_few_runs():
    """Ten runs of the regime, the model 0-18% optimistic: the median shifts the band,
    the 10-90% range widened by 1 + 1/sqrt(10) sets its width."""
    regime = regime_of(MPT_1B, MOSAIC, LAY)
    ratios = [1.0 + 0.02 * i for i in range(10)]
    runs = tuple(EvidenceRun("other", "log row 2", "x", regime, 1.0, r) for r in ratios)
    band = band_for(MPT_1B, BARE, LAY, 10.0, runs=runs)
    logs = [math.log(r) for r in ratios]
    q = statistics.quantiles(logs, n=100, method="inclusive")
    centre, widen = statistics.median(logs), 1 + 1 / math.sqrt(10)
    assert band.evidence == 10 and band.median_s == pytest.approx(10 * math.exp(centre))
    assert band.low_s == pytest.approx(10 * math.exp(centre - max(FLOOR, (centre - q[9]) * widen)))
    assert band.high_s == pytest.approx(10 * math.exp(centre + max(FLOOR, (q[89] - centre) * widen)))
    same = tuple(EvidenceRun("other", "log row 2", "x", regime, 1.0, 1.0) for _ in range(10))
    tight = band_for(MPT_1B, BARE, LAY, 10.0, runs=same)
    assert tight.low_s == pytest.approx(10 / 1.03) and tight.high_s == pytest.approx(10 * 1.03)
    # a run is never evidence for a prediction of its own source
    assert band_for(MPT_1B, BARE, LAY, 10.0, runs=runs, exclude_source="other").evidence == 0


def test_assumed_values_widen_the_band_in_quadrature():
    """Fugaku's declared ranges: the kernel rate of the fugaku-llm stack (an upper bound
    until calibrated) only slows a prediction; its effect is the log-ratio of the layout
    priced at each end of the range."""
    model = model_for_params(13e9)
    lay = Layout(tp=6, pp=8, dp=288, global_batch=2016, recompute="full",
                 **FUGAKU.stack.layout_settings())
    spread = parameter_spread(model, FUGAKU, lay)
    effects = {k: (lo, hi) for k, lo, hi in spread.effects}
    slow_kernels = effects["stacks.fugaku-llm.kernel_bytes_per_cycle"]
    assert slow_kernels[0] > 0.3 and slow_kernels[1] == 0.0       # STREAM is the preset
    assert effects["node.gemm_efficiency"][0] > 0 > effects["node.gemm_efficiency"][1]
    assert spread.slow == pytest.approx(math.sqrt(sum(max(0, *e) ** 2 for e in effects.values())))
    # another stack is not this stack's range
    other = FUGAKU.with_stack(next(s for s in FUGAKU.stacks if s.name == "deepspeedfugaku-2023"))
    assert "stacks.fugaku-llm.kernel_bytes_per_cycle" not in {
        k for k, _, _ in parameter_spread(model, other, lay.replace(recompute="none")).effects}
    # on one node the network's assumed values do not move it; declared nothing, nothing
    one_node = {k: (lo, hi) for k, lo, hi in parameter_spread(MPT_1B, MOSAIC, LAY).effects}
    assert max(map(abs, one_node["network.latency_us"])) < 0.001
    assert one_node["node.stream_bandwidth_per_domain_gbs"][0] > 0 == \
        one_node["node.stream_bandwidth_per_domain_gbs"][1]           # HBM at 80%: slower
    bare = dataclasses.replace(MOSAIC, uncertain=())
    assert parameter_spread(MPT_1B, bare, LAY.replace(dp=32, global_batch=256)).effects == ()


def test_varying_a_value_changes_only_it():
    u = next(u for u in FUGAKU.uncertain if u.key == "node.gemm_efficiency")
    assert varied(FUGAKU, u, 0.7).node.gemm_efficiency == 0.7
    c = next(u for u in FUGAKU.uncertain if u.key.endswith("collective_efficiency"))
    half = varied(FUGAKU, c, 0.5)
    assert half.network.link_efficiency == pytest.approx(FUGAKU.network.link_efficiency * 0.5)
    assert varied(half, c, 1.0).network.link_efficiency == pytest.approx(
        FUGAKU.network.link_efficiency)


@pytest.mark.parametrize("raw,message", [
    ({"node.cores": {"low": 1, "high": 2, "source": "x"}}, "not a value a range"),
    ({"node.gemm_efficiency": {"low": 0.9, "high": 0.8, "source": "x"}}, "must be below"),
    ({"node.gemm_efficiency": {"low": 0.7, "high": 0.9}}, "low = ..., high = ..."),
    ("nope", "must be a table"),
])
def test_a_bad_range_is_refused_by_name(raw, message):
    with pytest.raises(SpecError, match=message):
        read_uncertainty("uncertainty", raw)


# ------------------------------------------------------------------------ ranking
def test_the_ranker_finds_what_sorting_every_whole_band_finds():
    """The lazy ranking (whole bands only while a lower bound can still win) equals
    ranking every layout by its whole band."""
    model = model_for_params(13e9)
    ests = []
    for tp, pp in ((5, 4), (4, 4), (8, 4), (5, 8), (10, 2), (4, 8)):
        dp = 2016 // 4 if tp * pp * (2016 // 4) <= 20000 else 252
        for rc in ("selective", "full"):
            lay = Layout(tp=tp, pp=pp, dp=dp, global_batch=2016, recompute=rc,
                         **ANALYTIC.stack.layout_settings())
            ests.append(estimate(model, ANALYTIC, lay, validate=False))
    for objective in ("p90", "median", "model"):
        lazy = Ranker(objective).best(ests, 3)
        full = Ranker(objective)
        brute = sorted(ests, key=lambda e: (full.value(e), e.nodes))[:3]
        assert [e.layout for e in lazy] == [e.layout for e in brute]
    with pytest.raises(SpecError, match="objective"):
        Ranker("mean")


# ------------------------------------------------------------------ the evidence
def test_sources_group_a_logs_fit_and_held_out_runs():
    assert source_of("runs_mosaic-a100_fit") == source_of("runs_mosaic-a100") == "mosaic-a100"
    assert {r.source for r in shipped_evidence()} == {
        source_of(p.stem) for p in all_logs()}


@pytest.mark.slow
def test_the_shipped_evidence_is_what_the_model_predicts_now():
    """evidence.csv is current: `fugakuperf validate --update-evidence` after a change."""
    shipped = {r.row: r for r in shipped_evidence()}
    now = [r for log in all_logs() for r in evidence_runs(log)]
    assert len(now) == len(shipped)
    for r in now:
        old = shipped[r.row]
        assert old.regime == dataclasses.replace(r.regime, log_params=round(r.regime.log_params, 4),
                                                 log_dp=round(r.regime.log_dp, 4))
        assert old.predicted_s == pytest.approx(r.predicted_s, rel=1e-9)
        assert old.measured_s == pytest.approx(r.measured_s, rel=1e-12)


@pytest.fixture(scope="module")
def every_log():
    return [validate_against(log) for log in all_logs()]


@pytest.mark.slow
def test_bands_cover_the_measured_runs_left_out_of_their_evidence(every_log):
    """Leave one source out: each run's band rests only on the other logs. The measured
    time falls inside the 80% band for 70-95% of the shipped runs (neither
    overconfident nor vacuous), and the median band is narrower than 30% of the
    prediction."""
    rows = [r for d in every_log for r in d["rows"] if r["error"] is not None]
    assert len(rows) >= 170
    coverage = statistics.fmean(r["in_band"] for r in rows)
    width = statistics.median(r["band"]["width"] for r in rows)
    assert 0.70 <= coverage <= 0.95, coverage
    assert width < 0.30, width
    # a log whose regime no other source speaks to gets the wide band, not a narrow one
    fugaku = next(d for d in every_log if d["against"].endswith("runs_fugaku.csv"))
    assert all(r["band"]["evidence_runs"] == 0 and r["band"]["width"] > 1 for r in fugaku["rows"])


def test_the_pool_measures_every_runs_distance_at_once():
    """EvidencePool.distances is ``distance`` to each run; with ``shape_only`` it is
    the least distance of any regime a layout of the same shape can be in."""
    from perfmodel.evidence import EvidencePool, shape_regimes
    runs = shipped_evidence()
    pool = EvidencePool(runs)
    for a in {r.regime for r in runs} | {BASE}:
        assert list(pool.distances(a)) == pytest.approx([distance(a, r.regime) for r in runs])
    model = model_for_params(13e9)
    for tp, pp, dp in ((8, 1, 64), (4, 4, 16), (1, 2, 3)):
        regimes = shape_regimes(model, MOSAIC, tp, pp, dp, "bf16")
        least = [min(distance(g, r.regime) for g in regimes) for r in runs]
        assert list(pool.distances(regimes[0], shape_only=True)) == pytest.approx(least)


NODES = [1536, 3072, 4032, 5040, 6048, 10080, 13440]       # 540 layouts of a 13B model fit


def _all_screened(model, system, nodes):
    """Every fitting layout on ``nodes`` with its contention-free estimate (no pruning)."""
    from perfmodel.search import screen
    found, _ = screen(model, system, 2016, nodes=nodes, top=10**6, shapes=10**6,
                      variants=10**6)
    return found


@pytest.mark.parametrize("objective", ["p90", "median"])
def test_screening_by_the_objective_finds_what_ranking_everything_finds(objective):
    """The search screens by the objective on each layout's band and prunes with its
    lower bounds (evidence-only bands, times at the ranges' ends bounded below); on a
    system whose network is the screening model that loses nothing: its best equal the
    best of every fitting layout ranked by whole bands."""
    from perfmodel.search import search
    model = model_for_params(13e9)
    every = _all_screened(model, ANALYTIC, NODES)
    brute = Ranker(objective).best(every, 3)
    found, stats = search(model, ANALYTIC, 2016, nodes=NODES, top=3, objective=objective)
    assert [e.layout for e in found] == [e.layout for e in brute]
    assert stats.candidates_evaluated < len(every) / 3          # and the bounds prune


def test_the_searchs_lower_bounds_never_pass_a_layouts_value():
    """least_value, fed the shape's or the layout's time bounds, is at most the value
    of every layout it stands for (checked on 150 of the layouts that fit on NODES)."""
    from perfmodel.estimator import layout_lower_bound, screening_network
    from perfmodel.search import _max_virtual, lower_bound_s
    model = model_for_params(13e9)
    every = _all_screened(model, FUGAKU, NODES)
    ranker = Ranker("p90")
    for est in every[::max(1, len(every) // 150)]:
        lay = est.layout
        evidence = ranker.shape_evidence(model, FUGAKU, lay.tp, lay.pp, lay.dp, lay.precision)
        value = ranker.screening_value(est)
        whole = ranker.least_value(FUGAKU, lambda s: layout_lower_bound(
            model, s, lay, screening_network(s)), evidence)
        shape = ranker.least_value(FUGAKU, lambda s: lower_bound_s(
            model, s, lay.tp, lay.pp, lay.dp, 2016, lay.precision, _max_virtual(model, lay.pp, {})),
            evidence)
        assert shape <= whole * (1 + 1e-9) and whole <= value * (1 + 1e-9)
        assert ranker.screening_floor(est) <= value * (1 + 1e-9)
