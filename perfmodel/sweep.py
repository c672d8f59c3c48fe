"""Co-design sweeps: which machine trains which models how fast, at what cost and power.

A sweep file (TOML) names a base system, the hardware values to vary, the models
and the constraints::

    [sweep]
    system = "fugaku"               # a preset or a system TOML file (relative to this file)
    nodes = 13824                   # the job's node budget where [vary] does not set it
    job_share = 0.5                 # jobs searched: from this share of the budget to all of it
    design = "grid"                 # every combination; "one-at-a-time": each value alone
    objective = "model"             # what a point's best layout is chosen by (plan --objective)
    network = "analytic"            # or "system": the shortlist re-priced by the preset's model

    [vary]                          # values, or {from, to, steps, scale = "linear"|"log"}
    fp16_tflops = [13.5, 27, 54]
    memory_gib = { from = 32, to = 128, steps = 3, scale = "log" }
    nodes = [6912, 13824, 27648]

    [[models]]
    params = 13e9                   # or preset = "fugaku-llm-13b"
    tokens = 380e9                  # default 20 per parameter
    precision = ["fp32", "fp16"]    # the fastest of these the node supports

    [cost]                          # the run's cost; every value here an assumption
    node_hour_price = 1.0           # a base node-hour (default 1: cost in base node-hours)
    shares = { compute = 0.4, memory = 0.2 }   # parts of the node price that scale
    energy_price_per_mwh = 0.0

    [constraints]                   # a point meets them or says which it misses
    days = 30
    mw = 40
    cost = 2e7

Each hardware point is the base system with the point's values written into its
table, each with a ``[sweep]`` source, so the planner's every input still says where
it comes from. Per point and model the planner's own search runs (perfmodel.search):
by default its analytic tier alone, the contention-free screening with its bounds
(``network = "analytic"``, thousands of layouts a second); with ``network =
"system"`` the shortlist is re-priced by the system's own network model (the
flow-level torus), whose priced patterns every point on the same network reuses
(perfmodel.estimator.network_for keys its models by what they read). The layouts
are ranked by the model's own time by default (``objective``; ``p90`` ranks by the
slow end of each layout's band, as plan does, at about three times the cost), and
the record keeps the best layout's time to train with its 80% band, energy, power,
cost, MFU and layout. The records are plain JSON-able
dicts; perfmodel.sweep_run runs and stores them.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Callable

from fpcore.errors import (SpecError, check_bool, check_choice, check_float, check_int,
                           check_keys, check_list, check_str, check_table, require)

from .model import ModelSpec
from .precisions import PRECISIONS

SCHEMA = 1
MAX_POINTS = 1_000_000
MAX_VALUES = 10_000        # values of one knob
MAX_MODELS = 64
DESIGNS = ("grid", "one-at-a-time")
OBJECTIVES = ("p90", "median", "model")
NETWORKS = ("analytic", "system")
DEFAULT_BUDGET = 13824     # Fugaku-LLM's job (perfmodel.plan.DEFAULT_MAX_NODES)
DAY = 86400.0
JOB_SHARE = 0.5            # the smallest job searched, as a share of the node budget


# --- hardware knobs ----------------------------------------------------------------


@dataclass(frozen=True)
class Knob:
    """One hardware value a sweep can vary: its unit, the node-price part it scales
    (``Cost.shares``), how to read it off a system and how to write it into a copy of
    the system's TOML table."""

    name: str
    unit: str
    what: str
    part: str | None                              # price part it scales, or None
    integer: bool
    read: Callable                                # system -> value
    write: Callable                               # (table, value, base system, source) -> None


def _set(table: dict, part: str, key: str, value, source: str) -> None:
    table[part][key] = {"value": value, "source": source}


def _write_peak(precision: str):
    def write(table, value, base, source):
        node = base.node
        written = table["node"].get("flops_per_cycle_per_core")
        # another precision's knob may have written the table already: keep its rate
        rates = (dict(written["value"]) if isinstance(written, dict) and "source" in written
                 and str(written["source"]).startswith("[sweep]")
                 else dict(node.flops_per_cycle_per_core))
        eco = 0.5 if node.eco_mode else 1.0
        rates[precision] = value * 1e12 / (node.cores * node.clock_hz * eco)
        note = (f"{source}: {value:g} TFLOP/s per node at {precision} over {node.cores} cores "
                f"at {node.clock_hz / 1e9:g} GHz")
        old = written.get("source", "") if isinstance(written, dict) else ""
        _set(table, "node", "flops_per_cycle_per_core", rates,
             (old + "; " if str(old).startswith("[sweep]") else "") + note)
    return write


def _read_peak(precision: str):
    return lambda s: (s.node.peak_flops(precision) / 1e12 if s.node.supports(precision)
                      else 0.0)


def _scale(table, keys: tuple, base, ratio: float, source: str, knob: str) -> None:
    """Write the keys that follow a knob (a STREAM rate follows the peak bandwidth) at
    their preset values times ``ratio``."""
    values = base.toml_values()
    for key in keys:
        if f"node.{key}" in values:
            _set(table, "node", key, values[f"node.{key}"] * ratio,
                 f"{source}: the preset's value x {ratio:.4g}, as {knob} moved")


def _write_memory(table, value, base, source):
    ratio = value * 2**30 / base.node.memory_bytes
    _set(table, "node", "memory_gib", value, source)
    _scale(table, ("usable_memory_gb",), base, ratio, source, "memory_gib")


def _write_bandwidth(table, value, base, source):
    ratio = value * 1e9 / base.node.memory_bandwidth
    _set(table, "node", "memory_bandwidth_gbs", value, source)
    _scale(table, ("stream_bandwidth_gbs", "stream_bandwidth_per_domain_gbs", "reduce_bandwidth_gbs"),
           base, ratio, source + " [A] sustained rates scale with the peak",
           "memory_bandwidth_gbs")


def _write_network(key: str):
    def write(table, value, base, source):
        _set(table, "network", key, value, source)
    return write


def _write_torus(table, value, base, source):
    _set(table, "network", "shape", list(value), source)


def _write_power(table, value, base, source):
    _set(table, "node", "power_w", value, source)


def _write_nodes(table, value, base, source):
    """A job budget past the machine grows it: a torus along its first axis, a fat tree
    to the budget."""
    shape = list(_shape_of(table, base))
    if math.prod(shape) >= value:
        return
    rest = math.prod(shape[1:])
    shape[0] = -(-value // rest)
    _set(table, "network", "shape", shape,
         f"[A] {source}: the machine grown along {base.network.axes[0]} to hold the job")


def _shape_of(table, base) -> tuple:
    raw = table["network"].get("shape")
    if isinstance(raw, dict):
        raw = raw.get("value")
    return tuple(raw) if raw is not None else base.network.shape


def _parse_torus(where: str, value) -> tuple[int, ...]:
    if isinstance(value, str):
        parts = value.lower().split("x")
        if not all(p.strip().isdigit() for p in parts):
            raise SpecError(where, f"must be a shape such as \"24x23x24x2x3x2\"; got {value!r}")
        value = [int(p) for p in parts]
    value = check_list(where, value, min_len=1, max_len=16)
    return tuple(check_int(f"{where}[{i}]", v, hi=1_000_000) for i, v in enumerate(value))


KNOBS: dict[str, Knob] = {}


# The most a knob's value or a price may be (past them a point's cost or power is no
# number a record can hold): the prices as plan's (perfmodel.plan.MAX_PRICE).
MAX_KNOB = 1e12
MAX_PRICE = 1e9


def _knob(*args) -> None:
    k = Knob(*args)
    KNOBS[k.name] = k


for _p in PRECISIONS:
    _knob(f"{_p}_tflops", "TFLOP/s", f"peak {_p} of one node", "compute", False,
          _read_peak(_p), _write_peak(_p))
_knob("memory_gib", "GiB", "memory of one node (the usable share scales with it)", "memory",
      False, lambda s: s.node.memory_bytes / 2**30, _write_memory)
_knob("memory_bandwidth_gbs", "GB/s", "memory bandwidth of one node (STREAM and the MPI "
      "reduction rate scale with it)", "memory_bandwidth", False,
      lambda s: s.node.memory_bandwidth / 1e9, _write_bandwidth)
_knob("link_bandwidth_gbs", "GB/s", "one network link, one direction", "network", False,
      lambda s: s.network.link_bandwidth / 1e9, _write_network("link_bandwidth_gbs"))
_knob("injection_bandwidth_gbs", "GB/s", "a node's injection into the network", "network",
      False, lambda s: s.network.injection_bandwidth / 1e9,
      _write_network("injection_bandwidth_gbs"))
_knob("torus", "", "the machine's torus shape (as many axes as the preset's)", None, False,
      lambda s: "x".join(map(str, s.network.shape)), _write_torus)
_knob("power_w", "W", "power of one node", None, False, lambda s: s.node.power_w, _write_power)
_knob("nodes", "nodes", "the job's node budget (the best layout on at most this many)", None,
      True, None, _write_nodes)
_knob("price_per_node_hour", "per node-hour", "the price of a node-hour ([cost] "
      "node_hour_price where not varied), before the price factor", None, False, None, None)
NOT_SYSTEM = ("nodes", "price_per_node_hour")       # knobs the system does not hold

PARTS = ("compute", "memory", "memory_bandwidth", "network")


# --- the sweep file ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRun:
    """One model a sweep plans at every point."""

    label: str
    model: ModelSpec
    tokens: float
    global_batch: int
    precisions: tuple[str, ...]
    pins: tuple[tuple[str, object], ...] = ()       # layout pins, as plan's options


@dataclass(frozen=True)
class Cost:
    """The run's cost: node-hours x the node-hour price x the point's price factor, plus
    energy x its price. The factor is 1 + sum(share x (value / base - 1)) over the price
    parts a point changes (a part's ratio: the largest of its knobs')."""

    node_hour_price: float = 1.0
    currency: str = "base node-hours"
    shares: tuple[tuple[str, float], ...] = ()
    energy_price_per_mwh: float = 0.0
    source: str = "[A] no price given: cost counts node-hours of the base node"


@dataclass(frozen=True)
class Constraints:
    days: float | None = None
    mw: float | None = None
    cost: float | None = None


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: the base system's table, the knobs and their values, the
    models, the cost model and the constraints."""

    path: str
    title: str
    system_name: str
    system_table: dict = field(compare=False, repr=False)
    system_where: str = ""
    stack: str | None = None
    budget: int = DEFAULT_BUDGET
    job_share: float = JOB_SHARE
    design: str = "grid"
    objective: str = "model"
    network: str = "analytic"
    confirm: int | None = None
    knobs: tuple[tuple[str, tuple], ...] = ()     # (name, values) in file order
    models: tuple[ModelRun, ...] = ()
    cost: Cost = Cost()
    constraints: Constraints = Constraints()
    digest: str = ""

    @property
    def points(self) -> int:
        if self.design == "grid":
            return math.prod(len(v) for _, v in self.knobs)
        return 1 + sum(len([x for x in v if x != self.base_values()[k]])
                       for k, v in self.knobs)

    def base_system(self):
        return _base_system(self)

    def base_values(self) -> dict:
        """Each knob's value on the base system (nodes: the sweep's budget)."""
        base = self.base_system()
        given = {"nodes": self.budget, "price_per_node_hour": self.cost.node_hour_price}
        return {k: given[k] if k in given else rounded(KNOBS[k].read(base))
                for k, _ in self.knobs}

    def point(self, index: int) -> dict:
        """The knob values of point ``index`` (grid: mixed radix over the knobs in file
        order, the last fastest; one-at-a-time: the base first, then each knob's other
        values in turn)."""
        check_int("point", index, lo=0, hi=self.points - 1)
        if self.design == "grid":
            values = {}
            for name, options in reversed(self.knobs):
                index, j = divmod(index, len(options))
                values[name] = options[j]
            return {name: values[name] for name, _ in self.knobs}
        base = self.base_values()
        if index == 0:
            return dict(base)
        index -= 1
        for name, options in self.knobs:
            others = [x for x in options if x != base[name]]
            if index < len(others):
                return {**base, name: others[index]}
            index -= len(others)
        raise AssertionError("unreachable: the index was checked against points")

    def header(self) -> dict:
        """What a results file records of the sweep that wrote it (a resume checks it)."""
        return {"sweep": self.title, "schema": SCHEMA, "digest": self.digest,
                "system": self.system_name, "design": self.design, "points": self.points,
                "knobs": [[k, list(v)] for k, v in self.knobs],
                "models": [m.label for m in self.models], "objective": self.objective}


_BASES: dict = {}


def _base_system(sweep: Sweep):
    key = (sweep.digest, "base")
    if key not in _BASES:
        from .system import system_from_table
        _BASES[key] = system_from_table(sweep.system_name, sweep.system_table,
                                        sweep.system_where, stack=sweep.stack)
    return _BASES[key]


def rounded(x):
    return float(f"{x:.6g}") if isinstance(x, float) else x


def _values(where: str, raw, knob: Knob) -> tuple:
    if isinstance(raw, dict):
        check_keys(where, raw, ("from", "to", "steps", "scale"))
        require(where, raw, ("from", "to", "steps"))
        lo = check_float(f"{where}.from", raw["from"])
        hi = check_float(f"{where}.to", raw["to"])
        steps = check_int(f"{where}.steps", raw["steps"], hi=MAX_VALUES)
        scale = check_choice(f"{where}.scale", raw.get("scale", "linear"), ("linear", "log"))
        if steps == 1:
            out = [lo]
        elif scale == "log":
            out = [lo * (hi / lo) ** (i / (steps - 1)) for i in range(steps)]
        else:
            out = [lo + (hi - lo) * i / (steps - 1) for i in range(steps)]
        out = [round(x) if knob.integer else rounded(x) for x in out]
    else:
        out = check_list(where, raw, min_len=1, max_len=MAX_VALUES)
    values = []
    for i, v in enumerate(out):
        here = f"{where}[{i}]"
        if knob.name == "torus":
            v = "x".join(map(str, _parse_torus(here, v)))
        elif knob.integer:
            v = check_int(here, v, hi=10_000_000)
        else:
            v = rounded(check_float(here, v, hi=MAX_KNOB))
        values.append(v)
    if len(set(values)) != len(values):
        raise SpecError(where, "lists a value twice (each point would be run twice)")
    return tuple(values)


def _models(where: str, raw, base_dir: str) -> tuple[ModelRun, ...]:
    from .plan import TOKENS_PER_PARAM, default_global_batch
    from .presets import load_model
    from .sizing import DEFAULT_SEQ, model_for_params
    raw = check_list(where, raw, min_len=1, max_len=MAX_MODELS)
    out = []
    for i, entry in enumerate(raw):
        here = f"{where}[{i}]"
        check_keys(here, entry, ("params", "preset", "seq", "label", "tokens", "global_batch",
                                 "precision", "pins"))
        if ("params" in entry) == ("preset" in entry):
            raise SpecError(here, "give one of params (a size: 13e9) or preset (a model "
                                  "preset or TOML file)")
        try:
            if "params" in entry:
                seq = check_int(f"{here}.seq", entry.get("seq", DEFAULT_SEQ), hi=10_000_000)
                model = model_for_params(check_float(f"{here}.params", entry["params"]),
                                         seq=seq)
            else:
                name = check_str(f"{here}.preset", entry["preset"], max_len=1000)
                path = os.path.join(base_dir, name)
                model = load_model(path if name.endswith((".toml", ".json"))
                                   and os.path.exists(path) else name,
                                   seq=entry.get("seq"))
        except SpecError as e:
            raise e.within(here) from None
        label = check_str(f"{here}.label", entry.get("label", model.name), max_len=100)
        tokens = check_float(f"{here}.tokens",
                             entry.get("tokens", TOKENS_PER_PARAM * model.params))
        gb = check_int(f"{here}.global_batch", entry.get("global_batch",
                                                         default_global_batch(model)),
                       hi=100_000_000)
        prec = entry.get("precision", ["fp32"])
        prec = [prec] if isinstance(prec, str) else check_list(f"{here}.precision", prec,
                                                               min_len=1, max_len=8)
        precisions = tuple(check_choice(f"{here}.precision", p, PRECISIONS) for p in prec)
        pins = _pins(f"{here}.pins", entry.get("pins", {}))
        out.append(ModelRun(label, model, tokens, gb, precisions, tuple(sorted(pins.items()))))
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise SpecError(where, "two models have the same label; give each a label")
    return tuple(out)


def _pins(where: str, raw) -> dict:
    """A model's layout pins (as plan's options: tp, pp, schedule, ...), each of its
    field's type; whether a layout can take them is checked on the base system."""
    import dataclasses as dc
    from .layout import PINNABLE, Layout
    raw = check_table(where, raw)
    allowed = [p for p in PINNABLE if p != "precision"]
    check_keys(where, raw, allowed)
    types = {f.name: f.type for f in dc.fields(Layout)}
    out = {}
    for key, value in raw.items():
        here, kind = f"{where}.{key}", types[key]
        if kind.startswith("int"):
            out[key] = check_int(here, value, lo=0 if key in ("zero", "shard_ranks") else 1,
                                 hi=10_000_000)
        elif kind == "float":
            out[key] = check_float(here, value)
        elif kind == "bool":
            out[key] = check_bool(here, value)
        else:
            out[key] = check_str(here, value, max_len=100)
    return out


def _cost(where: str, raw) -> Cost:
    if raw is None:
        return Cost()
    check_keys(where, raw, ("node_hour_price", "currency", "shares", "energy_price_per_mwh",
                            "source"))
    shares = check_table(f"{where}.shares", raw.get("shares", {}))
    check_keys(f"{where}.shares", shares, PARTS)
    shares = {k: check_float(f"{where}.shares.{k}", v, hi=1.0, lo_open=False)
              for k, v in shares.items()}
    if sum(shares.values()) > 1 + 1e-9:
        raise SpecError(f"{where}.shares", f"must add up to at most 1 (the rest of the node "
                                           f"price does not scale); got {sum(shares.values()):g}")
    return Cost(node_hour_price=check_float(f"{where}.node_hour_price",
                                            raw.get("node_hour_price", 1.0), hi=MAX_PRICE),
                currency=check_str(f"{where}.currency", raw.get("currency", "base node-hours"),
                                   max_len=40),
                shares=tuple(sorted(shares.items())),
                energy_price_per_mwh=check_float(f"{where}.energy_price_per_mwh",
                                                 raw.get("energy_price_per_mwh", 0.0),
                                                 lo_open=False, hi=MAX_PRICE),
                source=check_str(f"{where}.source", raw.get("source", "[A] the sweep file's "
                                                                      "prices")))


def _constraints(where: str, raw) -> Constraints:
    if raw is None:
        return Constraints()
    check_keys(where, raw, ("days", "mw", "cost"))
    return Constraints(**{k: check_float(f"{where}.{k}", v) for k, v in raw.items()})


def read_sweep(path: str | os.PathLike, field_name: str = "sweep file") -> Sweep:
    """Parse and check a sweep file: every knob value is tried on the base system, so a
    value the system cannot take is refused here, before any point runs."""
    from fpcore.readers import parse_toml, read_text
    from .presets import system_table
    shipped = shipped_sweeps()
    if str(path) in shipped and not os.path.exists(path):
        path = shipped[str(path)]
    text = read_text(path, field_name, max_bytes=4 * 2**20)
    where = str(path)
    data = parse_toml(text, where)
    try:
        check_keys("", data, ("sweep", "vary", "models", "cost", "constraints"))
        require("", data, ("sweep", "vary", "models"))
        head = data["sweep"]
        check_keys("sweep", head, ("title", "system", "stack", "nodes", "job_share", "design",
                                   "objective", "network", "confirm"))
        require("sweep", head, ("system",))
        base_dir = os.path.dirname(os.path.abspath(path))
        name = check_str("sweep.system", head["system"], max_len=1000)
        local = os.path.join(base_dir, name)
        try:
            sys_name, table, sys_where = system_table(local if name.endswith(".toml")
                                                      and os.path.exists(local) else name)
        except SpecError as e:
            raise e.within("sweep.system") from None
        vary = check_table("vary", data["vary"])
        if not vary:
            raise SpecError("vary", "names no knob; knobs: " + ", ".join(KNOBS))
        check_keys("vary", vary, KNOBS)
        knobs = tuple((k, _values(f"vary.{k}", v, KNOBS[k])) for k, v in vary.items())
        sweep = Sweep(
            path=where, title=check_str("sweep.title", head.get("title", os.path.basename(where)),
                                        max_len=200),
            system_name=sys_name, system_table=table, system_where=sys_where,
            stack=None if head.get("stack") is None else check_str("sweep.stack", head["stack"],
                                                                    max_len=200),
            budget=check_int("sweep.nodes", head.get("nodes", DEFAULT_BUDGET), hi=10_000_000),
            job_share=check_float("sweep.job_share", head.get("job_share", JOB_SHARE), hi=1.0),
            design=check_choice("sweep.design", head.get("design", "grid"), DESIGNS),
            objective=check_choice("sweep.objective", head.get("objective", "model"),
                                   OBJECTIVES),
            network=check_choice("sweep.network", head.get("network", "analytic"), NETWORKS),
            confirm=None if head.get("confirm") is None else check_int(
                "sweep.confirm", head["confirm"], hi=1000),
            knobs=knobs, models=_models("models", data["models"], base_dir),
            cost=_cost("cost", data.get("cost")),
            constraints=_constraints("constraints", data.get("constraints")),
            digest=hashlib.sha256(text.encode()).hexdigest()[:16])
        base = sweep.base_system()          # the stack and table load
        if sweep.points > MAX_POINTS:
            raise SpecError("vary", f"gives {sweep.points:,} points; at most {MAX_POINTS:,}")
        for k, values in knobs:             # each value alone on the base system
            for i, v in enumerate(values):
                try:
                    point_system(sweep, {k: v})
                except SpecError as e:
                    raise SpecError(f"vary.{k}[{i}]", f"{v} cannot be built on {sys_name}: "
                                                      f"{e}") from None
        if "nodes" not in vary:
            base.check_nodes(min(sweep.budget, base.network.nodes), "sweep.nodes")
        if sweep.constraints.mw is not None and not base.node.power_w and "power_w" not in vary:
            raise SpecError("constraints.mw", f"needs a node's power, which {base.name} does "
                                              f"not give (node.power_w is 0): vary power_w")
        from .search import check_pins
        for i, run in enumerate(sweep.models):
            try:
                check_pins(run.model, base, run.global_batch, dict(run.pins))
            except SpecError as e:
                raise e.within(f"models[{i}].pins") from None
    except SpecError as e:
        raise e.within(where) from None
    return sweep


def shipped_sweeps() -> dict[str, str]:
    """The sweep files that ship with the product (perfmodel/data/sweeps): name -> path."""
    from importlib import resources
    folder = resources.files("perfmodel.data") / "sweeps"
    return {e.name[:-5]: str(e) for e in sorted(folder.iterdir(), key=lambda e: e.name)
            if e.name.endswith(".toml")}


# --- one point -----------------------------------------------------------------------

_SYSTEMS: dict = {}


def point_system(sweep: Sweep, values: dict):
    """The base system with ``values`` (knob -> value) written into its table."""
    key = (sweep.digest, sweep.network, sweep.stack,
           tuple(sorted((k, v) for k, v in values.items() if k not in NOT_SYSTEM)),
           values.get("nodes"))
    if key in _SYSTEMS:
        return _SYSTEMS[key]
    from .system import system_from_table
    base = sweep.base_system()
    table = copy.deepcopy(sweep.system_table)
    where = os.path.basename(sweep.path)
    for name, value in values.items():
        knob = KNOBS[name]
        if name == "torus":
            value = _parse_torus("torus", value)
            if len(value) != len(base.network.shape):
                raise SpecError("torus", f"has {len(value)} axes; {base.name}'s network has "
                                         f"{len(base.network.shape)}")
        if name not in NOT_SYSTEM:
            knob.write(table, value, base, f"[sweep] {name} = {value} ({where})")
    if "nodes" in values and "torus" not in values:     # (a torus given is the machine)
        _write_nodes(table, values["nodes"], base, f"[sweep] nodes = {values['nodes']} ({where})")
    system = system_from_table(sweep.system_name, table, sweep.system_where, stack=sweep.stack)
    if sweep.network == "analytic":
        system = system.with_options(network_model="analytic")
    if len(_SYSTEMS) > 4096:
        _SYSTEMS.clear()
    _SYSTEMS[key] = system
    return system


def price_factor(sweep: Sweep, values: dict) -> float:
    """The node price at this point over the base node's (Cost's share model)."""
    base = sweep.base_values()
    ratios: dict[str, float] = {}
    for name, value in values.items():
        knob = KNOBS[name]
        if knob.part is None or not isinstance(value, (int, float)):
            continue
        b = base.get(name) or 0.0
        r = value / b if b > 0 else 1.0
        ratios[knob.part] = max(ratios.get(knob.part, r), r)
    return 1.0 + sum(share * (ratios.get(part, 1.0) - 1.0) for part, share in sweep.cost.shares)


def evaluate(sweep: Sweep, index: int, seeds: dict | None = None, stats=None) -> dict:
    """One hardware point: the best layout of every model (a JSON-able record).

    ``seeds`` ({(model label, precision): Layout}, updated here) carries the answers of
    the point before to this one, as the search's first candidates (perfmodel.search.
    screen): a neighbouring point's best layout is a near answer, so the bounds skip
    most layouts at once. ``stats`` (a perfmodel.search.SearchStats) adds up the
    searches' counts, for benchmarks."""
    values = sweep.point(index)
    record = {"point": index, "hardware": values}
    try:
        system = point_system(sweep, values)
    except SpecError as e:
        record["error"] = f"the point's system cannot be built: {e}"
        return record
    factor = price_factor(sweep, values)
    record["price_factor"] = rounded(factor)
    budget = min(values.get("nodes", sweep.budget), system.network.nodes)
    seeds = {} if seeds is None else seeds
    price = values.get("price_per_node_hour", sweep.cost.node_hour_price)
    record["models"] = [_plan_one(sweep, system, run, budget, factor * price, seeds, stats)
                        for run in sweep.models]
    return record


def _plan_one(sweep: Sweep, system, run: ModelRun, budget: int, hour_price: float,
              seeds: dict, counts=None) -> dict:
    """One model's best layout at one point (``hour_price``: a node-hour's price there)."""
    from .evidence import Ranker
    from .search import SearchStats, confirm, screen
    out: dict = {"model": run.label}
    supported = [p for p in run.precisions if system.node.supports(p)]
    if not supported:
        out["error"] = (f"the node supports none of {', '.join(run.precisions)} "
                        f"(it has {', '.join(p for p, _ in system.node.flops_per_cycle_per_core)})")
        return out
    best, best_value, ranker, last = None, math.inf, None, None
    for precision in supported:
        r = Ranker(sweep.objective)
        pins = {**dict(run.pins), "precision": precision}
        stats = SearchStats()
        try:
            seed = seeds.get((run.label, precision))
            found, stats = screen(run.model, system, run.global_batch, max_nodes=budget,
                                  min_nodes=max(1, math.ceil(sweep.job_share * budget)),
                                  pins=pins, top=1, shapes=sweep.confirm, ranker=r,
                                  seeds=() if seed is None else (seed,))
        except SpecError as e:
            last = str(e)
            continue
        priced = r.best(confirm(run.model, system, found, stats), 1)
        if counts is not None:
            counts.add(stats)
        if not priced:
            from .plan import no_layout_within
            last = str(no_layout_within(run.model, system, run.global_batch, pins, budget,
                                        stats))
            continue
        seeds[run.label, precision] = priced[0].layout
        value = r.band(priced[0]).value(sweep.objective)
        if value < best_value:
            best, best_value, ranker = priced[0], value, r
    if best is None:
        out["error"] = last or "no fitting layout"
        return out
    band = ranker.band(best)
    days = best.time_to_train_s(run.tokens) / DAY
    node_hours = best.node_hours(run.tokens)
    energy = best.energy_mwh(run.tokens)
    cost = node_hours * hour_price
    if energy is not None:
        cost += energy * sweep.cost.energy_price_per_mwh
    power = best.nodes * system.node.power_w / 1e6
    ranked_days = band.value(sweep.objective) / band.predicted_s * days
    out.update({
        "precision": best.layout.precision, "nodes": best.nodes, "layout": best.layout.label(),
        "iteration_s": rounded(best.iteration_s), "days": rounded(days),
        "days_low": rounded(band.low_s / band.predicted_s * days),
        "days_high": rounded(band.high_s / band.predicted_s * days),
        "ranked_days": rounded(ranked_days), "evidence": band.evidence,
        "mfu": rounded(best.mfu), "tokens_per_s": rounded(best.tokens_per_s),
        "node_hours": rounded(node_hours),
        "energy_mwh": None if energy is None else rounded(energy),
        "power_mw": rounded(power), "cost": rounded(cost),
        "memory_gb": rounded(best.memory_bytes_per_node / 1e9)})
    c = sweep.constraints
    misses = []
    if c.days is not None and ranked_days > c.days:
        misses.append(f"days {ranked_days:.3g} > {c.days:g}")
    if c.mw is not None and power > c.mw:
        misses.append(f"MW {power:.3g} > {c.mw:g}")
    if c.cost is not None and cost > c.cost:
        misses.append(f"cost {cost:.4g} > {c.cost:g}")
    out["meets"] = not misses
    if misses:
        out["misses"] = misses
    return out
