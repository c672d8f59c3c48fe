"""Max-min fair sharing against hand-solved cases and the bottleneck characterisation.

A rate vector is max-min fair iff it is feasible and every flow has a
bottleneck link: one that is saturated and on which no flow has a higher rate
(Bertsekas & Gallager, Data Networks, Sec. 6.5.2). The property test checks
exactly that, and compares with a plain-Python progressive filling.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.flows import (csr_from_lists, link_loads, max_min_rates, phase_time,
                              progressive_filling)


def rates_of(link_lists, capacity):
    return max_min_rates(*csr_from_lists(link_lists), np.asarray(capacity, dtype=float))


def reference_rates(link_lists, capacity):
    """Textbook progressive filling, one flow and one link at a time."""
    frozen = [not links or all(capacity[l] == np.inf for l in links) for links in link_lists]
    rate = [np.inf if f else 0.0 for f in frozen]
    while not all(frozen):
        load = {l: 0.0 for l in range(len(capacity))}
        count = {l: 0 for l in range(len(capacity))}
        for f, links in enumerate(link_lists):
            for l in links:
                load[l] += rate[f]
                count[l] += 0 if frozen[f] else 1
        step = min((capacity[l] - load[l]) / count[l] for l in count
                   if count[l] and capacity[l] < np.inf)
        for f in range(len(link_lists)):
            rate[f] += 0 if frozen[f] else step
        for l in count:
            if count[l] and capacity[l] < np.inf and \
                    capacity[l] - (load[l] + step * count[l]) <= 1e-12 * capacity[l]:
                for f, links in enumerate(link_lists):
                    frozen[f] = frozen[f] or l in links
    return np.array(rate)


def test_csr_from_lists_layout():
    ptr, links = csr_from_lists([[3, 1], [], [0]])
    assert ptr.tolist() == [0, 2, 2, 3] and links.tolist() == [3, 1, 0]
    assert ptr.dtype == links.dtype == np.int64


def test_two_flows_on_one_link_get_half_each():
    assert rates_of([[0], [0]], [10.0]).tolist() == [5.0, 5.0]


def test_disjoint_flows_get_full_capacity():
    assert rates_of([[0], [1], [2]], [1.0, 2.0, 3.0]).tolist() == [1.0, 2.0, 3.0]


def test_line_network_all_flows_get_half():
    """A crosses links 0 and 1, B link 0, C link 1; unit capacities: all 0.5."""
    rates = rates_of([[0, 1], [0], [1]], [1.0, 1.0])
    np.testing.assert_allclose(rates, [0.5, 0.5, 0.5], rtol=1e-12)


def test_unequal_capacities_give_two_levels():
    """Capacities [1, 3]; A:{0,1}, B:{0}, C:{1}, D:{1}.

    Link 0 fills first at 1/2 (A, B freeze at 0.5); link 1 has 3 - 0.5 = 2.5
    left for C and D: 1.25 each. Two levels, two iterations.
    """
    ptr, links = csr_from_lists([[0, 1], [0], [1], [1]])
    rates, iterations = progressive_filling(ptr, links, np.array([1.0, 3.0]))
    np.testing.assert_allclose(rates, [0.5, 0.5, 1.25, 1.25], rtol=1e-12)
    assert iterations == 2


def test_equal_rate_links_fill_in_one_iteration():
    ptr, links = csr_from_lists([[0], [1], [1], [2, 3]])
    rates, iterations = progressive_filling(ptr, links, np.array([1.0, 2.0, 1.0, 5.0]))
    np.testing.assert_allclose(rates, [1.0, 1.0, 1.0, 1.0], rtol=1e-12)
    assert iterations == 1


def test_infinite_capacity_links_never_bottleneck():
    rates = rates_of([[0, 1], [1], [0], []], [np.inf, 4.0])
    assert rates.tolist() == [2.0, 2.0, np.inf, np.inf]


def test_zero_capacity_link_gives_rate_zero():
    assert rates_of([[0, 1], [1]], [0.0, 4.0]).tolist() == [0.0, 4.0]


def test_empty_flow_set():
    ptr, links = csr_from_lists([])
    assert max_min_rates(ptr, links, np.ones(3)).shape == (0,)
    assert phase_time(ptr, links, np.ones(3), np.zeros(0)) == 0.0
    assert link_loads(ptr, links, np.zeros(0), 3).tolist() == [0.0, 0.0, 0.0]


def test_bad_input_names_the_argument():
    ptr, links = csr_from_lists([[0, 5]])
    with pytest.raises(ValueError, match="flow_links"):
        max_min_rates(ptr, links, np.ones(3))
    with pytest.raises(ValueError, match="capacity"):
        max_min_rates(ptr, np.array([0, 1]), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="flow_ptr"):
        max_min_rates(np.array([0, 2, 1]), np.array([0, 1]), np.ones(2))
    with pytest.raises(ValueError, match="flow_bytes"):
        phase_time(ptr, np.array([0, 1]), np.ones(2), np.ones(2))


def test_phase_time_of_equal_flows_is_bytes_over_fair_share():
    """n equal flows through one link of capacity C, S bytes each: n S / C."""
    n, size, cap = 7, 3e6, 2e9
    ptr, links = csr_from_lists([[0, 1 + f] for f in range(n)])
    capacity = np.array([cap] + [10 * cap] * n)
    assert phase_time(ptr, links, capacity, np.full(n, size)) == pytest.approx(n * size / cap,
                                                                               rel=1e-12)


def test_phase_time_is_the_slowest_flow_at_its_initial_rate():
    """Rates 0.5, 0.5, 1.25, 1.25 (two-level case) with bytes 1, 2, 5, 1: max(2, 4, 4, 0.8)."""
    ptr, links = csr_from_lists([[0, 1], [0], [1], [1]])
    t = phase_time(ptr, links, np.array([1.0, 3.0]), np.array([1.0, 2.0, 5.0, 1.0]))
    assert t == pytest.approx(4.0, rel=1e-12)
    # Zero-byte flows take no time, even on a dead link; no links at all: no time.
    ptr, links = csr_from_lists([[0], []])
    assert phase_time(ptr, links, np.array([0.0]), np.array([0.0, 5.0])) == 0.0


def test_link_loads_sum_bytes_per_link():
    ptr, links = csr_from_lists([[0, 2], [2], [1, 2, 3]])
    loads = link_loads(ptr, links, np.array([1.0, 10.0, 100.0]), 5)
    assert loads.tolist() == [1.0, 100.0, 111.0, 100.0, 0.0]
    # Every byte is counted once per link it crosses.
    assert loads.sum() == pytest.approx(1 * 2 + 10 * 1 + 100 * 3)


instances = st.integers(1, 10).flatmap(lambda n_links: st.tuples(
    st.lists(st.lists(st.integers(0, n_links - 1), unique=True, max_size=n_links), max_size=30),
    st.lists(st.one_of(st.floats(0.1, 100.0), st.just(np.inf)),
             min_size=n_links, max_size=n_links)))


@settings(max_examples=300, deadline=None)
@given(instances)
def test_rates_are_feasible_and_every_flow_has_a_bottleneck(instance):
    link_lists, capacity = instance
    capacity = np.array(capacity)
    ptr, links = csr_from_lists(link_lists)
    rates = max_min_rates(ptr, links, capacity)
    finite_rates = np.where(np.isinf(rates), 0.0, rates)
    load = np.bincount(links, weights=np.repeat(finite_rates, np.diff(ptr)),
                       minlength=capacity.size)
    assert np.all(load <= capacity * (1 + 1e-9))
    for f, flow in enumerate(link_lists):
        finite = [l for l in flow if np.isfinite(capacity[l])]
        if not finite:
            assert rates[f] == np.inf
            continue
        assert any(load[l] >= capacity[l] * (1 - 1e-9)
                   and all(rates[g] <= rates[f] * (1 + 1e-9)
                           for g, other in enumerate(link_lists) if l in other)
                   for l in finite), f"flow {f} has no bottleneck link"
    np.testing.assert_allclose(rates, reference_rates(link_lists, capacity), rtol=1e-9)
    _, iterations = progressive_filling(ptr, links, capacity)
    levels = np.unique(np.round(rates[np.isfinite(rates)], 9)).size
    assert iterations <= levels


@pytest.mark.slow    # about 1 s here
def test_large_instance_runs_and_is_feasible():
    """100k flows over 20 links each of 20k links (thousands of levels); not timed."""
    rng = np.random.default_rng(0)
    n_flows, per_flow, n_links = 100_000, 20, 20_000
    # One link from each of 20 disjoint blocks: distinct links within a flow.
    links = (np.arange(per_flow) * (n_links // per_flow)
             + rng.integers(0, n_links // per_flow, (n_flows, per_flow))).ravel()
    ptr = np.arange(n_flows + 1, dtype=np.int64) * per_flow
    capacity = rng.uniform(1.0, 10.0, n_links)
    rates = max_min_rates(ptr, links, capacity)
    load = link_loads(ptr, links, rates, n_links)
    assert np.all(load <= capacity * (1 + 1e-9))
    assert np.all(rates > 0) and np.all(np.isfinite(rates))
