"""Every value a calibration file holds, checked: the type, finite, in range.

A calibration file is machine-written, but it travels (other nodes, other days, other
people), so nothing in it is trusted: each check raises a SpecError whose field is the
key's path in the file (``measurements[3].seconds``, ``fit.compute.parameters.gemm_rate``);
calfile.load names the file around it. Host facts are descriptive: the ones this tool
reads are checked, others are kept as they are.

Ranges: seconds of one timed call or step are in (0, ``MAX_SECONDS``]: a zero or
negative time is no measurement, and no call calibrate times lasts a day. Sizes and
counts are positive integers. The fit's parameters lie within the bounds the fit
searched (calibration.fit.NAMES, collectives.PARAMETERS): a value outside them was
not produced by a fit.
"""

from __future__ import annotations

from fpcore.errors import (SpecError, check_bool, check_choice, check_float, check_int,
                           check_list, check_str, check_table, require)

MAX_SECONDS = 86_400.0         # one day
MAX_COUNT = 10**15             # bytes, parameters, FLOPs per call: far past any node
KINDS = ("gemm", "kernel", "trainer-kernel", "step", "collective", "checkpoint")
OP_KEYS = ("name", "kind", "flops", "bytes", "m", "n", "k", "batch", "backward", "weighted")
CONFIG_KEYS = ("layers", "hidden", "heads", "seq", "micro_batch", "global_batch")


def optional(check, field: str, value, **kw):
    """``check(field, value, **kw)``, or None when the value is null."""
    return None if value is None else check(field, value, **kw)


def seconds(field: str, value) -> float:
    return check_float(field, value, lo=0.0, hi=MAX_SECONDS, unit="s")


def check_host(host) -> dict:
    check_table("host", host)
    for key in ("cpu", "machine", "hostname", "python", "numpy", "numba", "mpi", "date"):
        if key in host:
            optional(check_str, f"host.{key}", host[key], max_len=1000)
    for key in ("cores", "ranks", "merged_files"):
        if key in host:
            check_int(f"host.{key}", host[key], hi=10**6)
    if "threads" in host:
        optional(check_int, "host.threads", host["threads"], hi=10**6)
    if "memory_bytes" in host:
        optional(check_float, "host.memory_bytes", host["memory_bytes"], hi=float(MAX_COUNT))
    if "quick" in host:
        check_bool("host.quick", host["quick"])
    if "model" in host:
        optional(check_str, "host.model", host["model"], max_len=1000)
    return host


def check_op(where: str, op) -> None:
    from perfmodel.compute import KERNEL_CLASS
    require(where, op, ("name", "kind", "flops", "bytes"))
    unknown = sorted(map(str, set(op) - set(OP_KEYS)))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", f"unknown key; an op has {', '.join(OP_KEYS)}")
    check_str(f"{where}.name", op["name"], max_len=200)
    kind = check_choice(f"{where}.kind", op["kind"], ("gemm", "mem"))
    if "backward" in op:                   # the backward's work over the forward's
        check_float(f"{where}.backward", op["backward"], lo=1.0, lo_open=False, hi=10.0)
    if "weighted" in op:                   # a GEMM with a weight (perfmodel.ops)
        check_bool(f"{where}.weighted", op["weighted"])
    for key in ("flops", "bytes"):
        check_float(f"{where}.{key}", op[key], lo=0.0, lo_open=False, hi=float(MAX_COUNT))
    if kind == "gemm":
        require(where, op, ("m", "n", "k"))
        for key in ("m", "n", "k", "batch"):
            if key in op:
                check_int(f"{where}.{key}", op[key], hi=10**9)
    else:
        for key in ("m", "n", "k"):
            if key in op:
                check_int(f"{where}.{key}", op[key], lo=0, hi=10**9)
        if "batch" in op:
            check_int(f"{where}.batch", op["batch"], hi=10**9)
        base = op["name"].split(".", 1)[0]
        if base not in KERNEL_CLASS:
            raise SpecError(f"{where}.name", f"{op['name']!r} is no memory-bound op the "
                                             f"simulator has; known: {', '.join(KERNEL_CLASS)}")


def check_measurement(where: str, m) -> dict:
    """One measurement record (measure.py's formats; collectives.py's for collectives)."""
    from topologies.fitted import FITTED_OPS
    require(where, m, ("kind", "seconds"))
    kind = check_choice(f"{where}.kind", m["kind"], KINDS)
    fastest = seconds(f"{where}.seconds", m["seconds"])
    if m.get("median_seconds") is not None:
        check_float(f"{where}.median_seconds", m["median_seconds"], lo=fastest, lo_open=False,
                    hi=MAX_SECONDS, unit="s (at least the fastest)")
    if "name" in m:
        check_str(f"{where}.name", m["name"], max_len=2000)
    for key, lo in (("calls", 1), ("rank", 0), ("file", 0)):
        if key in m:
            check_int(f"{where}.{key}", m[key], lo=lo, hi=10**9)
    if kind in ("gemm", "kernel", "trainer-kernel"):
        ops = check_list(f"{where}.ops", m.get("ops"), min_len=1, max_len=10_000)
        for i, op in enumerate(ops):
            check_op(f"{where}.ops[{i}]", op)
    elif kind == "step":
        check_step(where, m)
    elif kind == "collective":
        check_choice(f"{where}.op", m.get("op"), FITTED_OPS)
        check_int(f"{where}.ranks", m.get("ranks"), lo=2, hi=10**7)
        check_float(f"{where}.bytes", m.get("bytes"), lo=0.0, lo_open=False,
                    hi=float(MAX_COUNT), unit="bytes")
    else:                                  # checkpoint
        check_float(f"{where}.bytes", m.get("bytes"), hi=float(MAX_COUNT), unit="bytes")
        check_str(f"{where}.directory", m.get("directory"), max_len=10_000)
    return m


def check_step(where: str, m: dict) -> None:
    from perfmodel.model import ModelSpec
    config = check_table(f"{where}.config", m.get("config"))
    require(f"{where}.config", config, CONFIG_KEYS)
    for key in CONFIG_KEYS:
        check_int(f"{where}.config.{key}", config[key], hi=10**7)
    for key in ("ranks", "params", "micro_batches"):
        check_int(f"{where}.{key}", m.get(key), hi=MAX_COUNT)
    model = check_table(f"{where}.model", m.get("model"))
    try:
        if "name" in model:
            check_str(f"{where}.model.name", model["name"], max_len=1000)
        ModelSpec(**model)
    except SpecError as e:
        raise e.within(f"{where}.model") from None
    except TypeError as e:                         # an unknown or missing key
        raise SpecError(f"{where}.model", f"is not a model description ({e})") from None


def check_measurements(measurements) -> list:
    records = check_list("measurements", measurements, max_len=10**7)
    for i, m in enumerate(records):
        check_measurement(f"measurements[{i}]", m)
    return records


def check_collective_fits(collectives) -> dict:
    from topologies.fitted import FITTED_OPS

    from .collectives import PARAMETERS
    check_table("fit.collectives", collectives)
    for op, f in collectives.items():
        where = f"fit.collectives.{op}"
        check_choice(f"fit.collectives (key {op!r})", op, FITTED_OPS)
        require(where, f, [name for name, _, _ in PARAMETERS])
        for name, lo, hi in PARAMETERS:
            check_float(f"{where}.{name}", f[name], lo=lo * (1 - 1e-9), lo_open=False,
                        hi=hi * (1 + 1e-9))
        for key in ("ranks", "points"):
            if key in f:
                check_int(f"{where}.{key}", f[key], hi=10**9)
        if "status" in f:
            check_int(f"{where}.status", f["status"], lo=-1, hi=10)
    return collectives


def check_storage(storage) -> dict:
    if storage is None:
        return {}
    check_table("fit.storage", storage)
    if storage:
        require("fit.storage", storage, ("checkpoint_write_bytes_per_s",))
        check_float("fit.storage.checkpoint_write_bytes_per_s",
                    storage["checkpoint_write_bytes_per_s"], hi=float(MAX_COUNT), unit="bytes/s")
        if "bytes" in storage:
            check_float("fit.storage.bytes", storage["bytes"], hi=float(MAX_COUNT))
        if "directory" in storage:
            check_str("fit.storage.directory", storage["directory"])
    return storage


def check_fit(fit) -> dict:
    from .fit import check_parameters
    check_table("fit", fit)
    compute = check_table("fit.compute", fit.get("compute"))
    check_parameters(compute.get("parameters"), "fit.compute.parameters")
    if "status" in compute:
        check_int("fit.compute.status", compute["status"], lo=-1, hi=10)
    if "success" in compute:
        check_bool("fit.compute.success", compute["success"])
    if "records" in compute:
        check_int("fit.compute.records", compute["records"], hi=10**9)
    for key in ("residual_norm", "median_abs_error", "max_abs_error"):
        if key in compute:
            check_float(f"fit.compute.{key}", compute[key], lo=0.0, lo_open=False)
    if "message" in compute:
        check_str("fit.compute.message", compute["message"])
    check_collective_fits(fit.get("collectives") or {})
    check_storage(fit.get("storage"))
    return fit


def check_contention(c) -> dict | None:
    """The conditions of the measurement (calibration.contention.assess), if recorded."""
    from .contention import VERDICTS
    if c is None:
        return None
    check_table("contention", c)
    check_choice("contention.verdict", c.get("verdict"), VERDICTS)
    for key in ("wall_s", "steal_fraction", "other_cores", "load_average_start",
                "load_average_end", "repeat_spread", "slowdown_bound"):
        if c.get(key) is not None:
            check_float(f"contention.{key}", c[key], lo=0.0, lo_open=False)
    for key in ("cores", "threads", "ranks"):
        if key in c:
            check_int(f"contention.{key}", c[key], hi=10**6)
    reasons = check_list("contention.reasons", c.get("reasons", []), max_len=100)
    for i, r in enumerate(reasons):
        check_str(f"contention.reasons[{i}]", r)
    return c
