"""The trainer knows what it will allocate, and refuses a run the machine cannot hold
before allocating anything."""

import numpy as np
import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model
from trainer import memory
from trainer.train import Trainer, TrainSettings

MODEL = ModelSpec(layers=2, hidden=32, heads=4, vocab=256, seq=32, name="tiny")
TOKENS = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint16)


def test_the_estimate_is_what_the_trainer_allocates():
    t = Trainer(MODEL, TOKENS, TrainSettings(steps=1, micro_batch=3, val_fraction=0.0))
    need = memory.training_need(MODEL, 3).parts
    assert need["parameters"] == t.params.buffer.nbytes == 4 * MODEL.params
    assert need["gradients"] == t.grads.buffer.nbytes
    assert need["AdamW state"] == t.optimizer.m.nbytes + t.optimizer.v.nbytes
    arrays = [a for a in vars(t.acts).values() if isinstance(a, np.ndarray)]
    arrays += [a for a in vars(t.acts.attention).values()
               if isinstance(a, np.ndarray) and a.dtype == np.float32]   # (not its tile mask)
    assert need["activations"] + need["backward temporaries"] == sum(a.nbytes for a in arrays)


def test_fugaku_llm_13b_needs_its_16_bytes_per_parameter_and_more():
    model = load_model("fugaku-llm-13b")
    need = memory.training_need(model, 1)
    assert need.parts["parameters"] + need.parts["gradients"] + need.parts["AdamW state"] \
        == 16 * model.params
    assert need.total > 16 * model.params


def test_a_run_too_large_is_refused_before_allocating(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: (10**6, "MemAvailable"))
    with pytest.raises(SpecError) as err:
        Trainer(MODEL, TOKENS, TrainSettings(steps=1, micro_batch=2, val_fraction=0.0))
    message = err.value.message
    assert err.value.field == "memory"
    need = memory.training_need(MODEL, 2)
    assert memory.gb(need.total) in message and "1.00 MB available (MemAvailable)" in message
    assert "parameters" in message and "activations" in message


def test_ranks_on_one_node_share_its_memory(monkeypatch):
    need = memory.training_need(MODEL, 2)
    monkeypatch.setattr(memory, "available_bytes", lambda: (int(need.total * 1.5), "test"))
    memory.check_fits(need, "one rank")
    with pytest.raises(SpecError, match="for the 2 ranks on this node"):
        memory.check_fits(need, "two ranks", ranks_here=2)


def test_the_machine_says_what_it_has():
    have, source = memory.available_bytes()
    assert have is None or (have > 0 and source)
