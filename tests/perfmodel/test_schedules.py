"""Pipeline schedules as plain data: exact step orders, counts, and dependencies.

The step lists are checked against the published orders (GPipe: Huang et al. 2019;
1F1B: Narayanan et al. 2021; interleaved 1F1B: Megatron-LM's
forward_backward_pipelining_with_interleaving), and every schedule is executed
against its own producer() dependencies by a tiny topological loop written here,
independent of SimPy, to show it never deadlocks.
"""

import pytest
from hypothesis import given, settings, strategies as st

from fpcore.errors import SpecError
from perfmodel.schedules import Step, gpipe, interleaved, one_f_one_b, producer, schedule


def names(steps):
    return " ".join(str(s) for s in steps)


def leading_forwards(steps):
    """Forwards before the first backward."""
    n = 0
    for s in steps:
        if s.kind != "F":
            break
        n += 1
    return n


def execute(steps, p, v):
    """Run every stage's list in order, a step only once its producer has run.

    Returns the global execution order, or raises AssertionError on a deadlock
    (no stage can make progress while some still have steps)."""
    pos = [0] * p
    done = set()
    order = []
    while any(pos[i] < len(steps[i]) for i in range(p)):
        progressed = False
        for i in range(p):
            while pos[i] < len(steps[i]):
                step = steps[i][pos[i]]
                dep = producer(step, i, p, v)
                if dep is not None and dep not in done:
                    break
                done.add((i, step))
                order.append((i, step))
                pos[i] += 1
                progressed = True
        if not progressed:
            stuck = {i: str(steps[i][pos[i]]) for i in range(p) if pos[i] < len(steps[i])}
            raise AssertionError(f"deadlock: stages wait at {stuck}")
    return order


# ------------------------------------------------------------------------- 1F1B
def test_1f1b_p4_m6_exact_orders():
    """Stage i: p - i - 1 warm-up forwards, then F/B in turn, then the cool-down Bs."""
    got = [names(s) for s in schedule("1f1b", 4, 6)]
    assert got == [
        "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5",
        "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5",
        "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5",
        "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5",
    ]


@pytest.mark.parametrize("p,m", [(1, 1), (1, 5), (2, 1), (4, 2), (4, 4), (4, 6), (8, 3), (8, 16)])
def test_1f1b_warmup_and_one_f_one_b_per_micro_batch(p, m):
    for i in range(p):
        steps = one_f_one_b(p, m, i)
        warmup = min(p - i - 1, m)
        # warm-up forwards, then (if any micro-batch is left) the first steady F, then B0
        assert steps[:warmup] == [Step("F", j) for j in range(warmup)]
        if warmup < m:
            assert steps[warmup:warmup + 2] == [Step("F", warmup), Step("B", 0)]
        assert leading_forwards(steps) == min(p - i, m)
        assert sorted(steps, key=lambda s: (s.kind, s.micro_batch)) == \
            [Step("B", j) for j in range(m)] + [Step("F", j) for j in range(m)]
        for j in range(m):
            assert steps.index(Step("B", j)) > steps.index(Step("F", j))
        # forwards and backwards each in micro-batch order
        assert [s.micro_batch for s in steps if s.kind == "F"] == list(range(m))
        assert [s.micro_batch for s in steps if s.kind == "B"] == list(range(m))


# ------------------------------------------------------------------------ GPipe
@pytest.mark.parametrize("p,m", [(1, 1), (2, 3), (4, 6), (8, 2)])
def test_gpipe_all_forwards_then_all_backwards(p, m):
    expected = [Step("F", j) for j in range(m)] + [Step("B", j) for j in range(m)]
    assert schedule("gpipe", p, m) == [expected] * p
    assert all(gpipe(p, m, i) == expected for i in range(p))


def test_gpipe_p2_m3_order():
    assert names(gpipe(2, 3, 0)) == "F0 F1 F2 B0 B1 B2"


# ------------------------------------------------------------------ interleaved
def test_interleaved_p2_m4_v2_exact_orders():
    """Megatron-LM's order: forward k runs chunk (k // p) % v of micro-batch
    (k // (p v)) p + k % p; backward k runs chunk v - 1 - (k // p) % v.
    Warm-up: stage 0 2 (p - 1) + (v - 1) p = 4, stage 1 (v - 1) p = 2."""
    got = [names(s) for s in schedule("interleaved", 2, 4, 2)]
    assert got == [
        "F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3",
        "F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3",
    ]


@pytest.mark.parametrize("p,m,v", [(2, 2, 2), (2, 4, 2), (2, 6, 3), (4, 4, 2), (4, 8, 2),
                                   (4, 8, 3), (3, 3, 4), (6, 12, 2), (8, 8, 2)])
def test_interleaved_every_chunk_of_every_micro_batch_once_each_way(p, m, v):
    for i in range(p):
        steps = interleaved(p, m, v, i)
        assert len(steps) == len(set(steps)) == 2 * m * v
        for j in range(m):
            for c in range(v):
                f, b = Step("F", j, c), Step("B", j, c)
                assert steps.count(f) == steps.count(b) == 1
                assert steps.index(b) > steps.index(f)
        # warm-up count: the first backward follows the warm-up forwards and one
        # steady-state forward (all m v forwards when the warm-up covers them)
        warmup = min(2 * (p - i - 1) + (v - 1) * p, m * v)
        assert leading_forwards(steps) == min(warmup + 1, m * v)
        # the last step on each stage is the backward of the last chunk 0 micro-batch
        assert steps[-1] == Step("B", m - 1, 0)


@pytest.mark.parametrize("p,m", [(2, 3), (4, 6), (4, 2), (3, 4)])
def test_interleaved_needs_micro_batches_divisible_by_pp(p, m):
    with pytest.raises(ValueError, match=rf"micro-batches \({m}\) divisible by pp \({p}\)"):
        interleaved(p, m, 2, 0)
    with pytest.raises(ValueError):
        schedule("interleaved", p, m, 2)


def test_unknown_schedule_is_an_error():
    with pytest.raises(SpecError, match="must be one of gpipe, 1f1b, interleaved, zb-h1, "
                                        "zb-h2, dualpipev, dualpipe; got 'zero-bubble'"):
        schedule("zero-bubble", 4, 8)


def test_step_names():
    assert str(Step("F", 3)) == "F3"
    assert str(Step("B", 0, 0)) == "B0"
    assert str(Step("B", 5, 2)) == "B5.2"


# --------------------------------------------------------------------- producer
@pytest.mark.parametrize("p,v", [(1, 1), (4, 1), (4, 2), (3, 3)])
def test_producer_chain_through_virtual_stages(p, v):
    last = p * v - 1
    for mb in (0, 5):
        for c in range(v):
            for i in range(p):
                virtual = c * p + i
                f, b = Step("F", mb, c), Step("B", mb, c)
                if virtual == 0:
                    assert producer(f, i, p, v) is None
                else:
                    prev = virtual - 1
                    assert producer(f, i, p, v) == (prev % p, Step("F", mb, prev // p))
                if virtual == last:
                    assert producer(b, i, p, v) is None
                else:
                    nxt = virtual + 1
                    assert producer(b, i, p, v) == (nxt % p, Step("B", mb, nxt // p))


def test_producer_examples_written_out():
    # plain pipeline, p = 4
    assert producer(Step("F", 2), 0, 4, 1) is None
    assert producer(Step("F", 2), 3, 4, 1) == (2, Step("F", 2))
    assert producer(Step("B", 2), 3, 4, 1) is None
    assert producer(Step("B", 2), 1, 4, 1) == (2, Step("B", 2))
    # interleaved wrap, p = 4, v = 2: chunk 1 of stage 0 is virtual stage 4
    assert producer(Step("F", 3, 1), 0, 4, 2) == (3, Step("F", 3, 0))
    assert producer(Step("B", 3, 0), 3, 4, 2) == (0, Step("B", 3, 1))
    assert producer(Step("B", 3, 1), 3, 4, 2) is None          # virtual stage 7, the last
    assert producer(Step("F", 3, 0), 0, 4, 2) is None


# ------------------------------------------------------- executability (property)
@st.composite
def pipelines(draw):
    p = draw(st.integers(1, 6))
    m = draw(st.integers(1, 12))
    options = [("1f1b", 1), ("gpipe", 1)]
    if m % p == 0:
        options += [("interleaved", 2), ("interleaved", 3)]
    name, v = draw(st.sampled_from(options))
    return name, p, m, v


@settings(max_examples=200, deadline=None)
@given(pipelines())
def test_every_schedule_runs_to_completion_respecting_dependencies(case):
    name, p, m, v = case
    steps = schedule(name, p, m, v)
    order = execute(steps, p, v)
    assert len(order) == 2 * p * m * v
    # each stage ran its own list, in its own order
    for i in range(p):
        assert [s for j, s in order if j == i] == steps[i]


def test_execute_detects_a_deadlock():
    """The checker itself can fail: stage 0 of a p=2 1F1B run backwards first waits
    for stage 1's B1, which waits (in stage 1's order) behind F0, which needs stage 0."""
    steps = schedule("1f1b", 2, 2)
    with pytest.raises(AssertionError, match="deadlock"):
        execute([steps[0][::-1], steps[1]], 2, 1)
