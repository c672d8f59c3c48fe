"""The alpha-beta fit recovers the parameters that generated synthetic measurements."""

import numpy as np
import pytest

from calibration.collectives import (Samples, default_sizes, fit_collectives,
                                     measure_collectives, network_from_fits, quick_sizes,
                                     residuals, round_size)
from fpcore.errors import SpecError
from topologies import JobShape
from topologies.fitted import FITTED_OPS, FittedCollectives, collective_seconds

TRUTH = {"allreduce": (5e-6, 4e9), "allgather": (3e-6, 6e9),
         "reduce-scatter": (8e-6, 2e9), "p2p": (1.5e-6, 10e9)}
RANKS = 4


def synthetic(noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Records as measure_collectives returns them, times from the model (times noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for op, (alpha, bw) in TRUTH.items():
        ranks = 2 if op == "p2p" else RANKS
        for size in default_sizes():
            nbytes = round_size(size, RANKS)
            seconds = collective_seconds(op, ranks, nbytes, alpha, bw)
            rows.append({"kind": "collective", "op": op, "ranks": ranks, "bytes": nbytes,
                         "seconds": seconds * (1 + noise * rng.standard_normal())})
    return rows


def test_sizes():
    assert default_sizes() == [8 * 4**k for k in range(13)] + [256 * 2**20]   # 8 B ... 256 MiB
    assert quick_sizes() == [8, 128, 2048, 32768, 524288, 8388608]  # 8 B ... 8 MiB
    assert round_size(8, 2) == 8 and round_size(8, 3) == 12 and round_size(8, 4) == 16
    assert round_size(2**20, 3) % (4 * 3) == 0


def test_noiseless_fit_recovers_alpha_and_bandwidth_within_1_percent():
    fits = fit_collectives(synthetic())
    assert set(fits) == set(FITTED_OPS)
    for op, (alpha, bw) in TRUTH.items():
        f = fits[op]
        assert f["status"] > 0, f
        assert f["alpha_s"] == pytest.approx(alpha, rel=0.01)
        assert f["bandwidth_bytes_per_s"] == pytest.approx(bw, rel=0.01)
        assert f["points"] == len(default_sizes())
        assert f["ranks"] == (2 if op == "p2p" else RANKS)
        assert f["residual_norm"] < 1e-6 and f["max_abs_log_error"] < 1e-6


def test_fit_with_5_percent_noise_is_within_10_percent():
    fits = fit_collectives(synthetic(noise=0.05, seed=1))
    for op, (alpha, bw) in TRUTH.items():
        f = fits[op]
        assert f["status"] > 0, f
        assert f["alpha_s"] == pytest.approx(alpha, rel=0.10), op
        assert f["bandwidth_bytes_per_s"] == pytest.approx(bw, rel=0.10), op
        assert 0.01 < f["max_abs_log_error"] < 0.25      # the noise is seen, not hidden


def test_residuals_vanish_at_the_truth():
    alpha, bw = TRUTH["allreduce"]
    nbytes = np.array([8.0, 1e6, 1e8])
    data = Samples("allreduce", 4, nbytes, collective_seconds("allreduce", 4, nbytes, alpha, bw))
    assert np.abs(residuals(np.log([alpha, bw]), data)).max() < 1e-12
    assert np.abs(residuals(np.log([2 * alpha, bw]), data)).max() > 0.1


def test_the_network_from_the_fits_predicts_the_measurements():
    rows = synthetic()
    net = network_from_fits(fit_collectives(rows))
    assert isinstance(net, FittedCollectives)
    for r in rows:
        job = JobShape(1, 1, r["ranks"])
        cost = net.p2p("dp", job, r["bytes"]) if r["op"] == "p2p" else \
            net.collective(r["op"], "dp", job, r["bytes"])
        assert cost.seconds == pytest.approx(r["seconds"], rel=1e-4)


def test_mixed_rank_counts_are_refused_naming_the_field():
    rows = synthetic() + [{"kind": "collective", "op": "allreduce", "ranks": 8, "bytes": 64,
                           "seconds": 1e-5}]
    with pytest.raises(SpecError, match="several rank counts") as e:
        fit_collectives(rows)
    assert e.value.field == "measurements"


@pytest.mark.parametrize("bad, field", [
    ({"op": "bcast"}, "measurements[0].op"),
    ({"seconds": 0.0}, "measurements[0].seconds"),
    ({"ranks": 1}, "measurements[0].ranks"),
    ({"host": "x"}, "measurements[0].host"),
])
def test_bad_records_are_refused_naming_the_field(bad, field):
    rows = synthetic()
    rows[0] = {**rows[0], **bad}
    with pytest.raises(SpecError) as e:
        fit_collectives(rows)
    assert e.value.field == field


def test_other_kinds_are_skipped_but_one_size_is_not_enough():
    rows = [{"kind": "kernel", "name": "matmul"}] + [
        {"kind": "collective", "op": "p2p", "ranks": 2, "bytes": 8, "seconds": 1e-6}]
    with pytest.raises(SpecError, match="2 distinct sizes"):
        fit_collectives(rows)


def test_a_failed_fit_is_not_turned_into_a_network():
    with pytest.raises(SpecError) as e:
        network_from_fits({"p2p": {"alpha_s": 1e-6, "bandwidth_bytes_per_s": 1e9,
                                   "status": 0, "message": "max_nfev"}})
    assert e.value.field == "fits.p2p.status"


def test_one_rank_cannot_measure_communication():
    class One:
        def Get_size(self):
            return 1
    with pytest.raises(SpecError) as e:
        measure_collectives(One())
    assert e.value.field == "comm"


def test_the_models_messages_are_its_tp_all_reduce_and_pipeline_send():
    """Fugaku-LLM, one sequence of 2,048 tokens x 5,184 x 4 bytes: the TP all-reduce
    (42.5 MB) and a TP rank's share of a pipeline send on each split that divides its 36
    heads (1, 2, 4, 6); none without a model."""
    from calibration.measure import message_sizes
    from perfmodel.presets import load_model
    act = 2048 * 5184 * 4
    assert message_sizes(load_model("fugaku-llm-13b"), quick=False) == sorted(
        {act, act // 2, act // 4, act // 6})
    assert message_sizes(load_model("fugaku-llm-13b"), quick=True) == [act // 6, act]
    assert message_sizes(None, quick=True) == []
