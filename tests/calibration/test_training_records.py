"""A training run's measurement record feeds the fit (calibrate --add-record)."""

import numpy as np
import pytest

from calibration.fit import prepare
from calibration.measure import records_from_training
from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from trainer.distributed import SingleProcess
from trainer.record import measurement_record
from trainer.timers import Timers
from trainer.train import Trainer, TrainSettings, train


@pytest.fixture(scope="module")
def training_record():
    model = ModelSpec(layers=2, hidden=32, heads=4, vocab=256, seq=32, name="tiny")
    tokens = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint16)
    run = Trainer(model, tokens, TrainSettings(steps=4, micro_batch=2, global_batch=4,
                                               val_fraction=0.0), timers=Timers())
    result = train(run)
    return measurement_record(run, result, 1, SingleProcess(), "tokens")


def test_a_training_record_becomes_kernel_and_step_records(training_record):
    rows = records_from_training(training_record, "run.json")
    kinds = {r["kind"] for r in rows}
    assert kinds == {"trainer-kernel", "step"}
    step, = [r for r in rows if r["kind"] == "step"]
    assert step["micro_batches"] == 2 and step["params"] == training_record["parameters"]
    assert step["seconds"] == min(s["seconds"] for s in training_record["steps"][1:])
    assert "run.json" in step["name"]
    names = {r["name"] for r in rows if r["kind"] == "trainer-kernel"}
    assert "zero_grad+grad_norm+adamw" in names and "attention forward+backward" in names
    assert any(n.startswith("matmul_backward") for n in names)
    # every record can be priced by the fit
    assert len(prepare(rows).measured) == len(rows)


def test_every_ranks_kernels_are_measurements(training_record):
    """A run over two ranks: the second rank's kernel timers become records of their own
    (tagged with the rank), beside rank 0's."""
    rec = dict(training_record)
    assert [part["rank"] for part in rec["ranks"]] == [0]
    rec["ranks"] = rec["ranks"] + [dict(rec["ranks"][0], rank=1)]
    rows = records_from_training(rec, "run.json")
    alone = records_from_training(training_record, "run.json")
    theirs = [r for r in rows if r.get("rank") == 1]
    assert len(theirs) == len([r for r in alone if r["kind"] == "trainer-kernel"]) > 0
    assert all(r["config"].endswith("rank 1") for r in theirs)
    assert len(prepare(rows).measured) == len(rows)


@pytest.mark.parametrize("damage", [lambda r: r.update(kind="other"),
                                    lambda r: r.pop("settings"),
                                    lambda r: r.update(kernels=[{"name": 1}]),
                                    lambda r: r.update(ranks=[{"rank": 1, "kernels": [{}]}]),
                                    lambda r: r.update(ranks=[{"rank": -1, "kernels": []}])])
def test_a_damaged_record_is_refused_by_name(training_record, damage):
    rec = dict(training_record)
    damage(rec)
    with pytest.raises(SpecError) as err:
        records_from_training(rec, "run.json")
    assert err.value.field == "record" and "run.json" in str(err.value)
