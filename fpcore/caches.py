"""Module caches, each registered under a group, and one public way to empty them.

Pricing a layout reuses work across calls: networks built for a system, routed flow
patterns, op lists and their costs, presets read from disk. Each such cache is made
with ``cached`` (an ``functools.lru_cache``) or registered with ``register`` (any
store with ``clear()``), under a group:

* ``network``: network models, job allocations and placements, and the collectives
  they priced;
* ``flows``: routed flow patterns and their max-min costs (topologies.flownet);
* ``model``: op lists, their costs and memory;
* ``presets``: preset files as read.

``reset()`` empties every cache, ``reset("flows")`` one group: a benchmark that prices
a fresh job, or a test that must not see an earlier answer, calls it instead of
reaching into a module's private names.

The specs that key these caches (a model, a layout, a system) keep their hash
(``KeptHash``): it is computed once, not at every lookup.
"""

from __future__ import annotations

import dataclasses
import operator
from functools import lru_cache
from typing import Callable

GROUPS = ("network", "flows", "model", "presets")
_CLEARS: dict[str, list[Callable[[], None]]] = {g: [] for g in GROUPS}


def _group(group: str) -> list:
    if group not in _CLEARS:
        raise ValueError(f"cache group must be one of {', '.join(GROUPS)}; got {group!r}")
    return _CLEARS[group]


def cached(group: str, maxsize: int | None = 128):
    """``functools.lru_cache(maxsize)``, registered under ``group``."""
    clears = _group(group)

    def wrap(fn):
        wrapped = lru_cache(maxsize=maxsize)(fn)
        clears.append(wrapped.cache_clear)
        return wrapped
    return wrap


def register(group: str, store):
    """Register ``store`` (anything with ``clear()``) under ``group``; returns it."""
    _group(group).append(store.clear)
    return store


def reset(*groups: str) -> None:
    """Empty the caches of ``groups`` (every group when none is named)."""
    for group in groups or GROUPS:
        for clear in _group(group):
            clear()


class KeptHash:
    """A frozen dataclass that keys many caches: the hash of its compared fields is
    computed once and kept, and left out of a pickle (a string's hash differs between
    processes). A frozen dataclass makes its own ``__hash__`` unless its class body
    defines one, so the class says ``__hash__ = KeptHash.__hash__``."""

    def __hash__(self):
        kept = self.__dict__.get("_hash")
        if kept is None:
            kept = self.__dict__["_hash"] = hash(_compared(type(self))(self))
        return kept

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state


@lru_cache(maxsize=None)
def _compared(cls) -> Callable:
    """The values a dataclass's equality compares, as one tuple."""
    names = [f.name for f in dataclasses.fields(cls) if f.compare]
    return operator.attrgetter(*names) if len(names) > 1 else \
        (lambda obj: (getattr(obj, names[0]),))
