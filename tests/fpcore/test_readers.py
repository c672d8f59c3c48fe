"""Reading users' files: every problem is one SpecError naming the file."""

import math

import pytest

from fpcore.errors import SpecError
from fpcore.readers import MAX_DEPTH, dumps, read_csv, read_json, read_text, read_toml


def test_missing_directory_and_binary_files(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(SpecError, match="is a directory"):
        read_text(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(SpecError, match=r"latin1.toml: is not UTF-8"):
        read_toml(bad)


def test_size_limit(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    with pytest.raises(SpecError, match="larger than"):
        read_text(big, max_bytes=1000)


def test_over_long_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot be read|no such file"):
        read_text(tmp_path / ("x" * 5000))


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', '[-Infinity]', "{", "[1,]"])
def test_json_is_standard_json(tmp_path, text):
    p = tmp_path / "f.json"
    p.write_text(text)
    with pytest.raises(SpecError, match=r"f.json: is not valid JSON"):
        read_json(p)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_refused(tmp_path, depth):
    p = tmp_path / "deep.json"
    p.write_text("[" * depth + "]" * depth)
    with pytest.raises(SpecError, match="more than 32 deep"):
        read_json(p)
    t = tmp_path / "deep.toml"
    t.write_text("a = " + "[" * depth + "]" * depth)
    with pytest.raises(SpecError, match="more than 32 deep"):
        read_toml(t)


def test_shallow_nesting_reads(tmp_path):
    p = tmp_path / "ok.json"
    p.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert read_json(p) is not None


def test_csv_problems(tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text("a,b\n1," + "x" * (2 << 20) + "\n")
    with pytest.raises(SpecError, match="malformed CSV"):
        read_csv(p)
    p.write_text("a,b\n1,2,3\n")
    with pytest.raises(SpecError, match="row 2 has more fields"):
        read_csv(p)
    p.write_text("")
    with pytest.raises(SpecError, match="empty"):
        read_csv(p)
    p.write_text("a,b\n1,2\n")
    assert read_csv(p) == (["a", "b"], [{"a": "1", "b": "2"}])


def test_dumps_never_writes_nan():
    with pytest.raises(ValueError):
        dumps({"x": math.nan})
    assert dumps({"x": 1.5}) == '{"x": 1.5}'
