"""The trainer's flat parameters and its data pipeline."""

import numpy as np
import pytest

from fpcore.errors import SpecError
from perfmodel.model import ModelSpec
from perfmodel.presets import load_model
from trainer.data import (Sampler, check_vocab, decode_bytes, encode_bytes, is_shard, load_tokens,
                          write_shard)
from trainer.params import allocate, initialize, parameter_shapes

TINY = ModelSpec(layers=2, hidden=32, heads=4, vocab=256, seq=16, name="tiny")


@pytest.mark.parametrize("model", [TINY, ModelSpec(layers=3, hidden=48, heads=6,
                                                   vocab=300, seq=8, tied_embeddings=False),
                                   load_model("fugaku-llm-13b"), load_model("gpt3-125m")])
def test_the_trainer_counts_exactly_what_perfmodel_counts(model):
    total = sum(int(np.prod(shape)) for _, shape in parameter_shapes(model))
    assert total == model.params


def test_views_tile_one_buffer_without_gaps():
    p = allocate(TINY)
    assert p.size == TINY.params and p.buffer.dtype == np.float32
    p.buffer[:] = np.arange(p.size, dtype=np.float32)
    seen = np.concatenate([v.ravel() for v in p.views.values()])
    assert np.array_equal(seen, p.buffer)                  # in order, no overlap, no gap
    p["wte"][0, 0] = -1.0
    assert p.buffer[0] == -1.0                             # views share the buffer


def test_initialisation_is_gpt2_style_and_deterministic():
    a, b = initialize(TINY, seed=3), initialize(TINY, seed=3)
    assert np.array_equal(a.buffer, b.buffer)
    assert not np.array_equal(a.buffer, initialize(TINY, seed=4).buffer)
    assert np.all(a["ln1w"] == 1) and np.all(a["qkvb"] == 0) and np.all(a["lnfb"] == 0)
    assert abs(float(a["wte"].std()) - 0.02) < 0.002
    assert float(a["attprojw"].std()) < 0.02 / np.sqrt(2 * TINY.layers) * 1.3


def test_models_the_trainer_cannot_run_are_refused_naming_the_field():
    with pytest.raises(SpecError) as err:
        parameter_shapes(load_model("llama2-7b"))
    assert err.value.field == "norm"
    with pytest.raises(SpecError) as err:
        parameter_shapes(ModelSpec(layers=1, hidden=32, heads=4, kv_heads=2, vocab=256, seq=8))
    assert err.value.field == "kv_heads"


def test_byte_tokenizer_round_trips_japanese():
    text = "富岳で大規模言語モデルを学習する。Fugaku-LLM"
    tokens = encode_bytes(text)
    assert tokens.max() < 256 and len(tokens) == len(text.encode("utf-8"))
    assert decode_bytes(tokens) == text


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_llmc_shards_round_trip(tmp_path, dtype):
    tokens = np.arange(1000, dtype=dtype) * 7 % 50000
    path = tmp_path / "train.bin"
    write_shard(path, tokens, dtype)
    loaded = load_tokens(path)
    assert loaded.dtype == dtype and np.array_equal(loaded, tokens)
    assert not list(tmp_path.glob(".*"))                   # written atomically


def test_text_files_are_bytes(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abc あ", encoding="utf-8")
    assert list(load_tokens(path)) == list("abc ".encode()) + list("あ".encode())


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"\x00" * 10), "header"),
    (lambda p: p.write_bytes(np.array([1, 2, 3] + [0] * 253, np.int32).tobytes()), "not an llm.c"),
    (lambda p: p.write_bytes(np.array([20240520, 1, 99] + [0] * 253, np.int32).tobytes()
                             + np.arange(5, dtype=np.uint16).tobytes()), "header says 99"),
])
def test_bad_shards_are_refused_naming_the_file(tmp_path, setup, message):
    path = tmp_path / "bad.bin"
    setup(path)
    with pytest.raises(SpecError) as err:
        load_tokens(path)
    assert err.value.field == "data" and message in str(err.value)
    assert "bad.bin" in str(err.value)


def test_two_ranks_together_see_exactly_what_one_rank_sees():
    tokens = np.arange(10_000, dtype=np.uint16)
    one = Sampler(tokens, seq=16, micro_batch=2, global_batch=8, seed=5)
    ranks = [Sampler(tokens, seq=16, micro_batch=2, global_batch=8, seed=5, rank=r, world=2)
             for r in range(2)]
    for step in range(3):
        single = np.concatenate([one.batch(step, k)[0] for k in range(one.micro_batches)])
        split = np.concatenate([s.batch(step, k)[0] for s in ranks for k in range(s.micro_batches)])
        assert np.array_equal(single, split)
    x, y = one.batch(0, 0)
    assert x.shape == (2, 16) and np.array_equal(x[:, 1:], y[:, :-1])
    assert not np.array_equal(one.batch(0, 0)[0], one.batch(1, 0)[0])


def test_sampler_refuses_short_data_and_bad_batches():
    with pytest.raises(SpecError, match="at least"):
        Sampler(np.arange(10, dtype=np.uint16), seq=16, micro_batch=1, global_batch=1)
    with pytest.raises(SpecError) as err:
        Sampler(np.arange(100, dtype=np.uint16), seq=8, micro_batch=3, global_batch=8)
    assert err.value.field == "global_batch"


def test_token_ids_beyond_the_vocabulary_are_refused():
    with pytest.raises(SpecError) as err:
        check_vocab(np.array([1, 300]), 256)
    assert err.value.field == "vocab" and "300" in str(err.value)


# ---------------------------------------------------------------------- what a data file is
@pytest.mark.parametrize("name", ["train.BIN", "train.Bin", "shard.dat", "tokens"])
def test_a_shard_is_recognised_by_its_header_whatever_its_name(tmp_path, name):
    tokens = np.arange(300, dtype=np.uint16) * 11 % 1000
    path = tmp_path / name
    write_shard(path, tokens)
    assert is_shard(path)
    assert np.array_equal(load_tokens(path), tokens)             # not the file's bytes


@pytest.mark.parametrize("name", ["corpus.BIN", "corpus.bin"])
def test_a_bin_file_without_a_shard_header_is_refused_not_read_as_text(tmp_path, name):
    path = tmp_path / name
    path.write_text("plain text " * 200)
    with pytest.raises(SpecError) as err:
        load_tokens(path)
    assert err.value.field == "data" and "not an llm.c token shard" in str(err.value)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 ".encode("utf-8") * 10_000 + "caf\u00e9".encode("latin-1"))
    with pytest.raises(SpecError) as err:
        load_tokens(path)
    assert err.value.field == "data" and "UTF-8" in str(err.value)
    assert "byte 60,003" in str(err.value)                  # where it is, across pieces


def test_text_split_mid_character_across_pieces_is_still_utf8(tmp_path, monkeypatch):
    import trainer.data as data
    monkeypatch.setattr(data, "UTF8_CHUNK", 5)
    path = tmp_path / "ja.txt"
    path.write_text("富岳で学習する" * 7, encoding="utf-8")
    assert len(load_tokens(path)) == len(("富岳で学習する" * 7).encode())


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_a_pipe_is_not_data(tmp_path, kind):
    import os
    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)                                       # opening it would hang
    with pytest.raises(SpecError) as err:
        load_tokens(path)
    assert err.value.field == "data"
    assert ("is a directory" if kind == "directory" else "not a regular file") in str(err.value)


def test_data_shorter_than_a_sequence_is_refused_naming_the_file(tmp_path):
    from trainer.data import check_length
    for n in (0, 17):
        with pytest.raises(SpecError) as err:
            check_length(np.zeros(n, dtype=np.uint16), 16, "corpus.txt")
        assert err.value.field == "data" and "corpus.txt" in str(err.value)
        assert f"holds {n} tokens" in str(err.value)
    check_length(np.zeros(18, dtype=np.uint16), 16, "corpus.txt")
