"""Turn user options (CLI flags, config values) into specs, with errors that name the flag."""

from __future__ import annotations

from fpcore.errors import SpecError

from .model import ModelSpec
from .presets import load_model
from .sizing import DEFAULT_SEQ, DEFAULT_VOCAB, model_for_params
from .system import SystemSpec, load_system

SHAPE_FIELDS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq")


def resolve_model(*, params: float | None = None, model: str | None = None, **shape) -> ModelSpec:
    """The model from ``--params``, ``--model`` or explicit shape flags."""
    given = {k: v for k, v in shape.items() if v is not None}
    unknown = set(given) - set(SHAPE_FIELDS)
    if unknown:
        raise SpecError(sorted(unknown)[0], "is not a model shape field")
    if params is not None and model is not None:
        raise SpecError("params", "give either --params or --model, not both")
    if params is not None:
        extra = set(given) - {"vocab", "seq"}
        if extra:
            raise SpecError(sorted(extra)[0], "cannot be combined with --params (the sizing rule "
                                              "picks the shape; only --vocab and --seq apply)")
        return model_for_params(params, vocab=given.get("vocab", DEFAULT_VOCAB),
                                seq=given.get("seq", DEFAULT_SEQ))
    if model is not None:
        spec = load_model(model, seq=given.get("seq"))
        if given:
            if "hidden" in given and "ffn" not in given and spec.ffn == 4 * spec.hidden:
                given["ffn"] = 4 * given["hidden"]
            if "heads" in given and "kv_heads" not in given and spec.kv_heads == spec.heads:
                given["kv_heads"] = given["heads"]          # multi-head stays multi-head
            spec = spec.replace(name=spec.name + " (modified)", **given)
        return spec
    missing = [k for k in ("layers", "hidden", "heads") if k not in given]
    if missing:
        raise SpecError("model", "give --params N, --model PRESET, or a shape with "
                                 "--layers, --hidden and --heads (missing: --"
                                 + ", --".join(missing) + ")")
    given.setdefault("vocab", DEFAULT_VOCAB)
    given.setdefault("seq", DEFAULT_SEQ)
    return ModelSpec(name="custom", **given)


def resolve_system(name: str = "fugaku", *, clock_ghz: float | None = None,
                   eco: bool | None = None, ppn: int | None = None,
                   network_model: str | None = None, mapping: str | None = None,
                   shape: str | None = None, stack: str | None = None,
                   allow_files: bool = True) -> SystemSpec:
    """The system with the user's options (a given job shape is checked against the
    machine as the system is made). ``allow_files=False``: ``name`` must be a preset
    (it was read from a file)."""
    return load_system(name, clock_ghz=clock_ghz, eco=eco, ppn=ppn,
                       network_model=network_model, mapping=mapping, shape=shape, stack=stack,
                       allow_files=allow_files)


def flow_network(system: SystemSpec):
    """The system's flow-level network model (what ``topo`` and ``collective`` describe:
    they need its placement)."""
    from .estimator import network_for
    from .parts import TORUS_AXES
    net = system.network
    if net.kind == "torus" and len(net.shape) != TORUS_AXES:
        raise SpecError("system", f"{system.name}'s torus has {len(net.shape)} axes; the "
                                  f"flow-level model places jobs on {TORUS_AXES} "
                                  f"(X, Y, Z, a, b, c)")
    flow = network_for(system.with_options(network_model="flow"))
    if not hasattr(flow, "placement"):
        raise SpecError("network", f"{system.name} has no torus to describe")
    return flow


def job_for(system: SystemSpec, nodes: int, tp: int = 1, pp: int = 1):
    """The job of ``nodes`` nodes (tp x pp x the rest), checked against the machine and a
    given --shape before any work."""
    from topologies import JobShape
    system.check_nodes(nodes)
    ranks = nodes * system.ranks_per_node
    if ranks % (tp * pp):
        field = "tp" if ranks % tp else "pp"             # (the one that does not fit)
        raise SpecError(field, f"tp x pp ({tp} x {pp}) must divide the ranks "
                              f"({nodes:,} nodes x {system.ranks_per_node} per node = {ranks:,})")
    return JobShape(tp, pp, ranks // (tp * pp), system.ranks_per_node)
