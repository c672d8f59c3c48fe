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
