"""Run independent pieces of a sweep on the machine's cores.

Forked worker processes inherit the loaded modules and the ``context`` (model and
system) without pickling it; each task is one item of ``items`` and returns a
picklable result. ``FUGAKUPERF_WORKERS`` sets the number of workers (1: run in
this process). On a platform without fork, or with one core or one item, the
work runs here.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

_CONTEXT = None
_IN_WORKER = False


def workers() -> int:
    env = os.environ.get("FUGAKUPERF_WORKERS", "").strip()
    if env:
        return max(1, int(env)) if env.isdigit() else 1
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _call(fn_and_item):
    global _IN_WORKER
    _IN_WORKER = True                 # a worker's own sweeps run in the worker
    fn, item = fn_and_item
    return fn(_CONTEXT, item)


def map_items(fn: Callable, items: Sequence, *, context) -> list:
    """[fn(context, item) for item in items], on several cores when there are several."""
    global _CONTEXT
    n = min(workers(), len(items))
    if n <= 1 or _IN_WORKER or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(context, item) for item in items]
    _CONTEXT = context
    try:
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_call, [(fn, item) for item in items]))
    finally:
        _CONTEXT = None
_IN_WORKER = False
