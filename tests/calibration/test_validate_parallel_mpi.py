"""The closed loop on model-parallel runs: ``validate --parallel`` under a real
``mpiexec -n 2`` runs the trainer in TP2 and PP2 on held-out configurations and compares
each stage's parts with the DES of the same layout on the calibrated host system."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def fugakuperf(mpiexec, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "fugakuperf", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_tp2_and_pp2_stage_by_stage_against_the_des(mpiexec, tmp_path):
    cal = tmp_path / "host2.json"
    made = fugakuperf(mpiexec, "calibrate", "--quick", "--threads", "1", "--allow-contention",
                      "--out", str(cal))
    assert made.returncode == 0, made.stderr
    run = fugakuperf(mpiexec, "validate", "--calibration", str(cal), "--parallel", "--steps",
                     "3", "--json")
    assert run.returncode == 0, run.stderr
    d = json.loads(run.stdout)
    assert d["drift_since_calibration"] > 0          # the calibration's configurations, again
    layouts = [c["layout"] for c in d["cases"]]
    assert sorted(set(layouts)) == ["TP1 PP2 DP1", "TP2 PP1 DP1"] and len(layouts) == 4
    for c in d["cases"]:
        assert c["error"] == pytest.approx(c["predicted_s"] / c["measured_s"] - 1, rel=1e-12)
        assert [st["stage"] for st in c["stages"]] == list(range(2 if "PP2" in c["layout"]
                                                                 else 1))
        for st in c["stages"]:
            # the parts of a simulated stage add up to its iteration (the pipeline part is
            # the rest); the measured ones are a stage's own timers
            assert sum(st["predicted"].values()) == pytest.approx(c["predicted_s"], rel=1e-9)
            assert st["measured"]["compute"] > 0 and st["predicted"]["compute"] > 0
            if "TP2" in c["layout"]:
                assert st["measured"]["tp"] > 0 and st["predicted"]["tp"] > 0
            if "PP2" in c["layout"]:
                assert st["predicted"]["pipeline"] > 0
    text = fugakuperf(mpiexec, "validate", "--calibration", str(cal), "--parallel", "--steps",
                      "2")
    assert text.returncode == 0 and "pipeline (rest)" in text.stdout
    assert "vs when calibrated" in text.stdout


def test_parallel_is_for_trainer_runs_only():
    from click.testing import CliRunner

    from fugakuperf.cli import main
    result = CliRunner().invoke(main, ["validate", "--against", "selene", "--parallel"])
    assert result.exit_code == 2 and "parallel" in result.stderr


def test_one_rank_has_no_model_parallel_layout():
    from calibration.validate import validate_parallel
    from fpcore.errors import SpecError
    from perfmodel.system import load_system
    from trainer.distributed import SingleProcess
    with pytest.raises(SpecError, match="mpiexec -n 2 or 4") as err:
        validate_parallel(load_system(), SingleProcess())
    assert err.value.field == "parallel"
