"""Run independent pieces of a sweep on the machine's cores.

Forked worker processes inherit the loaded modules and the ``context`` (model and
system) without pickling it; each task is one item of ``items`` and returns a
picklable result. ``FUGAKUPERF_WORKERS`` sets the number of workers (1: run in
this process). On a platform without fork, or with one core or one item, the
work runs here.

A worker's error reaches the caller as raised (``SpecError`` pickles), and workers
end with their parent: on Linux the kernel signals them when it dies
(``PR_SET_PDEATHSIG``), elsewhere a watcher thread notices the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
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


def _end_with_parent(parent: int) -> None:
    """In a worker: exit when the process that started the pool exits."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:        # it died before the call
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _call(fn_and_item):
    global _IN_WORKER
    _IN_WORKER = True                 # a worker's own sweeps run in the worker
    fn, item = fn_and_item
    return fn(_CONTEXT, item)


def run_serially() -> None:
    """From now on this process maps items itself (it is one of a pool's workers, and
    the pool already has every core)."""
    global _IN_WORKER
    _IN_WORKER = True


def process_pool(n: int) -> ProcessPoolExecutor:
    """``n`` forked worker processes that end with this one."""
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                               initializer=_end_with_parent, initargs=(os.getpid(),))


def map_items(fn: Callable, items: Sequence, *, context) -> list:
    """[fn(context, item) for item in items], on several cores when there are several."""
    global _CONTEXT
    n = min(workers(), len(items))
    if n <= 1 or _IN_WORKER or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(context, item) for item in items]
    _CONTEXT = context
    try:
        with process_pool(n) as pool:
            return list(pool.map(_call, [(fn, item) for item in items]))
    finally:
        _CONTEXT = None
_IN_WORKER = False
