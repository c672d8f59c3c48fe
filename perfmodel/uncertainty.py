"""The declared uncertainty of a system's assumed values, and what it does to a prediction.

A preset may give an assumed value (tagged [A], or a stack that is an upper bound until
calibrated) a range in its ``[NAME.uncertainty]`` table, each with its source or reason::

    [fugaku.uncertainty]
    "node.gemm_efficiency" = { low = 0.70, high = 0.948, source = "..." }

Keys name a value as the file does: ``node.KEY``, ``network.KEY`` or
``stacks.STACK.KEY`` (which applies only while that stack is in use), in the file's
units. The range is read as the 10th to 90th percentile of what the value may be.

``parameter_spread`` prices a layout at each end of each range with the contention-free
network model (the same for every variant, so the ratios carry the parameter's effect,
not the network model's; so only values that model prices can be given a range: a
collective step's latency, not the flow model's per-put or per-hop ones) and combines
the log-ratios in quadrature, separately for the slow and the fast side: one parameter's
80% range is taken as the whole 80% range of the time it causes, and independent
parameters add as variances.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fpcore.errors import SpecError, check_float, check_str

GB = 1e9

# What a range may be given for: the file's key -> (part, field, scale to SI).
UNCERTAIN_KEYS = {
    "node.gemm_efficiency": ("node", "gemm_efficiency", 1.0),
    "node.gemm_half_size": ("node", "gemm_half_size", 1.0),
    "node.reduce_bandwidth_gbs": ("node", "reduce_bandwidth", GB),
    "node.stream_bandwidth_gbs": ("node", "stream_bandwidth", GB),
    "node.stream_bandwidth_per_domain_gbs": ("node", "stream_bandwidth_per_domain", GB),
    "network.link_efficiency": ("network", "link_efficiency", 1.0),
    "network.injection_efficiency": ("network", "injection_efficiency", 1.0),
    "network.latency_us": ("network", "latency_s", 1e-6),
    "stack.kernel_bytes_per_cycle": ("stack", "kernel_bytes_per_cycle", 1.0),
    "stack.collective_efficiency": ("stack", "collective_efficiency", 1.0),
    "stack.gemm_efficiency": ("stack", "gemm_efficiency", 1.0),
    "stack.attention_efficiency": ("stack", "attention_efficiency", 1.0),
}


@dataclass(frozen=True)
class UncertainParam:
    key: str           # as the file names it: node.gemm_efficiency, stacks.NAME.KEY
    low: float         # in the file's units
    high: float
    source: str

    @property
    def stack(self) -> str | None:
        """The stack the range applies to (None: every stack)."""
        return self.key.split(".")[1] if self.key.startswith("stacks.") else None

    @property
    def generic_key(self) -> str:
        """The key in UNCERTAIN_KEYS (``stacks.NAME.KEY`` -> ``stack.KEY``)."""
        return f"stack.{self.key.split('.', 2)[2]}" if self.stack else self.key


def read_uncertainty(where: str, raw) -> tuple[UncertainParam, ...]:
    """The ``[NAME.uncertainty]`` table, every entry checked."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise SpecError(where, "must be a table of \"KEY\" = { low, high, source }")
    out = []
    for key, body in raw.items():
        here = f"{where}.{key}"
        generic = f"stack.{key.split('.', 2)[2]}" if key.startswith("stacks.") and \
            key.count(".") >= 2 else key
        if generic not in UNCERTAIN_KEYS:
            raise SpecError(here, f"is not a value a range can be given for; allowed: "
                                  f"{', '.join(UNCERTAIN_KEYS)} (stack keys as "
                                  f"stacks.NAME.KEY)")
        if not isinstance(body, dict) or set(body) != {"low", "high", "source"}:
            raise SpecError(here, "must be { low = ..., high = ..., source = \"...\" }")
        low = check_float(f"{here}.low", body["low"], lo=0.0, lo_open=False)
        high = check_float(f"{here}.high", body["high"], lo=0.0, lo_open=False)
        if not low < high:
            raise SpecError(here, f"low ({low:g}) must be below high ({high:g})")
        out.append(UncertainParam(key, low, high,
                                  check_str(f"{here}.source", body["source"], max_len=2000)))
    return tuple(out)


def applicable(system) -> tuple[UncertainParam, ...]:
    """The ranges that apply to ``system`` as it is (its stack's, and every stack's)."""
    return tuple(u for u in system.uncertain if u.stack in (None, system.stack.name))


def varied(system, param: UncertainParam, value: float):
    """``system`` with ``param`` set to ``value`` (in the file's units)."""
    part, name, scale = UNCERTAIN_KEYS[param.generic_key]
    if part == "stack":
        stack = system.stack.replace(**{name: value * scale})
        base = dataclasses.replace(system, stack=system.stack.replace(
            gemm_efficiency=None, gemm_half_size=None, collective_efficiency=1.0))
        if system.stack.collective_efficiency != 1.0:       # undo the stack's own scaling
            c = system.stack.collective_efficiency
            net = dataclasses.replace(system.network,
                                      link_efficiency=system.network.link_efficiency / c,
                                      injection_efficiency=system.network.injection_efficiency / c)
            base = dataclasses.replace(base, network=net)
        return base.with_stack(stack)
    value *= scale
    if name in ("link_efficiency", "injection_efficiency"):
        value *= system.stack.collective_efficiency       # as the stack scales the file's
    spec = dataclasses.replace(getattr(system, part), **{name: value})
    return dataclasses.replace(system, **{part: spec})


@dataclass(frozen=True)
class Spread:
    """How far the assumed values may move one prediction, as log(time / predicted)."""

    slow: float                      # >= 0: the slow side's 90th percentile
    fast: float                      # <= 0: the fast side's 10th percentile
    effects: tuple[tuple[str, float, float], ...]   # (key, log-ratio at low, at high)


def range_ends(system) -> tuple[tuple[str, object, object], ...]:
    """``system`` at the low and the high end of each applicable range: (key, low, high).
    Built once for many layouts (``parameter_spread(..., ends=...)``)."""
    return tuple((u.key, varied(system, u, u.low), varied(system, u, u.high))
                 for u in applicable(system))


def end_ratio(model, end_system, layout, base_s: float) -> float:
    """log(time at one end of a range / ``base_s``) for ``layout`` (contention-free)."""
    from .estimator import iteration_s, screening_network
    return math.log(iteration_s(model, end_system, layout, screening_network(end_system))
                    / base_s)


def combined(effects) -> Spread:
    """The spread of (key, log-ratio at low, at high) effects, in quadrature per side."""
    effects = tuple(effects)
    slow = math.sqrt(sum(max(0.0, lo, hi) ** 2 for _, lo, hi in effects))
    fast = -math.sqrt(sum(min(0.0, lo, hi) ** 2 for _, lo, hi in effects))
    return Spread(slow, fast, effects)


def parameter_spread(model, system, layout, ends=None, base_s: float | None = None) -> Spread:
    """Each applicable range's effect on ``layout``'s iteration, combined in quadrature
    (``ends``: ``range_ends(system)``, if already built; ``base_s``: the layout's
    iteration with the contention-free model, if already priced)."""
    from .estimator import iteration_s, screening_network
    ends = range_ends(system) if ends is None else ends
    if not ends:
        return Spread(0.0, 0.0, ())
    base = base_s or iteration_s(model, system, layout, screening_network(system))
    return combined((key, end_ratio(model, low, layout, base), end_ratio(model, high, layout, base))
                    for key, low, high in ends)
