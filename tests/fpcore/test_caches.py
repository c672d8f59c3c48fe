"""Module caches, registered by group, emptied by one public reset."""

import pytest

from fpcore import caches


def test_reset_empties_the_groups_named_and_only_them(monkeypatch):
    monkeypatch.setattr(caches, "_CLEARS", {g: [] for g in caches.GROUPS})
    calls = []

    @caches.cached("flows", maxsize=None)
    def square(x):
        calls.append(x)
        return x * x

    store = caches.register("model", {"k": 1})
    square(3), square(3)
    assert calls == [3]
    caches.reset("model")
    assert store == {} and (square(3), calls) == (9, [3])     # flows kept
    caches.reset("flows")
    square(3)
    assert calls == [3, 3]
    store["k"] = 2
    caches.reset()                                             # every group
    assert store == {}


def test_an_unknown_group_is_refused():
    with pytest.raises(ValueError, match="network, flows, model, presets"):
        caches.reset("everything")


def test_the_model_registers_its_caches():
    import perfmodel.estimator  # noqa: F401  (registers network_for and the priced collectives)
    import topologies.flownet  # noqa: F401
    assert caches._CLEARS["network"] and caches._CLEARS["flows"] and caches._CLEARS["model"]



def test_a_kept_hash_is_the_fields_hash_kept_once_and_never_pickled():
    import pickle
    from dataclasses import dataclass, field
    from fpcore.caches import KeptHash
    from perfmodel.layout import Layout

    @dataclass(frozen=True)
    class Spec(KeptHash):
        a: int
        b: str
        note: str = field(default="", compare=False)
        __hash__ = KeptHash.__hash__

    s = Spec(1, "x", note="ignored")
    assert hash(s) == hash((1, "x")) == hash(Spec(1, "x"))
    assert s.__dict__["_hash"] == hash(s)
    layout = Layout(tp=2, pp=2, dp=4, global_batch=8)
    hash(layout)
    assert "_hash" in layout.__dict__            # kept, and left out of the pickle
    copy = pickle.loads(pickle.dumps(layout))
    assert "_hash" not in copy.__dict__ and copy == layout and hash(copy) == hash(layout)
