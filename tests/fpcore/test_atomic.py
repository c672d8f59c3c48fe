"""Atomic writes: whole files or the previous version, regular files only."""

import os
import subprocess
import sys

import pytest

from fpcore.atomic import atomic_write, host_tag, remove_stale_temps, target
from fpcore.errors import SpecError


def test_writes_and_replaces(tmp_path):
    p = tmp_path / "out.json"
    atomic_write(p, b"one")
    atomic_write(p, lambda f: f.write(b"two"))
    assert p.read_bytes() == b"two" and os.listdir(tmp_path) == ["out.json"]


def test_refuses_a_device_a_directory_and_a_missing_folder(tmp_path):
    with pytest.raises(SpecError, match=r"^trace: cannot write /dev/null: it is not a regular"):
        atomic_write("/dev/null", b"x", field="trace")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    with pytest.raises(SpecError, match="it is a directory"):
        atomic_write(tmp_path, b"x")
    with pytest.raises(SpecError, match="does not exist"):
        target(tmp_path / "no" / "f.json", "out")


def test_a_link_is_followed(tmp_path):
    real = tmp_path / "real.txt"
    real.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    # a writer killed with -9 leaves its temporary file behind
    code = ("import os, signal, sys\n"
            "from fpcore.atomic import atomic_write\n"
            "atomic_write(sys.argv[1], lambda f: os.kill(os.getpid(), signal.SIGKILL))\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ckpt.npz")])
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".ckpt.npz.") and left[0].endswith(".tmp")
    mine = tmp_path / f".x.npz.{host_tag()}.{os.getpid()}.abc.tmp"
    mine.write_bytes(b"")                       # a live writer's file stays
    assert remove_stale_temps(tmp_path) == [str(tmp_path / left[0])]
    assert os.listdir(tmp_path) == [mine.name]
