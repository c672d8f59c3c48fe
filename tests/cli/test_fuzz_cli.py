"""Property-based fuzzing of the command line: no input ends in a traceback, an internal
error or a hang, and no value that cannot be valid is silently accepted.

Each case is one command with a cheap valid baseline and a few options drawn from the
command's own parameters (introspected from click, so a new option is fuzzed too) with
hostile values: numbers that are not finite, out of range or not numbers, byte sizes and
counts with wrong units, files that are missing, directories, devices, not UTF-8, nested
thousands deep, or not the format asked for. A case passes when the command succeeds, or
fails with exit 1 or 2 and its last line on stderr is one ``error:`` line; a value that no
input may hold (a NaN, an infinity, a file that cannot be what the option reads) must be
refused with exit 2.
"""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from fugakuperf.cli import main
from fugakuperf.options import ByteSize, Number, Real
from hostile import (INT_TEXTS, NOT_FINITE_TEXTS, NUMBER_TEXTS, fuzz_settings, hostile_files,
                     time_limit)

pytestmark = pytest.mark.slow

CORPUS = os.path.join(os.path.dirname(__file__), "..", "trainer", "data", "corpus.txt")

# Options that read a file: a hostile file there can never be valid input.
READS = {"model_name", "system_name", "calibration_path", "against_path", "refit_paths",
         "record_paths", "resume", "checkpoint", "runs"}
# Options that write: a device, a directory or a missing folder can never be a target.
WRITES = {"trace_path", "measurements_path", "out_path"}
# Never fuzzed: what would make a case slow without testing input handling.
SKIP = {"quick", "steps", "profile", "runs_count"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Hostile files, a tiny checkpoint and a one-row run log, made once."""
    root = tmp_path_factory.mktemp("fuzz")
    files = hostile_files(root / "hostile")
    ckpt = root / "ckpt"
    result = CliRunner().invoke(main, ["train", "--layers", "1", "--hidden", "16", "--heads", "2",
                                       "--seq", "16", "--data", CORPUS, "--steps", "1",
                                       "--checkpoint-dir", str(ckpt), "--threads", "1"])
    assert result.exit_code == 0, result.output
    log = root / "runs.csv"
    log.write_text("system,model,layers,hidden,heads,vocab,seq,ranks,tp,pp,dp,global_batch,"
                   "micro_batch,interleave,recompute,sequence_parallel,zero,precision,"
                   "clock_ghz,measured,unit,flops_convention,source\n"
                   "fugaku,gpt-125m,12,768,12,50257,2048,32,1,1,32,64,1,1,none,false,0,fp32,,"
                   "10.0,sec_per_iter,,a test row\n")
    flows = root / "flows.json"
    flows.write_text("[[0, 1, 1e9], [0, 5, 3e9], [2, 3, 1e9, 0.5]]")
    return {"files": files, "checkpoint": str(ckpt), "log": str(log), "root": root,
            "flows": str(flows)}


def baseline(command: str, w: dict) -> list[str]:
    """A cheap valid invocation of each command (the fuzzed options are added to it)."""
    out = str(w["root"] / "out")
    return {
        "plan": ["--model", "gpt3-125m", "--max-nodes", "48", "--top", "2"],
        "simulate": ["--model", "gpt3-125m", "--nodes", "12", "--tp", "2", "--pp", "2"],
        "report": ["--model", "gpt3-125m", "--max-nodes", "24", "--top", "2", "--out", out],
        "collective": ["allreduce", "--nodes", "12", "--bytes", "4KiB"],
        "topo": ["--nodes", "12"],
        "presets": [],
        "train": ["--layers", "1", "--hidden", "16", "--heads", "2", "--seq", "16", "--data",
                  CORPUS, "--steps", "1", "--threads", "1"],
        "generate": ["--checkpoint", w["checkpoint"], "--tokens", "4"],
        "calibrate": ["--refit", w["files"]["nan-json"], "--out", str(w["root"] / "cal.json")],
        "validate": ["--against", w["log"]],
        "fit-stack": [w["log"], "--stack", "deepspeedfugaku-2023"],
        "flows": [w["flows"], "--shape", "4x2", "--link-gbs", "1"],
    }[command]


def option_values(param: click.Parameter, w: dict):
    """(strategy of (text, must_refuse)) for one option."""
    files = w["files"]
    hostile = st.sampled_from(sorted(files.values())).map(lambda p: (p, True))
    if param.name in READS:
        return hostile
    if param.name in WRITES or param.name == "checkpoint_dir" or param.name == "out_dir":
        bad = [files["device"], files["directory"] if param.name in WRITES else files["device"],
               os.path.join(files["missing"], "sub", "f.json"), files["long-path"]]
        return st.sampled_from(bad).map(lambda p: (p, True))
    t = param.type
    if isinstance(t, (Real, Number, ByteSize)):
        return st.sampled_from(NUMBER_TEXTS).map(lambda v: (v, v in NOT_FINITE_TEXTS))
    if isinstance(t, click.Choice):
        return st.one_of(st.sampled_from(list(t.choices)), st.text(max_size=6)).map(
            lambda v: (v, False))
    if isinstance(t, (click.IntRange,)) or t is click.INT or param.name == "nodes":
        return st.sampled_from(INT_TEXTS).map(lambda v: (v, False))
    return st.one_of(st.text(max_size=20), st.sampled_from(sorted(files.values())),
                     st.sampled_from(["fugaku", "selene", "host", "gpt3-125m", "48x6x48:torus",
                                      "0x0x0", "24x2x24x2x3x3", "99999999999x2x2"])).map(
        lambda v: (v, False))


@st.composite
def invocations(draw, command: str, w: dict):
    cmd = main.commands[command]
    params = [p for p in cmd.params if isinstance(p, click.Option) and p.name not in SKIP]
    chosen = draw(st.lists(st.sampled_from(params), min_size=1, max_size=3,
                           unique_by=lambda p: p.name))
    args, must_refuse = list(baseline(command, w)), []
    for p in chosen:
        flag = p.opts[0]
        if p.is_flag:
            args.append(flag if not p.secondary_opts or draw(st.booleans()) else
                        p.secondary_opts[0])
            continue
        value, refuse = draw(option_values(p, w))
        args += [flag, value]
        if refuse:
            must_refuse.append(f"{flag} {value[:60]}")
    return args, must_refuse


def check(command: str, args: list[str], must_refuse: list[str], seconds: int = 120) -> None:
    with time_limit(seconds):
        result = CliRunner().invoke(main, [command, *args])
    err = result.stderr.strip().splitlines()
    text = f"fugakuperf {command} {' '.join(args)[:400]}\n{result.output[-2000:]}"
    assert result.exit_code in (0, 1, 2), text
    assert "Traceback" not in result.output and "internal error" not in result.output, text
    if result.exit_code:
        assert err and err[-1].startswith("error: "), text
    if must_refuse:
        assert result.exit_code == 2, f"accepted {must_refuse}: {text}"


BUDGET = {"plan": 60, "simulate": 60, "collective": 60, "topo": 60, "presets": 30,
          "report": 15, "train": 40, "generate": 40, "calibrate": 40, "validate": 40,
          "fit-stack": 30, "flows": 20}


@pytest.mark.parametrize("command", sorted(BUDGET))
def test_no_input_breaks_a_command(command, world, monkeypatch):
    monkeypatch.setenv("FUGAKUPERF_WORKERS", "1")

    @fuzz_settings(BUDGET[command])
    @given(case=invocations(command, world))
    def run(case):
        check(command, *case)
    run()
