"""Predictions against logged training runs: ``fugakuperf validate --against FILE.csv``.

A run log is a CSV with one row per measured run (the schema users log their own
runs in; ``perfmodel/data/validation/runs_*.csv`` ship the published ones):

    system             a system preset's name (fugaku, selene, jeanzay-a100)
    model              a label
    layers, hidden, heads, vocab, seq          the model's shape
    ranks              GPUs, or nodes x ranks per node
    tp, pp, dp         the layout (tp x pp x dp = ranks)
    global_batch       sequences per iteration
    micro_batch        empty when the source does not say: then it is searched as the
                       authors tuned it (the fastest that fits), and the row says so
    interleave         virtual stages per pipeline rank (1: plain 1F1B)
    recompute          none | selective | full
    sequence_parallel  yes | no
    zero               0 ... 3
    precision          fp32 | fp16 | bf16
    clock_ghz          empty for the preset's default
    measured, unit     sec_per_iter, or tflops_per_rank with
    flops_convention   hardware (recomputation counted, Narayanan et al. 2021 Eq. 3)
                       or model (Korthikanti et al. 2022 Eq. 7)
    source             where the figure comes from
    stack              optional: the software stack the run used, one of the system
                       preset's stacks (``fugakuperf presets --system NAME``); empty or
                       absent: ``--stack``, else the preset's default
    partition          optional: how the pipeline placed the layers on its stages
                       (perfmodel.partitions: even, type:transformer,
                       type:transformer|embedding), one the stack runs; empty or
                       absent: even where pp divides the layers, else the stack's first
                       uneven placement
    shard_ranks        optional: the data-parallel ranks a hybrid sharding mode splits
                       its states over, a replica per group (FSDP HYBRID_SHARD: usually
                       a node's ranks); empty, absent or 0: over all of dp
    architecture       optional: a model preset (``fugakuperf presets``) whose
                       architecture the run's model has (key/value heads, FFN width,
                       norm, activation, positions, biases, tied embeddings, experts),
                       its shape the row's columns (a proxy run may have fewer layers);
                       empty or absent: a GPT's (4h FFN, GELU, LayerNorm, learned
                       positions, tied, biases)
    cp, ep             optional: context and expert parallelism (ranks = tp x cp x pp
                       x dp; ep divides dp); empty or absent: 1
    expert_tp          optional: yes if a mixture of experts' experts are split over
                       the TP ranks, no if each TP rank holds them whole; empty or
                       absent: as the stack's framework does by default

Each row is simulated by the DES (perfmodel.des) with the system preset and the
row's stack unchanged: no parameter is set per row. Whether the data-parallel
reduction overlaps the backward is the stack's (``overlap_dp``).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from fpcore.errors import SpecError

COLUMNS = ("system", "model", "layers", "hidden", "heads", "vocab", "seq", "ranks", "tp", "pp",
           "dp", "global_batch", "micro_batch", "interleave", "recompute", "sequence_parallel",
           "zero", "precision", "clock_ghz", "measured", "unit", "flops_convention", "source")
UNITS = ("sec_per_iter", "tflops_per_rank")
CONVENTIONS = ("hardware", "model")


def read_runs(path: str | Path) -> list[dict]:
    """The rows of a run log (fpcore.readers.read_csv: UTF-8, bounded, strict CSV), with
    every column of the schema present; each row's values are checked by ``row_inputs``."""
    from fpcore.readers import read_csv
    header, rows = read_csv(path, "against")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SpecError("against", f"{path}: missing column(s) {', '.join(missing)}; "
                                   f"the schema is {', '.join(COLUMNS)} (`fugakuperf validate "
                                   f"--schema`)")
    if not rows:
        raise SpecError("against", f"{path}: no runs")
    return rows


MAX_COUNT = 10**9          # layers, widths, ranks, batches: far past any run


def _text(row: dict, key: str) -> str:
    return (row.get(key) or "").strip()


def _int(row: dict, key: str, where: str, default: int | None = None, lo: int = 1) -> int:
    """Column ``key`` as a whole number >= ``lo`` (``default`` when empty)."""
    from fpcore.errors import check_int
    raw = _text(row, key)
    if not raw:
        if default is not None:
            return default
        raise SpecError(key, f"{where}: is empty")
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(key, f"{where}: must be a whole number; got {raw[:40]!r}") from None
    try:
        return check_int(key, value, lo=lo, hi=MAX_COUNT)
    except SpecError as e:
        raise SpecError(key, f"{where}: {e.message}") from None


# The least and the most figure a column takes: outside them a time or a rate is no
# measurement (and its ratio to a prediction would overflow or vanish).
MIN_FIGURE, MAX_FIGURE = 1e-9, 1e12


def number_column(row: dict, key: str, where: str, unit: str = "") -> float | None:
    """Column ``key`` as a number from MIN_FIGURE to MAX_FIGURE (None when empty)."""
    from fpcore.errors import check_float
    raw = _text(row, key)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(key, f"{where}: must be a number; got {raw[:40]!r}") from None
    try:
        return check_float(key, value, lo=MIN_FIGURE, lo_open=False, hi=MAX_FIGURE, unit=unit)
    except SpecError as e:
        raise SpecError(key, f"{where}: {e.message}") from None


def _choice(row: dict, key: str, where: str, choices, default: str) -> str:
    value = _text(row, key) or default
    if value not in choices:
        raise SpecError(key, f"{where}: must be one of {', '.join(choices)}; got {value[:40]!r}")
    return value


def row_inputs(row: dict, where: str, stack: str | None = None):
    """(model, system, layout pins, micro_batch or None, unit, convention, measured) of
    one row, every value checked: counts are whole numbers, the figure and the clock
    finite and positive, names among those allowed, and the system a preset named in
    the log (a log names presets, never files: a row is not where a user gives a
    path). ``stack`` for a row that names none."""
    from perfmodel.inputs import resolve_system
    from perfmodel.layout import PRECISIONS, RECOMPUTE, Layout, check_runnable
    from perfmodel.model import ModelSpec
    from perfmodel.partitions import PARTITIONS, default_for
    from perfmodel.search import stack_expert_tp_error, stack_partition_error, stack_zero_error

    shape = dict(layers=_int(row, "layers", where), hidden=_int(row, "hidden", where),
                 heads=_int(row, "heads", where), vocab=_int(row, "vocab", where),
                 seq=_int(row, "seq", where), name=_text(row, "model")[:80] or "run")
    architecture = _text(row, "architecture")
    if architecture:
        model = _architecture(architecture, shape, where)
    else:
        model = ModelSpec(**shape)
    clock_ghz = number_column(row, "clock_ghz", where, unit="GHz")
    try:
        system = resolve_system(_text(row, "system"), clock_ghz=clock_ghz,
                                stack=_text(row, "stack") or stack, allow_files=False)
    except SpecError as e:
        raise SpecError(e.field, f"{where}: {e.message}") from None
    tp, pp, dp = (_int(row, k, where) for k in ("tp", "pp", "dp"))
    cp, ep = (_int(row, k, where, default=1) for k in ("cp", "ep"))
    ranks = _int(row, "ranks", where)
    if tp * cp * pp * dp != ranks:
        names = "tp x cp x pp x dp" if cp > 1 else "tp x pp x dp"
        raise SpecError("ranks", f"{where}: {names} = {tp * cp * pp * dp}, not {ranks}")
    if ranks % system.ranks_per_node:
        raise SpecError("ranks", f"{where}: {ranks} ranks do not fill {system.name}'s nodes of "
                                 f"{system.ranks_per_node}")
    v = _int(row, "interleave", where, default=1)
    sp = _choice(row, "sequence_parallel", where, ("yes", "no"), "no")
    partition = _choice(row, "partition", where, tuple(PARTITIONS), default_for(
        system.stack.pipeline_partitions, model.layers, pp, v))
    pins = dict(tp=tp, pp=pp, dp=dp, global_batch=_int(row, "global_batch", where),
                schedule="interleaved" if v > 1 else "1f1b", virtual_stages=v,
                recompute=_choice(row, "recompute", where, RECOMPUTE, "none"),
                sequence_parallel=sp == "yes", zero=_int(row, "zero", where, default=0, lo=0),
                precision=_choice(row, "precision", where, PRECISIONS, "fp32"),
                partition=partition,
                shard_ranks=_int(row, "shard_ranks", where, default=0, lo=0), cp=cp, ep=ep,
                expert_tp=_choice(row, "expert_tp", where, ("yes", "no"),
                                  "no" if model.experts and not system.stack.expert_tp[0]
                                  else "yes") == "yes",
                **system.stack.layout_settings())
    mb = _int(row, "micro_batch", where) if _text(row, "micro_batch") else None
    try:                       # the layout itself, with the given or the smallest micro-batch
        for err in (stack_partition_error(system, partition),
                    stack_zero_error(system, pins["zero"]),
                    stack_expert_tp_error(system, model, pins["expert_tp"])):
            if err is not None:
                raise err
        check_runnable(Layout(micro_batch=mb or 1, **pins), model, ranks)
    except SpecError as e:
        raise SpecError(e.field, f"{where}: {e.message}") from None
    unit = _choice(row, "unit", where, UNITS, "")
    convention = _text(row, "flops_convention")
    if unit == "tflops_per_rank" and convention not in CONVENTIONS:
        raise SpecError("flops_convention", f"{where}: must be hardware or model for "
                                            f"tflops_per_rank; got {convention[:40]!r}")
    if convention and convention not in CONVENTIONS:
        raise SpecError("flops_convention", f"{where}: must be hardware, model or empty; got "
                                            f"{convention[:40]!r}")
    measured = number_column(row, "measured", where, unit=unit)
    if measured is None:
        raise SpecError("measured", f"{where}: is empty")
    return model, system, pins, mb, unit, convention, measured


def _architecture(name: str, shape: dict, where: str):
    """The preset ``name``'s model with the row's layers, vocabulary and sequence (a
    proxy run may have fewer layers); its width and heads must be the preset's."""
    from perfmodel.presets import load_model, model_names
    if name not in model_names():
        raise SpecError("architecture", f"{where}: must be a model preset (`fugakuperf "
                                        f"presets`); got {name[:40]!r}")
    base = load_model(name)
    for key in ("hidden", "heads"):
        if shape[key] != getattr(base, key):
            raise SpecError("architecture", f"{where}: {name} has {key} "
                                            f"{getattr(base, key)}, the row {shape[key]}: a "
                                            f"run of another width needs its own preset")
    try:
        return base.replace(layers=shape["layers"], vocab=shape["vocab"], seq=shape["seq"],
                            name=shape["name"])
    except SpecError as e:
        raise SpecError(e.field, f"{where}: {e.message}") from None


def _candidates(pins: dict, micro_batch: int | None) -> list[int]:
    if micro_batch is not None:
        return [micro_batch]
    per_pipeline = pins["global_batch"] // pins["dp"]
    return [b for b in range(1, per_pipeline + 1) if per_pipeline % b == 0][:8]


def iteration_flops(model, global_batch: int, recompute: str, convention: str) -> float:
    """FLOPs of one iteration in the log's convention: hardware (recomputation
    counted) or model."""
    from perfmodel.ops import hardware_flops_per_iteration, model_flops_per_iteration
    if convention == "hardware":
        return hardware_flops_per_iteration(model, global_batch, recompute)
    return model_flops_per_iteration(model, global_batch)


def _predicted(row: dict, where: str, stack: str | None):
    """(model, system, layout, analytic estimate, simulated iteration, unit, convention,
    measured) of one run (micro-batch searched when the row has none)."""
    from perfmodel.des import simulate
    from perfmodel.estimator import estimate
    from perfmodel.layout import Layout

    model, system, pins, micro_batch, unit, convention, measured = row_inputs(row, where, stack)
    best = None
    for b in _candidates(pins, micro_batch):
        try:
            layout = Layout(micro_batch=b, **pins)
            est = estimate(model, system, layout)
        except SpecError:
            if micro_batch is not None:
                raise
            continue
        fits = est.memory_fits if micro_batch is None else True
        if fits and (best is None or est.iteration_s < best[1].iteration_s):
            best = (layout, est)
    if best is None:
        raise SpecError("micro_batch", f"{where}: no micro-batch of this layout fits "
                                       f"{system.name}'s memory")
    layout, est = best
    iteration = simulate(model, system, layout).iteration_s
    return model, system, layout, est, iteration, unit, convention, measured


def measured_seconds(model, layout, unit: str, convention: str, measured: float) -> float:
    """A logged figure as seconds per iteration (a throughput per rank turned into the
    time its FLOPs take)."""
    if unit == "sec_per_iter":
        return measured
    flops = iteration_flops(model, layout.global_batch, layout.recompute, convention)
    return flops / (measured * 1e12 * layout.ranks)


def predict_row(row: dict, where: str = "row", stack: str | None = None,
                band_source: str | None = None) -> dict:
    """One run predicted by the DES (micro-batch searched when the row has none), with
    its 80% band from the evidence of every source but ``band_source`` (the row's own,
    so that a run is never evidence for itself; perfmodel.evidence)."""
    from perfmodel.evidence import band_for
    model, system, layout, est, iteration, unit, convention, measured = _predicted(
        row, where, stack)
    if unit == "sec_per_iter":
        predicted = iteration
    else:
        flops = iteration_flops(model, layout.global_batch, layout.recompute, convention)
        predicted = flops / iteration / layout.ranks / 1e12
    band = band_for(model, system, layout, iteration, exclude_source=band_source)
    seconds = measured_seconds(model, layout, unit, convention, measured)
    return {"row": where, "system": system.name, "stack": system.stack.name,
            "model": row.get("model", ""),
            "layout": layout.label(), "micro_batch": layout.micro_batch,
            "micro_batch_searched": micro_batch_searched(row), "unit": unit,
            "flops_convention": convention or None, "measured": measured,
            "predicted": predicted, "error": predicted / measured - 1.0,
            "iteration_s": iteration, "analytic_iteration_s": est.iteration_s,
            "measured_iteration_s": seconds, "band": band.to_dict(),
            "in_band": band.contains(seconds),
            "memory_fits": est.memory_fits, "source": row.get("source", "")}


def micro_batch_searched(row: dict) -> bool:
    return not _text(row, "micro_batch")


def evidence_runs(path: str | Path, progress=None) -> list:
    """Every predictable run of a shipped log as evidence (perfmodel.evidence): its
    regime and its predicted and measured seconds per iteration."""
    from perfmodel.evidence import EvidenceRun, regime_of, source_of
    out = []
    runs = read_runs(path)
    for i, row in enumerate(runs):
        where = f"{Path(path).name} row {i + 2}"
        if progress:
            progress(f"{Path(path).stem} {row.get('model')}", i, len(runs))
        try:
            model, system, layout, _, iteration, unit, convention, measured = _predicted(
                row, where, None)
        except SpecError:
            continue                 # validate --against reports it; it is no evidence
        out.append(EvidenceRun(source=source_of(Path(path).stem), row=where, system=system.name,
                               regime=regime_of(model, system, layout), predicted_s=iteration,
                               measured_s=measured_seconds(model, layout, unit, convention,
                                                           measured)))
    return out


def all_logs() -> list[Path]:
    """Every shipped run log, the runs kept for fitting stacks included."""
    return sorted(Path(str(p)) for p in _validation_folder().iterdir()
                  if p.name.startswith("runs_") and p.name.endswith(".csv"))


def write_evidence(path: str | Path | None = None, progress=None) -> Path:
    """Rewrite the shipped evidence (perfmodel/data/validation/evidence.csv, or
    ``path``) from every shipped log, atomically."""
    import io
    import csv as _csv
    from fpcore.atomic import atomic_write
    from perfmodel.evidence import EVIDENCE_COLUMNS, row_of
    target = Path(str(_validation_folder() / "evidence.csv")) if path is None else Path(path)
    runs = [r for log in all_logs() for r in evidence_runs(log, progress)]
    buf = io.StringIO()
    writer = _csv.DictWriter(buf, fieldnames=EVIDENCE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        writer.writerow(row_of(r))
    atomic_write(target, buf.getvalue().encode("utf-8"), field="update-evidence")
    return target


def validate_against(path: str | Path, progress=None, stack: str | None = None) -> dict:
    """Every run of the log at ``path`` that can be predicted, predicted; ``stack`` for
    rows that name none. Every row is checked before the first is simulated; a row
    that cannot be predicted (a value out of range, a layout no framework runs, no
    micro-batch that fits) is kept in ``rows`` with ``"error": null`` and ``why``,
    and listed in ``failed``: one bad row never abandons the others."""
    from perfmodel.evidence import source_of
    runs = read_runs(path)
    source = source_of(Path(path).stem)            # the log's own runs are not its evidence
    checked = []
    for i, row in enumerate(runs):
        where = f"{Path(path).name} row {i + 2}"          # the header is row 1
        try:
            row_inputs(row, where, stack)
            checked.append((where, row, None))
        except SpecError as e:
            checked.append((where, row, e))
    rows = []
    for i, (where, row, problem) in enumerate(checked):
        if problem is None:
            if progress:
                progress(f"{row.get('system')} {row.get('model')}", i, len(runs))
            try:
                rows.append(predict_row(row, where, stack, band_source=source))
                continue
            except SpecError as e:
                problem = e
        rows.append(_unpredicted(row, where, problem))
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    banded = [r for r in rows if r["error"] is not None]
    # a *_fit log holds the runs a stack's fitted values were fitted on: not predictions
    fitted = Path(path).stem.endswith("_fit")
    for r in rows:
        r["used_for_fit"] = fitted
    return {"against": str(path), "rows": rows, "used_for_fit": fitted,
            "predicted": len(errors), "failed": [r["row"] for r in rows if r["error"] is None],
            "mean_abs_error": statistics.fmean(errors) if errors else None,
            "max_abs_error": max(errors) if errors else None,
            "band_coverage": (statistics.fmean(r["in_band"] for r in banded)
                              if banded else None),
            "band_median_width": (statistics.median(r["band"]["width"] for r in banded)
                                  if banded else None)}


def _unpredicted(row: dict, where: str, problem: SpecError) -> dict:
    """A row that cannot be predicted, as the log gives it, with why."""
    message = problem.message.removeprefix(f"{where}: ")
    return {"row": where, "system": _text(row, "system")[:80], "stack": _text(row, "stack")[:80],
            "model": _text(row, "model")[:80], "layout": None, "micro_batch": None,
            "micro_batch_searched": None, "unit": _text(row, "unit")[:40] or None,
            "flops_convention": _text(row, "flops_convention")[:40] or None,
            "measured": None, "predicted": None, "error": None, "band": None, "in_band": None,
            "why": f"{problem.field}: {message}", "source": _text(row, "source")[:500]}


def _validation_folder():
    from importlib import resources
    return resources.files("perfmodel.data") / "validation"


def log_path(name: str) -> str:
    """A shipped log's short name (``selene``, ``fugaku_fit``) -> its file; any other
    name or path as given."""
    import os
    if "/" in name or name.endswith(".csv"):
        return name
    shipped = str(_validation_folder() / f"runs_{name}.csv")
    return shipped if os.path.isfile(shipped) else name


def shipped_logs() -> list[Path]:
    """The published run logs the project ships (perfmodel/data/validation/runs_*.csv),
    without the runs kept for fitting stacks (``*_fit.csv``)."""
    return sorted(Path(str(p)) for p in _validation_folder().iterdir()
                  if p.name.startswith("runs_") and p.name.endswith(".csv")
                  and not p.name.endswith("_fit.csv"))


def published_checks(system) -> list[str]:
    """How the model does on the published measurements of ``system``'s preset, one
    line per log and stack (every run predicted now, nothing stored); lines say when
    the checked stack is not the one in use."""
    from perfmodel.presets import is_shipped
    lines = []
    # a user's file may name its table after a preset: the runs check the preset
    other = "" if is_shipped(system) else \
        f"; they check the shipped {system.name} preset, not {system.origin}"
    for path in shipped_logs():
        groups: dict[str, list[float]] = {}
        for i, row in enumerate(read_runs(path)):
            if row["system"].strip() != system.name:
                continue
            r = predict_row(row, f"{path.name} row {i + 2}")
            groups.setdefault(r["stack"], []).append(r["error"])
        for stack, errors in groups.items():
            note = ("" if stack == system.stack.name else
                    f"; on stack {stack}, not this prediction's {system.stack.name}")
            lines.append(f"checked against {len(errors)} published run(s) of {system.name} "
                         f"({path.name}{note}): mean |error| "
                         f"{statistics.fmean(abs(e) for e in errors):.1%}, max "
                         f"{max(abs(e) for e in errors):.1%} (`fugakuperf validate --against "
                         f"{path.stem.removeprefix('runs_')}`{other})")
    if system.name == "fugaku" and not system.collective_fits:
        from perfmodel.system import load_system
        from perfmodel.validation import fugaku_mpi_validation
        errors = [abs(r["error"]) for r in fugaku_mpi_validation(load_system("fugaku"))]
        lines.append(f"the network model against RIKEN's {len(errors)} measured MPI figures "
                     f"(fugaku_mpi.csv): max |error| {max(errors):.1%}{other}")
    if not lines:
        lines.append(f"no published run of {system.name} ships with fugakuperf: its "
                     f"predictions are unchecked (log runs and use `validate --against`)")
    return lines
