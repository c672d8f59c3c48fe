"""How sure a prediction is: the published runs in its regime, and its error band.

**Regime.** A prediction is described by what the validation logs can speak to, one
feature per mechanism the model prices separately (and so can be wrong about
separately): the machine (a CPU torus or a GPU fat tree: different compute and
network models), the software stack, how data parallelism shards (replicated,
sharded states, or weights gathered every pass), the pipeline (none; filled, with at
least two micro-batches per stage; or bubble-bound), whether the data-parallel and
the tensor-parallel groups cross nodes, the data-parallel size (at a fixed batch, the
sequences each rank has to hide its data-parallel traffic behind), recomputation,
precision, the model's size, whether it is a mixture of experts (the routed experts'
GEMMs and their dispatch and combine all-to-alls) and whether it runs context
parallelism (the key/value ring).

**Near.** ``distance`` adds a weight for each feature that differs (``WEIGHTS``: a
different machine counts most, a size a decade away one) and a run is evidence for a
prediction when the distance is at most ``NEAR``: at most about two mechanisms differ
(sizes count per decade: a model ten times larger 1, capped at 1.5; a data-parallel
group ten times larger 0.5, capped at 1; a mixture of experts against a dense model
2, as the two mechanisms it adds, its experts' GEMMs and its all-to-alls). The
evidence is every logged run that near
(perfmodel/data/validation/evidence.csv: each shipped run, its regime and the time the
model predicted for it against the time measured, written by ``fugakuperf validate
--update-evidence``), and with ``--calibration FILE`` the calibration's own trainer
iterations on the node, predicted with its measured rates
(calibration.host.calibration_evidence).

**Band.** Over the evidence, the 10th, 50th and 90th percentiles of log(measured /
predicted time) give the model's bias and spread in that regime; the spread is
widened by 1 + 1/sqrt(n) for n runs (a few runs' range understates the tails) and
combined in quadrature with the declared uncertainty of the assumed values the
prediction rests on (perfmodel.uncertainty). Fewer than ``MIN_EVIDENCE`` runs is no
evidence: the band is then ``NO_EVIDENCE`` (the model may be 2x optimistic or 1.5x
pessimistic, the size of the misses sharded runs showed before they were modelled),
never narrow. The band reads as an 80% interval of the time the run would take.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from topologies import JobShape
from topologies.interface import group_geometry

from .uncertainty import Spread, combined, end_ratio, parameter_spread, range_ends

# Distance weights of the regime's features (see the module docstring).
WEIGHTS = dict(machine=3.0, stack=1.0, sharding=1.5, pipeline=1.0, pipeline_fill=0.5,
               dp_nodes=1.0, tp_nodes=1.0, recompute=1.0, precision=1.0, size=1.0,
               dp_size=0.5, moe=2.0, cp=1.0)
NEAR = 2.5                 # at most about two mechanisms differ
MIN_EVIDENCE = 3
NO_EVIDENCE = (math.log(1 / 1.5), math.log(2.0))     # log(time / predicted) 10th, 90th
FLOOR = math.log(1.03)     # run-to-run variation no model resolves: a band is never narrower
OBJECTIVES = {
    "p90": "the 90th percentile of the time to train (the band's slow end): robust to "
           "the model's errors",
    "median": "the median time, the model's prediction corrected by its bias in the regime",
    "model": "the model's own prediction (no band)",
}
EVIDENCE_COLUMNS = ("source", "row", "system", "stack", "machine", "sharding", "pipeline",
                    "dp_nodes", "tp_nodes", "recompute", "precision", "log_params", "log_dp",
                    "moe", "cp", "predicted_s", "measured_s")


@dataclass(frozen=True)
class Regime:
    machine: str          # the network's kind: torus (CPU nodes) or fattree (GPU nodes)
    stack: str
    sharding: str         # replicated, sharded (ZeRO-1/2) or gathers (ZeRO-3, FSDP)
    pipeline: str         # none, filled or bubble
    dp_nodes: bool        # a data-parallel group spans nodes
    tp_nodes: bool        # a tensor-parallel group spans nodes
    recompute: str
    precision: str        # fp32 or 16-bit
    log_params: float     # log10 of the model's parameters
    log_dp: float = 0.0   # log10 of the data-parallel size
    moe: bool = False     # a mixture of experts (routed experts and their all-to-alls)
    cp: bool = False      # context parallelism (the key/value ring)


def regime_of(model, system, layout) -> Regime:
    mode = layout.sharding_mode
    sharding = "gathers" if mode.gathers else "sharded" if layout.zero else "replicated"
    pipeline = ("none" if layout.pp == 1 else
                "filled" if layout.micro_batches >= 2 * layout.pp else "bubble")
    return _shape_regime(model, system, layout.tp, layout.pp, layout.dp, layout.precision,
                         layout.cp)(sharding, pipeline, layout.recompute)


def shape_regimes(model, system, tp: int, pp: int, dp: int, precision: str,
                  cp: int = 1) -> list[Regime]:
    """Every regime a layout of this (tp, pp, dp) shape (of ``cp`` context-parallel
    ranks) can be in (its sharding, pipeline fill and recomputation vary with the
    layout)."""
    from .layout import RECOMPUTE
    regime = _shape_regime(model, system, tp, pp, dp, precision, cp)
    return [regime(sharding, fill, recompute)
            for sharding in ("replicated", "sharded", "gathers")
            for fill in (("none",) if pp == 1 else ("filled", "bubble"))
            for recompute in RECOMPUTE]


def _shape_regime(model, system, tp: int, pp: int, dp: int, precision: str, cp: int = 1):
    """The regime of a layout of this shape, given what varies with the layout."""
    job = JobShape(tp, pp, dp, system.ranks_per_node)
    fixed = dict(machine=system.network.kind, stack=system.stack.name,
                 dp_nodes=dp > 1 and group_geometry(job, "dp").nodes > 1,
                 tp_nodes=tp > 1 and group_geometry(job, "tp").nodes > 1,
                 precision="fp32" if precision == "fp32" else "16-bit",
                 log_params=math.log10(model.params), log_dp=math.log10(dp),
                 moe=bool(model.experts), cp=cp > 1)
    return lambda sharding, pipeline, recompute: Regime(
        sharding=sharding, pipeline=pipeline, recompute=recompute, **fixed)


def distance(a: Regime, b: Regime) -> float:
    w = WEIGHTS
    d = w["machine"] * (a.machine != b.machine) + w["stack"] * (a.stack != b.stack)
    d += w["sharding"] * (a.sharding != b.sharding)
    if (a.pipeline == "none") != (b.pipeline == "none"):
        d += w["pipeline"]
    elif a.pipeline != b.pipeline:
        d += w["pipeline_fill"]
    d += w["dp_nodes"] * (a.dp_nodes != b.dp_nodes) + w["tp_nodes"] * (a.tp_nodes != b.tp_nodes)
    d += w["recompute"] * (a.recompute != b.recompute)
    d += w["precision"] * (a.precision != b.precision)
    d += w["dp_size"] * min(2.0, abs(a.log_dp - b.log_dp))
    d += w["moe"] * (a.moe != b.moe) + w["cp"] * (a.cp != b.cp)
    return d + w["size"] * min(1.5, abs(a.log_params - b.log_params))


@dataclass(frozen=True)
class EvidenceRun:
    source: str           # the shipped log (its file stem, fit and held-out rows alike)
    row: str              # the log file and row: "runs_selene.csv row 2"
    system: str
    regime: Regime
    predicted_s: float
    measured_s: float

    @property
    def log_ratio(self) -> float:
        """log(measured / predicted time): > 0 where the model was optimistic."""
        return math.log(self.measured_s / self.predicted_s)

    @property
    def error(self) -> float:
        """predicted / measured time - 1, as validate reports it."""
        return self.predicted_s / self.measured_s - 1.0


def source_of(log_stem: str) -> str:
    """A log's source: its fit and held-out files are one source."""
    stem = log_stem[5:] if log_stem.startswith("runs_") else log_stem
    return stem[:-4] if stem.endswith("_fit") else stem


def run_from_row(row: dict) -> EvidenceRun:
    regime = Regime(machine=row["machine"], stack=row["stack"], sharding=row["sharding"],
                    pipeline=row["pipeline"], dp_nodes=row["dp_nodes"] == "yes",
                    tp_nodes=row["tp_nodes"] == "yes", recompute=row["recompute"],
                    precision=row["precision"], log_params=float(row["log_params"]),
                    log_dp=float(row["log_dp"]), moe=row["moe"] == "yes", cp=row["cp"] == "yes")
    return EvidenceRun(source=row["source"], row=row["row"], system=row["system"],
                       regime=regime, predicted_s=float(row["predicted_s"]),
                       measured_s=float(row["measured_s"]))


def row_of(run: EvidenceRun) -> dict:
    reg = asdict(run.regime)
    reg.update({f: "yes" if reg[f] else "no" for f in ("dp_nodes", "tp_nodes", "moe", "cp")})
    reg.update(log_params=f"{reg['log_params']:.4f}", log_dp=f"{reg['log_dp']:.4f}")
    return {"source": run.source, "row": run.row, "system": run.system, **reg,
            "predicted_s": repr(run.predicted_s), "measured_s": repr(run.measured_s)}


@lru_cache(maxsize=1)
def shipped_evidence() -> tuple[EvidenceRun, ...]:
    """The shipped runs with their regimes and residuals (evidence.csv)."""
    path = resources.files("perfmodel.data") / "validation" / "evidence.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return tuple(run_from_row(r) for r in csv.DictReader(f))


@dataclass(frozen=True)
class Band:
    """An 80% interval of one prediction's time, and what it rests on."""

    predicted_s: float
    low_s: float          # 10th percentile
    median_s: float
    high_s: float         # 90th percentile
    evidence: int         # runs within NEAR
    evidence_error: float | None    # their mean |error| (validate's sign convention)
    sources: tuple[str, ...]
    parameters: tuple[tuple[str, float, float], ...]    # (key, log-ratio at low, at high)

    @property
    def width(self) -> float:
        """The band's width as a share of the prediction."""
        return (self.high_s - self.low_s) / self.predicted_s

    def value(self, objective: str) -> float:
        """The time the ``objective`` ranks by (OBJECTIVES)."""
        return {"p90": self.high_s, "median": self.median_s,
                "model": self.predicted_s}[objective]

    def contains(self, seconds: float) -> bool:
        return self.low_s <= seconds <= self.high_s

    def to_dict(self) -> dict:
        return {"iteration_s": self.predicted_s, "iteration_s_low": self.low_s,
                "iteration_s_median": self.median_s, "iteration_s_high": self.high_s,
                "width": self.width, "evidence_runs": self.evidence,
                "evidence_mean_abs_error": self.evidence_error,
                "evidence_sources": list(self.sources),
                "parameters": [{"key": k, "log_ratio_at_low": lo, "log_ratio_at_high": hi}
                               for k, lo, hi in self.parameters]}

    def describe(self) -> str:
        runs = (f"{self.evidence} measured run(s) in its regime ({', '.join(self.sources)}), "
                f"mean |error| {self.evidence_error:.0%}" if self.evidence >= MIN_EVIDENCE else
                f"no measured run in its regime ({self.evidence} near)")
        return (f"80% band {self.low_s / self.predicted_s - 1:+.0%} to "
                f"{self.high_s / self.predicted_s - 1:+.0%} of the prediction: {runs}")


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] \
        if len(values) > 1 else values[0]


@dataclass(frozen=True)
class RegimeEvidence:
    """What the runs near one regime say: how many, the model's bias there (their
    median log(measured / predicted)) and the widened spread around it."""

    runs: int
    centre: float
    below: float          # >= 0: how far the 10th percentile lies below the centre
    above: float          # >= 0: how far the 90th lies above it
    error: float | None   # their mean |error|
    sources: tuple[str, ...]


class EvidencePool:
    """Runs that may be evidence, with their regimes as arrays: ``distance`` to every
    run at once (a plan asks it of thousands of regimes)."""

    TEXT = ("machine", "stack", "sharding", "pipeline", "recompute", "precision")

    def __init__(self, runs):
        self.runs = tuple(runs)
        regimes = [r.regime for r in self.runs]
        # each text feature as codes: one code per value seen (-1: a value no run has)
        self._codes = {f: {v: i for i, v in enumerate(sorted({getattr(g, f) for g in regimes}))}
                       for f in self.TEXT}
        self._text = {f: np.array([self._codes[f][getattr(g, f)] for g in regimes], dtype=int)
                      for f in self.TEXT}
        self._piped = np.array([g.pipeline != "none" for g in regimes], dtype=bool)
        self._flags = {f: np.array([getattr(g, f) for g in regimes], dtype=bool)
                       for f in ("dp_nodes", "tp_nodes", "moe", "cp")}
        self._logs = {f: np.array([getattr(g, f) for g in regimes], dtype=float)
                      for f in ("log_params", "log_dp")}
        self._sources = np.array([r.source for r in self.runs], dtype=object)

    def distances(self, a: Regime, shape_only: bool = False) -> np.ndarray:
        """``distance(a, run.regime)`` for every run, in order; with ``shape_only``,
        the least distance of any regime that differs from ``a`` only in what varies
        with the layout of a shape (sharding, pipeline fill, recomputation)."""
        w, t = WEIGHTS, self._text
        code = {f: self._codes[f].get(getattr(a, f), -1) for f in self.TEXT}
        d = w["machine"] * (t["machine"] != code["machine"])
        d = d + w["stack"] * (t["stack"] != code["stack"])
        same_kind = self._piped == (a.pipeline != "none")
        if shape_only:
            d = d + np.where(same_kind, 0.0, w["pipeline"])
        else:
            d = d + w["sharding"] * (t["sharding"] != code["sharding"])
            d = d + np.where(same_kind, w["pipeline_fill"] * (t["pipeline"] != code["pipeline"]),
                             w["pipeline"])
            d = d + w["recompute"] * (t["recompute"] != code["recompute"])
        for flag in ("dp_nodes", "tp_nodes", "moe", "cp"):
            d = d + w[flag] * (self._flags[flag] != getattr(a, flag))
        d = d + w["precision"] * (t["precision"] != code["precision"])
        d = d + w["dp_size"] * np.minimum(2.0, np.abs(self._logs["log_dp"] - a.log_dp))
        return d + w["size"] * np.minimum(1.5, np.abs(self._logs["log_params"] - a.log_params))

    def near(self, regime: Regime, exclude_source: str | None = None) -> list[EvidenceRun]:
        """The runs within NEAR of ``regime`` (but those of ``exclude_source``)."""
        if not self.runs:
            return []
        keep = self.distances(regime) <= NEAR
        if exclude_source is not None:
            keep &= self._sources != exclude_source
        return [self.runs[i] for i in np.flatnonzero(keep)]


def regime_evidence(regime: Regime, pool, exclude_source: str | None = None) -> RegimeEvidence:
    """The runs of ``pool`` (an EvidencePool, or runs) within NEAR of ``regime`` (but
    those of ``exclude_source``)."""
    if not isinstance(pool, EvidencePool):
        pool = EvidencePool(pool)
    near = pool.near(regime, exclude_source)
    sources = tuple(sorted({r.source for r in near}))
    error = statistics.fmean(abs(r.error) for r in near) if near else None
    if len(near) < MIN_EVIDENCE:
        return RegimeEvidence(len(near), 0.0, -NO_EVIDENCE[0], NO_EVIDENCE[1], error, sources)
    ratios = [r.log_ratio for r in near]
    centre = statistics.median(ratios)
    widen = 1.0 + 1.0 / math.sqrt(len(near))
    return RegimeEvidence(len(near), centre, (centre - _quantile(ratios, 0.10)) * widen,
                          (_quantile(ratios, 0.90) - centre) * widen, error, sources)


def make_band(predicted_s: float, ev: RegimeEvidence, spread: Spread) -> Band:
    """The band of a prediction of ``predicted_s`` from its regime's evidence and the
    assumed values' spread."""
    low = ev.centre - max(FLOOR, math.hypot(ev.below, spread.fast))
    high = ev.centre + max(FLOOR, math.hypot(ev.above, spread.slow))
    return Band(predicted_s=predicted_s, low_s=predicted_s * math.exp(low),
                median_s=predicted_s * math.exp(ev.centre),
                high_s=predicted_s * math.exp(high), evidence=ev.runs,
                evidence_error=ev.error, sources=ev.sources, parameters=spread.effects)


@lru_cache(maxsize=1)
def _shipped_pool() -> EvidencePool:
    return EvidencePool(shipped_evidence())


def evidence_pool(system) -> EvidencePool:
    """Every run that may be evidence on ``system``: the shipped ones and its calibration's."""
    if not system.evidence:
        return _shipped_pool()
    return EvidencePool(shipped_evidence() + tuple(system.evidence))


def band_for(model, system, layout, predicted_s: float, *, exclude_source: str | None = None,
             runs: tuple[EvidenceRun, ...] | None = None, parameters: bool = True) -> Band:
    """The band of a prediction of ``predicted_s`` for ``layout`` (evidence from every
    shipped run within NEAR but those of ``exclude_source``). Without ``parameters``
    the assumed values' ranges are left out: a cheaper band no wider than the whole one
    (the planner's lower bound)."""
    pool = evidence_pool(system) if runs is None else runs
    ev = regime_evidence(regime_of(model, system, layout), pool, exclude_source)
    spread = parameter_spread(model, system, layout) if parameters else Spread(0.0, 0.0, ())
    return make_band(predicted_s, ev, spread)


def estimate_band(est, **kw) -> Band:
    """``band_for`` an estimate (perfmodel.estimator.Estimate)."""
    return band_for(est.model, est.system, est.layout, est.iteration_s, **kw)


class Ranker:
    """Ranks estimates by an objective (OBJECTIVES) on their bands, computing a whole
    band only where it can change the answer: candidates are taken in the order of
    their band without the assumed values' ranges (which only widens it), and stop
    once that lower bound passes the k-th best whole value found.

    The search screens layouts by the same objective (``screening_value``, on the
    contention-free estimate), so that the layouts it re-prices are the best by the
    objective, not by the model's own time. A ranker serves one model and system: its
    caches (each regime's evidence, each layout's spread) are keyed by regime and
    layout."""

    def __init__(self, objective: str):
        if objective not in OBJECTIVES:
            from fpcore.errors import SpecError
            raise SpecError("objective", f"must be one of {', '.join(OBJECTIVES)}; got "
                                         f"{str(objective)[:40]!r}")
        self.objective = objective
        self.bands: dict = {}            # layout -> Band (whole)
        self._cheap: dict = {}
        self._evidence: dict = {}        # regime -> RegimeEvidence
        self._spreads: dict = {}         # layout -> Spread
        self._ends = None                # the system at each end of each range
        self._pool = None
        self._shapes: dict = {}          # a shape's regimes, less what varies -> evidence

    def _runs(self, system) -> EvidencePool:
        if self._pool is None:
            self._pool = evidence_pool(system)
        return self._pool

    def _regime_evidence(self, est) -> RegimeEvidence:
        regime = regime_of(est.model, est.system, est.layout)
        if regime not in self._evidence:
            self._evidence[regime] = regime_evidence(regime, self._runs(est.system))
        return self._evidence[regime]

    def _spread(self, est, screening_s: float | None = None) -> Spread:
        if est.layout not in self._spreads:
            self._spreads[est.layout] = parameter_spread(est.model, est.system, est.layout,
                                                         self._end_systems(est.system),
                                                         screening_s)
        return self._spreads[est.layout]

    def band(self, est) -> Band:
        if est.layout not in self.bands:
            self.bands[est.layout] = make_band(est.iteration_s, self._regime_evidence(est),
                                               self._spread(est))
        return self.bands[est.layout]

    def _bound(self, est) -> float:
        if est.layout in self.bands:          # (a worker's whole band: the value itself)
            return self.value(est)
        if est.layout not in self._cheap:
            self._cheap[est.layout] = self.screening_floor(est)
        return self._cheap[est.layout]

    def value(self, est) -> float:
        return self.band(est).value(self.objective)

    def screening_value(self, est, limit: float = math.inf) -> float:
        """The objective on the band of ``est``, a contention-free estimate (its
        spread is kept for the layout's whole band later). Once the value is sure to
        reach ``limit`` (a shortlist's threshold), a lower bound that reaches it is
        returned instead: the ranges' ends are priced one at a time, those that slowed
        layouts most so far first, and each end priced only raises the slow side."""
        ev = self._regime_evidence(est)
        if self.objective != "p90" or est.layout in self._spreads:
            return make_band(est.iteration_s, ev, self._spread(est, est.iteration_s)
                             if self.objective == "p90" else Spread(0.0, 0.0, ())
                             ).value(self.objective)
        self._end_systems(est.system)
        ratios = [[0.0, 0.0] for _ in self._ends]
        order = sorted(range(len(self._slowed)), key=lambda j: -self._slowed[j])
        for done, j in enumerate(order, 1):
            k, side = divmod(j, 2)
            r = end_ratio(est.model, self._ends[k][1 + side], est.layout, est.iteration_s)
            ratios[k][side] = r
            self._slowed[j] += max(0.0, r)
            if done < len(order):
                slow = math.sqrt(sum(max(0.0, *pair) ** 2 for pair in ratios))
                bound = make_band(est.iteration_s, ev, Spread(slow, 0.0, ())).value("p90")
                if bound >= limit:
                    return bound
        spread = combined((key, lo, hi) for (key, _, _), (lo, hi) in zip(self._ends, ratios))
        self._spreads[est.layout] = spread
        return make_band(est.iteration_s, ev, spread).value("p90")

    def screening_floor(self, est) -> float:
        """``screening_value`` without the assumed values' ranges: never more."""
        return make_band(est.iteration_s, self._regime_evidence(est),
                         Spread(0.0, 0.0, ())).value(self.objective)

    def shape_evidence(self, model, system, tp: int, pp: int, dp: int,
                       precision: str, cp: int = 1) -> tuple[RegimeEvidence, ...]:
        """The evidence of each regime a layout of this shape can be in (distinct)."""
        pool = self._runs(system)
        # what a shape's regimes share (the rest varies with the layout), as the key
        key = _shape_regime(model, system, tp, pp, dp, precision, cp)("", str(pp > 1), "")
        if key not in self._shapes:
            regimes = shape_regimes(model, system, tp, pp, dp, precision, cp)
            if (pool.distances(regimes[0], shape_only=True) <= NEAR).sum() < MIN_EVIDENCE:
                regimes = regimes[:1]        # none has evidence: all alike
            self._shapes[key] = tuple({regime_evidence(r, pool) for r in regimes})
        return self._shapes[key]

    def least_value(self, system, bound_at, evidence, limit: float = math.inf) -> float:
        """A value below which no layout goes whose regime's evidence is one of
        ``evidence`` and whose time on a system ``s`` is at least ``bound_at(s)``, on
        ``system`` and at each end of each range (priced only while the value stays
        below ``limit``: a time at an end only raises the slow side's bound).

        The slow side of the band is at least one end's log(time there / time), and
        t exp(max(FLOOR, hypot(above, log(t_end / t)))) grows with t and t_end: so the
        bounds on both give a bound on the value."""
        t = bound_at(system)
        if self.objective == "model":
            return t
        if self.objective == "median":
            return min(t * math.exp(ev.centre) for ev in evidence)

        def value(slow: float) -> float:
            return min(t * math.exp(ev.centre + max(FLOOR, math.hypot(ev.above, slow)))
                       for ev in evidence)
        least, slow = value(0.0), 0.0
        if least >= limit or not self._end_systems(system):
            return least
        for j in sorted(range(len(self._slowed)), key=lambda j: -self._slowed[j]):
            k, side = divmod(j, 2)
            slow = max(slow, math.log(bound_at(self._ends[k][1 + side]) / t))
            least = value(slow)
            if least >= limit:
                break
        return least

    def _end_systems(self, system) -> tuple:
        if self._ends is None:
            self._ends = range_ends(system)
            self._slowed = [0.0] * (2 * len(self._ends))
        return self._ends

    def best(self, estimates: list, k: int) -> list:
        """The ``k`` best of ``estimates`` by the objective (ties: fewer nodes)."""
        if self.objective == "model":
            return sorted(estimates, key=lambda e: (e.iteration_s, e.nodes))[:k]
        chosen: list = []
        for est in sorted(estimates, key=lambda e: (self._bound(e), e.nodes)):
            if len(chosen) >= k and self._bound(est) > chosen[k - 1][0]:
                break
            chosen.append((self.value(est), est.nodes, id(est), est))
            chosen.sort(key=lambda c: c[:2])
        return [c[3] for c in chosen[:k]]
