"""The training loop: learning on real text, exact resume, stopping on NaN, and
checkpoints that refuse what they cannot trust."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from trainer import checkpoint as ckpt
from trainer.data import load_tokens
from trainer.optim import AdamWConfig
from trainer.train import Trainer, TrainingStopped, TrainSettings, train

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
TINY = ModelSpec(layers=2, hidden=32, heads=4, vocab=256, seq=32, name="tiny")


def unigram_entropy_nats(tokens):
    p = np.bincount(tokens)[np.bincount(tokens) > 0] / len(tokens)
    return float(-(p * np.log(p)).sum())


def settings(**kw):
    base = dict(steps=6, micro_batch=2, global_batch=4,
                optimizer=AdamWConfig(lr=3e-3, warmup=2), val_fraction=0.0)
    base.update(kw)
    return TrainSettings(**base)


@pytest.mark.slow
def test_loss_on_real_text_falls_well_below_the_unigram_entropy():
    tokens = load_tokens(CORPUS)
    model = ModelSpec(layers=2, hidden=64, heads=4, vocab=256, seq=64, name="small")
    s = TrainSettings(steps=120, micro_batch=8, global_batch=16,
                      optimizer=AdamWConfig(lr=3e-3, warmup=10), val_fraction=0.0)
    result = train(Trainer(model, tokens, s))
    h = unigram_entropy_nats(tokens)                     # 3.39 nats for this corpus
    first = np.mean([r.loss for r in result.steps[:5]])
    last = np.mean([r.loss for r in result.steps[-10:]])
    assert first > 0.95 * np.log(256)                    # starts near uniform
    assert last < 0.8 * h, (last, h)                     # learned more than byte counts


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    tokens = load_tokens(CORPUS)
    full = train(Trainer(TINY, tokens, settings()), checkpoint_dir=tmp_path / "a")
    part = train(Trainer(TINY, tokens, settings()), checkpoint_dir=tmp_path / "b", stop_after=3)
    assert part.steps[-1].step == 3 and Path(part.checkpoint).name == "step_00000003.npz"
    resumed = train(Trainer(TINY, tokens, settings()), checkpoint_dir=tmp_path / "b",
                    resume=tmp_path / "b")
    assert resumed.start_step == 3 and [s.step for s in resumed.steps] == [4, 5, 6]
    assert np.array_equal(full.params, resumed.params)
    a, b = ckpt.load(tmp_path / "a"), ckpt.load(tmp_path / "b")
    assert a.step == b.step == 6
    for name in ("params", "m", "v"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert [s.loss for s in full.steps[3:]] == [s.loss for s in resumed.steps]


def test_resume_refuses_a_different_run(tmp_path):
    tokens = load_tokens(CORPUS)
    train(Trainer(TINY, tokens, settings()), checkpoint_dir=tmp_path, stop_after=1)
    with pytest.raises(SpecError) as err:
        train(Trainer(TINY, tokens, settings(global_batch=8)), resume=tmp_path)
    assert err.value.field == "resume" and "global_batch" in str(err.value)
    with pytest.raises(SpecError, match="model"):
        train(Trainer(TINY.replace(layers=1), tokens, settings()), resume=tmp_path)
    with pytest.raises(SpecError, match="data"):
        train(Trainer(TINY, tokens[:-100], settings()), resume=tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    tokens = load_tokens(CORPUS)
    trainer = Trainer(TINY, tokens, settings(checkpoint_every=2))

    def poison(kind, data):
        if kind == "checkpoint" and data["step"] == 2:
            trainer.params["wte"][:] = np.nan

    with pytest.raises(TrainingStopped, match=r"step 3: loss is nan.*last good checkpoint: .*"
                                              r"step_00000002\.npz"):
        train(trainer, checkpoint_dir=tmp_path, progress=poison)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002.npz"]
    good = ckpt.load(tmp_path)
    assert np.isfinite(good.params).all() and good.step == 2


def test_checkpoints_keep_the_newest_and_write_atomically(tmp_path):
    tokens = load_tokens(CORPUS)
    train(Trainer(TINY, tokens, settings(checkpoint_every=1, keep=2)), checkpoint_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] and \
        sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005.npz", "step_00000006.npz"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "version", "pickled"])
def test_damaged_or_foreign_checkpoints_are_refused_by_name(tmp_path, damage):
    tokens = load_tokens(CORPUS)
    good = Path(train(Trainer(TINY, tokens, settings(steps=1)), checkpoint_dir=tmp_path).checkpoint)
    bad = tmp_path / "step_00000009.npz"
    if damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all")
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:5000])
    elif damage == "foreign":
        np.savez(bad, weights=np.zeros(3))
    elif damage == "version":
        with np.load(good) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["meta"]))
        meta["version"] = 99
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(bad, **arrays)
    elif damage == "pickled":
        np.savez(bad, params=np.array([{"x": 1}], dtype=object), m=np.zeros(1), v=np.zeros(1),
                 meta=np.zeros(1, dtype=np.uint8))
    with pytest.raises(SpecError) as err:
        ckpt.load(tmp_path)                                   # the newest is the bad one
    assert err.value.field == "resume" and "step_00000009.npz" in str(err.value)
    assert zipfile.is_zipfile(good)


def test_gradient_accumulation_equals_one_big_micro_batch():
    # compare the accumulated gradient (Adam would magnify rounding in near-zero ones)
    tokens = load_tokens(CORPUS)
    one = Trainer(TINY, tokens, settings(micro_batch=4, global_batch=4))
    acc = Trainer(TINY, tokens, settings(micro_batch=1, global_batch=4))
    a, b = one.step(), acc.step()
    np.testing.assert_allclose(acc.grads.buffer, one.grads.buffer, rtol=1e-4, atol=1e-7)
    assert abs(a.loss - b.loss) < 1e-5 and abs(a.grad_norm - b.grad_norm) < 1e-5


def test_a_held_out_tail_that_leaves_too_little_to_train_on_is_refused():
    tokens = load_tokens(CORPUS)
    with pytest.raises(SpecError) as err:
        Trainer(TINY, tokens, settings(val_fraction=0.999))
    assert err.value.field == "val_fraction" and "leaves" in err.value.message


def test_a_checkpoint_of_a_different_run_is_refused_even_if_it_omits_its_settings(tmp_path):
    # settings {} used to skip every comparison: a foreign run's state was resumed silently
    tokens = load_tokens(CORPUS)
    path = Path(train(Trainer(TINY, tokens, settings()), checkpoint_dir=tmp_path,
                      stop_after=1).checkpoint)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]))
    meta["settings"] = {}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(SpecError) as err:
        train(Trainer(TINY, tokens, settings(global_batch=8)), resume=tmp_path)
    assert err.value.field == "resume" and "settings.global_batch" in err.value.message
