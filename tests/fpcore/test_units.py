"""Counts with SI suffixes and byte sizes with their units."""

import pytest

from fpcore.errors import SpecError
from fpcore.units import parse_bytes, parse_count


@pytest.mark.parametrize("text,value", [("13e9", 13e9), ("13B", 13e9), ("380 B", 380e9),
                                        ("1.5T", 1.5e12), ("20k", 20e3), ("4,096", 4096)])
def test_counts(text, value):
    assert parse_count(text, "params") == value


@pytest.mark.parametrize("text,value", [("8", 8), ("4B", 4), ("4KB", 4000), ("4kB", 4000),
                                        ("4MB", 4e6), ("1GB", 1e9), ("4KiB", 4096),
                                        ("4MiB", 4 * 2**20), ("1 GiB", 2**30), ("1e9", 1e9)])
def test_byte_sizes(text, value):
    assert parse_bytes(text, "bytes") == value


@pytest.mark.parametrize("text", ["4M", "4 bits", "nan", "inf", "1e400", "", "MiB", "4MiB4"])
def test_bad_byte_sizes_name_the_field(text):
    with pytest.raises(SpecError, match=r"^bytes: "):
        parse_bytes(text, "bytes")


@pytest.mark.parametrize("text", ["nan", "1e309", "13X", "abc", "1e308T"])
def test_bad_counts_name_the_field(text):
    with pytest.raises(SpecError, match=r"^params: "):
        parse_count(text, "params")
