"""The calibration file: round trip, refusal of what cannot be trusted, merging, the
host system and the overlay built from it."""

import json

import pytest

from calibration import calfile
from calibration.fit import fit_to_dict
from calibration.measure import record
from calibration.host import host_system, overlay
from fpcore.errors import SpecError
from perfmodel.ops import gemm
from perfmodel.system import load_system

from test_fit import TRUE


def sample(threads=2, ranks=1, collectives=None) -> dict:
    host = {"cpu": "test CPU", "cores": 2, "threads": threads, "ranks": ranks,
            "memory_bytes": 8 * 2**30, "numpy": "x", "numba": "y", "date": "today"}
    measurements = [record("gemm", "sweep", [gemm("matmul", 64, 64, 64, 4)], 1e-3)]
    fit = {"compute": {"status": 2, "residual_norm": 0.1, "parameters": fit_to_dict(TRUE)},
           "collectives": collectives or {}}
    return calfile.new(host, measurements, fit)


def test_round_trip(tmp_path):
    path = tmp_path / "cal.json"
    data = sample()
    calfile.save(path, data)
    assert calfile.load(path) == data
    assert data["format"] == calfile.FORMAT and data["version"] == calfile.VERSION
    assert not [p for p in tmp_path.iterdir() if p.name != "cal.json"]   # no temp file left


@pytest.mark.parametrize("damage,words", [
    (lambda p, d: p.write_bytes(b"\x00\xff garbage"), "damaged"),
    (lambda p, d: p.write_text(json.dumps(d)[:200]), "damaged"),
    (lambda p, d: p.write_text(json.dumps({"format": "other-tool"})), "not a fugakuperf"),
    (lambda p, d: p.write_text(json.dumps(dict(d, version=99))), "version 99"),
    (lambda p, d: p.write_text(json.dumps(dict(d, measurements={"a": 1}))), "measurements"),
    (lambda p, d: p.write_text(json.dumps({k: v for k, v in d.items() if k != "fit"})), "fit"),
    (lambda p, d: p.write_text(json.dumps(dict(d, fit={"compute": None}))), "fit.compute"),
    (lambda p, d: p.write_text(json.dumps(d).replace("0.001", "Infinity")), "JSON"),
    (lambda p, d: p.write_text(json.dumps(d).replace("0.001", "0")), "measurements[0].seconds"),
])
def test_damaged_foreign_or_other_version_files_are_refused_by_name(tmp_path, damage, words):
    path = tmp_path / "cal.json"
    damage(path, sample())
    with pytest.raises(SpecError) as err:
        calfile.load(path)
    assert err.value.field == "calibration"
    assert str(path) in str(err.value) and words in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        calfile.load(tmp_path / "nope.json")


def test_files_of_one_setting_merge_and_others_are_refused():
    host, measurements, worst = calfile.merge([sample(), sample()])
    assert len(measurements) == 2 and {m["file"] for m in measurements} == {0, 1}
    assert worst is None                                  # neither recorded contention
    with pytest.raises(SpecError, match="threads"):
        calfile.merge([sample(threads=2), sample(threads=1)])
    other_cpu = sample()
    other_cpu["host"]["cpu"] = "another CPU"
    with pytest.raises(SpecError, match="cpu"):
        calfile.merge([sample(), other_cpu])


def test_a_merge_keeps_the_worst_contention_of_its_files():
    quiet, noisy = sample(), sample()
    quiet["contention"] = {"verdict": "quiet", "reasons": []}
    noisy["contention"] = {"verdict": "noisy", "reasons": ["spread"]}
    _, _, worst = calfile.merge([quiet, noisy, sample()])
    assert worst == {"verdict": "noisy", "reasons": ["spread"], "file": 1}


def test_host_system_is_built_from_the_file_alone():
    fits = {"p2p": {"alpha_s": 4e-6, "bandwidth_bytes_per_s": 3e9},
            "allreduce": {"alpha_s": 5e-6, "bandwidth_bytes_per_s": 1.5e9}}
    system = host_system(sample(ranks=2, collectives=fits), "cal.json")
    assert system.name == "host" and system.ranks_per_node == 2
    assert system.compute_fit == TRUE.__class__(**{**TRUE.__dict__, "source": "cal.json"})
    assert dict((op, (a, b)) for op, a, b in system.collective_fits) == {
        "allreduce": (5e-6, 1.5e9), "p2p": (4e-6, 3e9)}
    # the nominal peak of the node is the fitted large-GEMM rate of its ranks
    assert system.node.peak_flops("fp32") == pytest.approx(2 * TRUE.gemm_rate)
    assert all("cal.json" in v for v in system.sources.values())


def a64fx(data: dict) -> dict:
    """``data`` as if measured on a whole A64FX node with one rank."""
    data["host"].update(cpu="Fujitsu A64FX", cores=48, threads=48, ranks=1)
    return data


def test_overlay_replaces_compute_and_keeps_the_preset():
    fugaku = load_system()
    over = overlay(fugaku, a64fx(sample()), "cal.json")
    assert over.node == fugaku.node and over.network == fugaku.network
    assert over.compute_fit.gemm_rate == TRUE.gemm_rate and over.collective_fits is None
    assert over.settings()["calibration"] == "cal.json"
    assert "calibration cal.json" in over.sources["compute (fp32)"]


def test_a_measured_checkpoint_write_becomes_the_systems_checkpoint_bandwidth(tmp_path):
    from calibration.measure import measure_checkpoint
    from calibration.run import fit_all
    write = measure_checkpoint(str(tmp_path), 3 * 2**20)
    assert write["bytes"] >= 3 * 2**20 - 12 and write["seconds"] > 0
    assert list(tmp_path.iterdir()) == []                       # the probe cleans up
    data = sample()
    data["fit"]["storage"] = fit_all(data["host"], [write] + synthetic_steps())["storage"]
    rate = data["fit"]["storage"]["checkpoint_write_bytes_per_s"]
    assert rate == pytest.approx(write["bytes"] / write["seconds"])
    system = overlay(load_system(), a64fx(data), "cal.json")
    assert system.checkpoint_bandwidth == rate
    assert "cal.json" in system.sources["checkpoint_bandwidth"]


@pytest.mark.parametrize("cpu, applies", [
    ("Fujitsu A64FX", True), ("FUJITSU A64FX (R)", True), ("A64FX-derived", True),
    ("Intel(R) Xeon(R) Gold 6148", False), ("", False), ("test CPU", False),
    ("A64FXX prototype", False),                # whole words only
])
def test_a_calibration_applies_only_to_the_node_it_names(cpu, applies):
    from calibration.host import mismatch
    data = a64fx(sample())
    data["host"]["cpu"] = cpu
    assert (mismatch(load_system(), data) is None) == applies


def test_a_forced_overlay_says_so_in_its_provenance():
    fugaku = load_system()
    with pytest.raises(SpecError, match="does not describe fugaku"):
        overlay(fugaku, sample(), "cal.json")
    forced = overlay(fugaku, sample(), "cal.json", force=True)
    assert forced.calibration.startswith("cal.json (FORCED onto fugaku: measured on test CPU")
    assert "FORCED" in forced.sources["compute (fp32)"]


def test_damaged_storage_section_is_refused(tmp_path):
    data = sample()
    data["fit"]["storage"] = {"checkpoint_write_bytes_per_s": -5}
    path = tmp_path / "cal.json"
    calfile.save(path, data)
    with pytest.raises(SpecError, match="checkpoint_write_bytes_per_s"):
        calfile.load(path)


def synthetic_steps():
    from test_fit import TRUE as fit, synthetic
    return synthetic(fit)
