"""Predictions against logged training runs: ``fugakuperf validate --against FILE.csv``.

A run log is a CSV with one row per measured run (the schema users log their own
runs in; ``perfmodel/data/validation/runs_*.csv`` ship the published ones):

    system             a system preset (fugaku, selene, jeanzay-a100) or TOML file
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

Each row is simulated by the DES (perfmodel.des) with the system preset and the
row's stack unchanged: no parameter is set per row. Whether the data-parallel
reduction overlaps the backward is the stack's (``overlap_dp``).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from fpcore.errors import SpecError

COLUMNS = ("system", "model", "layers", "hidden", "heads", "vocab", "seq", "ranks", "tp", "pp",
           "dp", "global_batch", "micro_batch", "interleave", "recompute", "sequence_parallel",
           "zero", "precision", "clock_ghz", "measured", "unit", "flops_convention", "source")
UNITS = ("sec_per_iter", "tflops_per_rank")
CONVENTIONS = ("hardware", "model")


def read_runs(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SpecError("against", f"{path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SpecError("against", f"{path}: missing column(s) {', '.join(missing)}; "
                                           f"the schema is {', '.join(COLUMNS)}")
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise SpecError("against", f"{path}: not UTF-8 text ({e})") from e
    if not rows:
        raise SpecError("against", f"{path}: no runs")
    return rows


def _int(row: dict, key: str, where: str, default: int | None = None) -> int | None:
    raw = (row.get(key) or "").strip()
    if not raw:
        if default is not None:
            return default
        raise SpecError(key, f"{where}: is empty")
    try:
        return int(raw)
    except ValueError:
        raise SpecError(key, f"{where}: must be a whole number; got {raw!r}") from None


def row_inputs(row: dict, where: str, stack: str | None = None):
    """(model, system, layout pins, micro_batch or None, unit, convention) of one row;
    ``stack`` for a row that names none."""
    from perfmodel.inputs import resolve_system
    from perfmodel.model import ModelSpec

    model = ModelSpec(layers=_int(row, "layers", where), hidden=_int(row, "hidden", where),
                      heads=_int(row, "heads", where), vocab=_int(row, "vocab", where),
                      seq=_int(row, "seq", where), name=row.get("model") or "run")
    clock = (row.get("clock_ghz") or "").strip()
    try:
        clock_ghz = float(clock) if clock else None
    except ValueError:
        raise SpecError("clock_ghz", f"{where}: must be a number; got {clock!r}") from None
    try:
        system = resolve_system(row["system"].strip(), clock_ghz=clock_ghz,
                                stack=(row.get("stack") or "").strip() or stack)
    except SpecError as e:
        raise SpecError(e.field, f"{where}: {str(e).split(': ', 1)[1]}") from None
    tp, pp, dp = (_int(row, k, where) for k in ("tp", "pp", "dp"))
    ranks = _int(row, "ranks", where)
    if tp * pp * dp != ranks:
        raise SpecError("ranks", f"{where}: tp x pp x dp = {tp * pp * dp}, not {ranks}")
    if ranks % system.ranks_per_node:
        raise SpecError("ranks", f"{where}: {ranks} ranks do not fill {system.name}'s nodes of "
                                 f"{system.ranks_per_node}")
    v = _int(row, "interleave", where, default=1)
    sp = (row.get("sequence_parallel") or "no").strip().lower()
    if sp not in ("yes", "no"):
        raise SpecError("sequence_parallel", f"{where}: must be yes or no; got {sp!r}")
    pins = dict(tp=tp, pp=pp, dp=dp, global_batch=_int(row, "global_batch", where),
                schedule="interleaved" if v > 1 else "1f1b", virtual_stages=v,
                recompute=(row.get("recompute") or "none").strip(),
                sequence_parallel=sp == "yes", zero=_int(row, "zero", where, default=0),
                precision=(row.get("precision") or "fp32").strip(),
                overlap_dp=system.stack.overlap_dp)
    mb = (row.get("micro_batch") or "").strip()
    unit = (row.get("unit") or "").strip()
    if unit not in UNITS:
        raise SpecError("unit", f"{where}: must be one of {', '.join(UNITS)}; got {unit!r}")
    convention = (row.get("flops_convention") or "").strip()
    if unit == "tflops_per_rank" and convention not in CONVENTIONS:
        raise SpecError("flops_convention", f"{where}: must be hardware or model for "
                                            f"tflops_per_rank; got {convention!r}")
    try:
        measured = float(row["measured"])
    except (TypeError, ValueError):
        raise SpecError("measured", f"{where}: must be a number; got {row.get('measured')!r}") \
            from None
    return model, system, pins, (_int(row, "micro_batch", where) if mb else None), unit, \
        convention, measured


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


def predict_row(row: dict, where: str = "row", stack: str | None = None) -> dict:
    """One run predicted by the DES (micro-batch searched when the row has none)."""
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
    if unit == "sec_per_iter":
        predicted = iteration
    else:
        flops = iteration_flops(model, layout.global_batch, layout.recompute, convention)
        predicted = flops / iteration / layout.ranks / 1e12
    return {"row": where, "system": system.name, "stack": system.stack.name,
            "model": row.get("model", ""),
            "layout": layout.label(), "micro_batch": layout.micro_batch,
            "micro_batch_searched": micro_batch is None, "unit": unit,
            "flops_convention": convention or None, "measured": measured,
            "predicted": predicted, "error": predicted / measured - 1.0,
            "iteration_s": iteration, "analytic_iteration_s": est.iteration_s,
            "memory_fits": est.memory_fits, "source": row.get("source", "")}


def validate_against(path: str | Path, progress=None, stack: str | None = None) -> dict:
    """Every run of the log at ``path`` predicted; ``stack`` for rows that name none."""
    runs = read_runs(path)
    rows = []
    for i, row in enumerate(runs):
        where = f"{Path(path).name} row {i + 2}"          # the header is row 1
        if progress:
            progress(f"{row.get('system')} {row.get('model')}", i, len(runs))
        rows.append(predict_row(row, where, stack))
    errors = [abs(r["error"]) for r in rows]
    return {"against": str(path), "rows": rows, "mean_abs_error": statistics.fmean(errors),
            "max_abs_error": max(errors)}


def _validation_folder():
    from importlib import resources
    return resources.files("perfmodel.data") / "validation"


def log_path(name: str) -> str:
    """A shipped log's short name (``selene``, ``fugaku_fit``) -> its file; any other
    name or path as given."""
    shipped = _validation_folder() / f"runs_{name}.csv"
    if "/" not in name and not name.endswith(".csv") and shipped.is_file():
        return str(shipped)
    return name


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
    lines = []
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
                         f"{path.stem.removeprefix('runs_')}`)")
    if system.name == "fugaku" and not system.collective_fits:
        from perfmodel.system import load_system
        from perfmodel.validation import fugaku_mpi_validation
        errors = [abs(r["error"]) for r in fugaku_mpi_validation(load_system("fugaku"))]
        lines.append(f"the network model against RIKEN's {len(errors)} measured MPI figures "
                     f"(fugaku_mpi.csv): max |error| {max(errors):.1%}")
    if not lines:
        lines.append(f"no published run of {system.name} ships with fugakuperf: its "
                     f"predictions are unchecked (log runs and use `validate --against`)")
    return lines
