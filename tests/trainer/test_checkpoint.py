"""Checkpoints refuse what they cannot trust: every metadata field is checked, every
array's name, shape, dtype and values against the model, and each problem is one
SpecError naming the file and the field (never a KeyError or a TypeError)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from fpcore.errors import SpecError
from hostile import fuzz_settings, mutations
from perfmodel.model import ModelSpec
from trainer import checkpoint as ckpt
from trainer.optim import AdamWConfig
from trainer.train import Trainer, TrainSettings, train

MODEL = ModelSpec(layers=1, hidden=8, heads=2, vocab=256, seq=8, name="micro")
TOKENS = np.random.default_rng(0).integers(0, 256, 2000).astype(np.uint16)


def settings(**kw):
    base = dict(steps=4, micro_batch=2, global_batch=2, val_fraction=0.0,
                optimizer=AdamWConfig(lr=1e-3))
    base.update(kw)
    return TrainSettings(**base)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A checkpoint at step 2 of a 4-step run."""
    folder = tmp_path_factory.mktemp("good")
    result = train(Trainer(MODEL, TOKENS, settings()), checkpoint_dir=folder, stop_after=2)
    return Path(result.checkpoint)


def contents(path: Path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    return json.loads(bytes(arrays.pop("meta")).decode()), arrays


def write(path: Path, meta, arrays: dict, raw_meta: bytes | None = None) -> Path:
    text = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    np.savez(path, **arrays, meta=np.frombuffer(text, dtype=np.uint8))
    return path


def refused(path: Path, field_words: str = "", call=ckpt.load) -> str:
    with pytest.raises(SpecError) as err:
        call(path)
    assert err.value.field == "resume", err.value
    assert str(path) in err.value.message, err.value
    assert field_words in err.value.message, err.value
    return err.value.message


# ---------------------------------------------------------------------- metadata
def _set(meta, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        meta = meta[p]
    if value is KeyError:
        del meta[last]
    else:
        meta[last] = value


@pytest.mark.parametrize("dotted,value,words", [
    ("model.layers", KeyError, "model.layers"),             # was a TypeError
    ("model.layers", "2", "model.layers"),
    ("model.hidden", 7.5, "model.hidden"),
    ("model.widht", 3, "model.widht"),                      # unknown key: was a TypeError
    ("model.norm", "rmsnorm", "model.norm"),                # a model the trainer cannot run
    ("model.name", ["x"], "model.name"),
    ("model", [1, 2], "model"),                             # was a TypeError
    ("step", KeyError, "step"),                             # was a KeyError
    ("step", "2", "step"),                                  # was silently int("2")
    ("step", 2.5, "step"),                                  # was silently int(2.5)
    ("step", 10**30, "step"),                               # a huge step
    ("step", -1, "step"),
    ("step", True, "step"),
    ("version", True, "version"),                           # True == 1 passed before
    ("settings", {}, "settings.global_batch"),              # bypassed every resume check
    ("settings", "global_batch", "settings"),               # `key in str` checked substrings
    ("settings.world", KeyError, "settings.world"),
    ("settings.seed", -3, "settings.seed"),
    ("settings.val_fraction", 1.5, "settings.val_fraction"),
    ("settings.data", "anything", "settings.data"),
    ("settings.optimizer", None, "settings.optimizer"),
    ("settings.optimizer.lr", "fast", "settings.optimizer.lr"),
    ("settings.optimizer.min_lr", 1.0, "settings.optimizer.min_lr"),   # above lr
    ("settings.optimizer.beta2", 1.0, "settings.optimizer.beta2"),
    ("determinism", {"threads": 2}, "determinism"),
    ("determinism", [], "determinism"),
    ("extra", 1, "extra"),
])
def test_bad_metadata_fields_are_refused_naming_file_and_field(good, tmp_path, dotted, value,
                                                               words):
    meta, arrays = contents(good)
    _set(meta, dotted, value)
    path = write(tmp_path / good.name, meta, arrays)
    refused(path, words)


@pytest.mark.parametrize("text", [b'{"format": "fugakuperf-checkpoint", "version": 1, '
                                  b'"step": NaN}', b"\xff\xfe not utf-8", b"[" * 5000, b""])
def test_metadata_that_is_not_standard_json_is_refused(good, tmp_path, text):
    _, arrays = contents(good)
    refused(write(tmp_path / good.name, None, arrays, raw_meta=text))


def test_nan_in_the_metadata_is_refused(good, tmp_path):
    meta, arrays = contents(good)
    text = json.dumps(meta).replace('"lr": 0.001', '"lr": NaN').encode()
    assert b"NaN" in text
    refused(write(tmp_path / good.name, None, arrays, raw_meta=text), "NaN")


def test_a_step_that_disagrees_with_the_file_name_is_refused(good, tmp_path):
    meta, arrays = contents(good)
    meta["step"] = 1
    refused(write(tmp_path / good.name, meta, arrays), "named for step 2")


# ---------------------------------------------------------------------- arrays
@pytest.mark.parametrize("damage,words", [
    (lambda a: a.update(params=a["params"][:-1]), "array params"),
    (lambda a: a.update(m=a["m"].reshape(1, -1)), "array m"),             # was broadcast in
    (lambda a: a.update(v=a["v"].astype(np.float64)), "array v"),
    (lambda a: a.update(params=a["params"].astype(">f4")), "array params"),
    (lambda a: a["params"].__setitem__(3, np.nan), "params[3]"),           # was accepted
    (lambda a: a["m"].__setitem__(0, np.inf), "m[0]"),
    (lambda a: a["v"].__setitem__(5, -1.0), "v[5]"),                       # sqrt(v) is NaN
    (lambda a: a.update(extra=np.zeros(1)), "unexpected member"),
    (lambda a: a.pop("v"), "missing v"),
])
def test_arrays_are_checked_against_the_model(good, tmp_path, damage, words):
    meta, arrays = contents(good)
    damage(arrays)
    refused(write(tmp_path / good.name, meta, arrays), words)


def test_a_model_that_does_not_match_the_arrays_is_refused(good, tmp_path):
    # the arrays of a 1-layer model under metadata claiming 2 layers: generate used to
    # fail broadcasting them into the 2-layer buffer (a ValueError traceback)
    meta, arrays = contents(good)
    meta["model"]["layers"] = 2
    path = write(tmp_path / good.name, meta, arrays)
    message = refused(path, "array params")
    assert f"({ModelSpec(**meta['model']).params},)" in message
    from trainer.generate import generate
    with pytest.raises(SpecError) as err:
        generate(path, n_tokens=1)
    assert err.value.field == "checkpoint" and str(path) in err.value.message


def test_a_checkpoint_too_large_for_memory_is_refused_before_reading(good, tmp_path,
                                                                     monkeypatch):
    from trainer import memory
    monkeypatch.setattr(memory, "available_bytes", lambda: (1000, "a test"))
    message = refused(good)
    assert "needs" in message and "1,000" not in message and "available (a test)" in message


def test_a_good_checkpoint_loads_with_every_field_checked(good):
    c = ckpt.load(good)
    assert c.step == 2 and c.model == MODEL
    assert set(c.settings) == set(ckpt.SETTINGS_KEYS)
    assert c.params.shape == c.m.shape == c.v.shape == (MODEL.params,)
    assert c.determinism is not None and c.determinism["ranks"] == 1
    only = ckpt.load(good, arrays=("params",))
    assert only.m is None and np.array_equal(only.params, c.params)


# ---------------------------------------------------------------------- paths
def test_paths_that_are_not_checkpoints_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    refused(text, "not a checkpoint")
    fifo = tmp_path / "pipe"
    import os
    os.mkfifo(fifo)
    refused(fifo, "not a checkpoint file or a directory")       # never opened (would hang)
    with pytest.raises(SpecError) as err:
        ckpt.load("")
    assert err.value.field == "resume"


# ---------------------------------------------------------------------- fuzz
@pytest.fixture(scope="module")
def valid_meta(good):
    return contents(good)


@fuzz_settings(150)
@given(data=mutations({"format": "fugakuperf-checkpoint", "version": 1, "step": 2,
                       "model": {"layers": 1, "hidden": 8, "heads": 2, "vocab": 256, "seq": 8,
                                 "ffn": 32, "kv_heads": 2, "tied_embeddings": True,
                                 "norm": "layernorm", "activation": "gelu",
                                 "position": "learned", "bias": True, "dropout": True,
                                 "name": "micro", "source": ""},
                       "settings": {"global_batch": 2, "micro_batch": 2, "seed": 0, "world": 1,
                                    "data": "2000:0123456789abcdef01234567",
                                    "optimizer": {"lr": 0.001, "min_lr": None, "warmup": 0,
                                                  "decay_steps": None, "beta1": 0.9,
                                                  "beta2": 0.95, "eps": 1e-8,
                                                  "weight_decay": 0.1, "clip": 1.0},
                                    "decay_steps": 4, "val_fraction": 0.0},
                       "determinism": {"threads": 1, "ranks": 1, "numpy": "2", "numba": "0",
                                       "blas": ["openblas"], "machine": "x", "cpu": "y"}}))
def test_no_mutated_metadata_breaks_the_reader(valid_meta, tmp_path_factory, data):
    _, arrays = valid_meta
    path = tmp_path_factory.mktemp("fuzz") / "step_00000002.npz"
    try:
        text = json.dumps(data, allow_nan=True).encode()
    except (TypeError, ValueError):
        return
    write(path, None, arrays, raw_meta=text)
    try:
        c = ckpt.load(path)
    except SpecError as e:
        assert e.field == "resume" and str(path) in e.message, e
        return
    # accepted: then everything in it is what a checkpoint may hold
    assert isinstance(c.step, int) and 0 <= c.step <= ckpt.MAX_STEP
    assert c.model.params == c.params.size
    assert set(c.settings) == set(ckpt.SETTINGS_KEYS)
    for value in (c.settings["val_fraction"], *[v for v in c.settings["optimizer"].values()
                                                if isinstance(v, float)]):
        assert math.isfinite(value)
