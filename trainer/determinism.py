"""What a bit-identical continuation depends on, recorded in every checkpoint.

A run's results are a pure function of its settings only on one software and thread
setup: the Numba kernels' parallel reductions (the gradient norm, the LayerNorm and
bias gradients) split their sums over the threads; BLAS picks its GEMM kernels by CPU
and splits them by thread count; numpy and numba versions change code paths; with R
ranks the gradient sums add in an R-dependent order. A checkpoint records these
(``environment``); a resume under a different setup continues the same training, but
its figures may differ in the last bits from an uninterrupted run's, and it says so.
"""

from __future__ import annotations

import platform

from fpcore.errors import check_int, check_keys, check_list, check_str, require

KEYS = ("threads", "ranks", "numpy", "numba", "blas", "machine", "cpu")


def environment(ranks: int) -> dict:
    """The setup this process computes with (threads as set, libraries as loaded)."""
    import numba
    import numpy
    from threadpoolctl import threadpool_info

    from .host import cpu_model

    blas = sorted(" ".join(str(info[k]) for k in ("internal_api", "version", "architecture")
                           if info.get(k)) + f", {info.get('num_threads')} threads"
                  for info in threadpool_info() if info.get("user_api") == "blas")
    return {"threads": numba.get_num_threads(), "ranks": ranks, "numpy": numpy.__version__,
            "numba": numba.__version__, "blas": blas, "machine": platform.machine(),
            "cpu": cpu_model()}


def check(record, where: str) -> dict:
    """A recorded environment (from a checkpoint's metadata), every field checked."""
    check_keys(where, record, KEYS)
    require(where, record, KEYS)
    out = {}
    for key in ("threads", "ranks"):
        out[key] = check_int(f"{where}.{key}", record[key], hi=1 << 24)
    for key in ("numpy", "numba", "machine", "cpu"):
        out[key] = check_str(f"{where}.{key}", record[key], max_len=500)
    blas = check_list(f"{where}.blas", record["blas"], max_len=64)
    out["blas"] = [check_str(f"{where}.blas[{i}]", b, max_len=500) for i, b in enumerate(blas)]
    return out


def differences(recorded: dict | None, current: dict) -> list[str] | None:
    """What differs between the checkpoint's setup and this one ("threads 2 -> 1");
    None when the checkpoint does not say (made before the setup was recorded)."""
    if recorded is None:
        return None
    out = []
    for key in KEYS:
        before, now = recorded.get(key), current.get(key)
        if before != now:
            show = (lambda v: "; ".join(v) or "none") if key == "blas" else str
            out.append(f"{key} {show(before)} -> {show(now)}")
    return out


def verdict(diffs: list[str] | None) -> str:
    """Whether the continuation is bit-identical to an uninterrupted run: expected,
    not guaranteed, or unknown."""
    if diffs is None:
        return "unknown"
    return "not guaranteed" if diffs else "expected"


def note(path: str, diffs: list[str] | None) -> str | None:
    """The one line a resume prints when bit-identity is not assured (None when it is)."""
    if diffs is None:
        return (f"warning: {path} does not record the threads, ranks and libraries it was "
                f"computed with: whether this continuation is bit-identical to an "
                f"uninterrupted run is unknown")
    if diffs:
        return (f"warning: this run differs from the one that wrote {path} ({', '.join(diffs)}): "
                f"the continuation may not be bit-identical to an uninterrupted run")
    return None
