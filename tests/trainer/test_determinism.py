"""A checkpoint records what a bit-identical continuation depends on, and a resume
under another setup says that its continuation may not be bit-identical."""

import json
from pathlib import Path

import numba
import numpy as np
import pytest

from perfmodel.model import ModelSpec
from trainer import checkpoint as ckpt
from trainer import determinism
from trainer.distributed import SingleProcess
from trainer.optim import AdamWConfig
from trainer.record import measurement_record
from trainer.train import Trainer, TrainSettings, train

MODEL = ModelSpec(layers=1, hidden=16, heads=2, vocab=256, seq=16, name="micro")
TOKENS = np.random.default_rng(1).integers(0, 256, 4000).astype(np.uint16)
SETTINGS = TrainSettings(steps=4, micro_batch=2, global_batch=4, val_fraction=0.0,
                         optimizer=AdamWConfig(lr=1e-3))


@pytest.fixture
def threads():
    """Set Numba's threads for a test and put them back after."""
    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)


def resumed(folder: Path) -> tuple[Trainer, list]:
    events = []
    trainer = Trainer(MODEL, TOKENS, SETTINGS)
    result = train(trainer, resume=folder, progress=lambda kind, data: events.append((kind, data)))
    return trainer, result, [d for k, d in events if k == "resume"]


def test_a_checkpoint_records_threads_ranks_and_libraries(tmp_path):
    path = train(Trainer(MODEL, TOKENS, SETTINGS), checkpoint_dir=tmp_path, stop_after=2).checkpoint
    env = ckpt.load(path).determinism
    assert env == determinism.environment(1)
    assert env["threads"] == numba.get_num_threads() and env["ranks"] == 1
    assert env["numpy"] == np.__version__ and env["numba"] == numba.__version__
    assert env["blas"] and all("threads" in b for b in env["blas"])


def test_the_same_setup_continues_bit_identically_and_says_nothing(tmp_path):
    train(Trainer(MODEL, TOKENS, SETTINGS), checkpoint_dir=tmp_path, stop_after=2)
    trainer, _, events = resumed(tmp_path)
    assert trainer.continuation["bit_identical"] == "expected"
    assert trainer.continuation["differences"] == []
    assert events and events[0]["note"] is None


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_another_thread_count_is_said_on_resume_and_in_the_record(tmp_path, threads):
    threads(1)
    train(Trainer(MODEL, TOKENS, SETTINGS), checkpoint_dir=tmp_path, stop_after=2)
    threads(2)
    trainer, result, events = resumed(tmp_path)
    assert trainer.continuation["bit_identical"] == "not guaranteed"
    assert "threads 1 -> 2" in trainer.continuation["differences"]
    note = events[0]["note"]
    assert "\n" not in note and "threads 1 -> 2" in note and "may not be bit-identical" in note
    record = measurement_record(trainer, result, 2, SingleProcess(), "tokens")
    assert record["determinism"]["resume"]["bit_identical"] == "not guaranteed"
    assert record["determinism"]["environment"]["threads"] == 2
    json.dumps(record, allow_nan=False)


def test_a_checkpoint_without_the_record_is_unknown(tmp_path):
    path = Path(train(Trainer(MODEL, TOKENS, SETTINGS), checkpoint_dir=tmp_path,
                      stop_after=2).checkpoint)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]))
    del meta["determinism"]                       # as checkpoints written before it
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    trainer, _, events = resumed(tmp_path)
    assert trainer.continuation["bit_identical"] == "unknown"
    assert "unknown" in events[0]["note"]


def test_differences_name_each_field():
    env = determinism.environment(1)
    other = dict(env, threads=env["threads"] + 1, blas=["mkl 2024"], ranks=4)
    diffs = determinism.differences(env, other)
    assert [d.split()[0] for d in diffs] == ["threads", "ranks", "blas"]
    assert determinism.differences(None, env) is None
    assert determinism.verdict(None) == "unknown" and determinism.verdict([]) == "expected"
