"""``fugakuperf train`` and ``fugakuperf generate`` through the CLI (in-process, CliRunner).

Tiny models only (2 layers x 32, seq 32, a few steps, one thread): the machine is shared.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fugakuperf.cli import main

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "trainer" / "data" / "corpus.txt"
TINY = ["--layers", "2", "--hidden", "32", "--heads", "4", "--seq", "32"]
FAST = ["--micro-batch", "2", "--threads", "1"]
STEP_KEYS = {"loss", "lr", "grad_norm", "seconds", "tokens_per_s"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train_ok(*args):
    result = run("train", *args)
    assert result.exit_code == 0, result.output
    return result


def params_of(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z["params"].copy()


def assert_bad_input(result, field: str) -> str:
    """Exit 2 and one line ``error: FIELD: ...`` (the last on stderr), no traceback.

    Errors found once training starts (a bad --resume) follow the "training ..." banner,
    so only the error line itself is required to stand alone."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert errors[0].startswith(f"error: {field}: "), errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-step run shared by the record and generation tests."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 3, *FAST,
                      "--checkpoint-dir", ckpt, "--json")
    return ckpt, result


# ---------------------------------------------------------------------- record


def test_train_json_prints_the_measurement_record(trained):
    ckpt, result = trained
    record = json.loads(result.stdout)            # stdout alone: progress is on stderr
    assert {"kind", "host", "model", "parameters", "steps", "kernels",
            "model_flops_per_step", "tokens_per_s"} <= set(record)
    assert record["kind"] == "fugakuperf-training-measurement"
    assert record["model"]["layers"] == 2 and record["model"]["hidden"] == 32
    assert record["model"]["vocab"] == 256          # byte-level text
    assert record["parameters"] > 0
    assert [s["step"] for s in record["steps"]] == [1, 2, 3]
    for s in record["steps"]:
        assert STEP_KEYS <= set(s)
        assert np.isfinite(s["loss"]) and s["seconds"] > 0
    assert record["kernels"]
    mm = [k for k in record["kernels"] if k["kernel"] == "matmul_forward"]
    assert mm, [k["name"] for k in record["kernels"]]
    assert all(len(k["shape"]) == 3 and k["flops"] > 0 for k in mm)
    assert record["model_flops_per_step"] > 0
    assert record["tokens_per_s"] > 0
    assert (ckpt / "step_00000003.npz").is_file()
    assert record["checkpoint"] == str(ckpt / "step_00000003.npz")
    assert "1 rank(s)" in result.stderr
    busy = record["contention"]                     # how busy the machine was, recorded
    assert busy["verdict"] in ("quiet", "noisy", "contended", "unknown")
    assert busy["threads"] == record["host"]["threads"] and busy["wall_s"] > 0


def test_training_on_a_busy_machine_warns_and_records_it(monkeypatch):
    from trainer import host
    ticks = iter(range(1, 10**6))            # /proc/stat: half of all CPU time stolen

    def cpu_times():
        t = next(ticks)
        return host.CpuTimes(busy=t / 2, idle=0.0, steal=t / 2)
    monkeypatch.setattr(host, "read_cpu_times", cpu_times)
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 2, *FAST, "--json")
    assert "warning: while training, the machine was contended: " in result.stderr
    assert "stole 50%" in result.stderr
    assert json.loads(result.stdout)["contention"]["verdict"] == "contended"


def test_profile_prints_the_kernel_table(tmp_path):
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 2, *FAST, "--profile")
    assert "matmul_forward" in result.stdout
    assert "GFLOP/s" in result.stdout
    assert "done: step 2" in result.stdout


def test_measurements_file_holds_the_same_record(tmp_path):
    out = tmp_path / "m.json"
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 2, *FAST,
                      "--measurements", out, "--json")
    printed, written = json.loads(result.stdout), json.loads(out.read_text())
    assert written == printed


# ---------------------------------------------------------------------- generate


def test_generate_continues_the_prompt(trained):
    ckpt, _ = trained
    result = run("generate", "--checkpoint", ckpt, "--prompt", "We hold", "--tokens", 20,
                 "--temperature", 0)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("We hold")


def test_generate_json(trained):
    ckpt, _ = trained
    result = run("generate", "--checkpoint", ckpt, "--prompt", "We hold", "--tokens", 20,
                 "--temperature", 0, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"text", "tokens", "step"} <= set(out)
    assert len(out["tokens"]) == 20
    assert all(0 <= t < 256 for t in out["tokens"])
    assert out["step"] == 3
    assert out["text"].startswith("We hold")
    # temperature 0 is deterministic
    again = json.loads(run("generate", "--checkpoint", ckpt, "--prompt", "We hold", "--tokens",
                           20, "--temperature", 0, "--json").stdout)
    assert again["tokens"] == out["tokens"]


# ---------------------------------------------------------------------- resume


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = [*TINY, "--data", CORPUS, "--steps", 4, *FAST]
    train_ok(*common, "--checkpoint-dir", whole)
    first = train_ok(*common, "--checkpoint-dir", parts, "--stop-after", 2)
    assert "done: step 2" in first.stdout
    assert [p.name for p in sorted(parts.iterdir())] == ["step_00000002.npz"]
    second = train_ok(*common, "--checkpoint-dir", parts, "--resume", parts)
    assert "done: step 4" in second.stdout
    assert "resumed from" in second.stderr
    assert (parts / "step_00000004.npz").is_file()
    a, b = params_of(whole / "step_00000004.npz"), params_of(parts / "step_00000004.npz")
    assert a.dtype == np.float32 and a.size > 0
    assert np.array_equal(a, b)
    assert not np.array_equal(a, params_of(parts / "step_00000002.npz"))


# ---------------------------------------------------------------------- bad input


def test_missing_data_file(tmp_path):
    result = run("train", *TINY, "--data", tmp_path / "nope.txt", "--steps", 1)
    line = assert_bad_input(result, "data")
    assert "nope.txt" in line


def test_data_too_short_for_the_sequence(tmp_path):
    short = tmp_path / "short.txt"
    short.write_bytes(b"0123456789")
    result = run("train", *TINY, "--data", short, "--steps", 1)
    assert "seq + 2" in assert_bad_input(result, "data")


def test_heads_must_divide_hidden():
    result = run("train", "--layers", 2, "--hidden", 32, "--heads", 5, "--seq", 32,
                 "--data", CORPUS, "--steps", 1)
    assert_bad_input(result, "heads")


def test_text_token_ids_beyond_the_vocabulary():
    result = run("train", *TINY, "--vocab", 100, "--data", CORPUS, "--steps", 1)
    assert_bad_input(result, "vocab")


def test_shard_token_ids_beyond_the_vocabulary(tmp_path):
    from trainer.data import write_shard
    shard = tmp_path / "tokens.bin"
    write_shard(shard, np.arange(200) % 300 + 100)          # ids up to 299
    result = run("train", *TINY, "--vocab", 256, "--data", shard, "--steps", 1)
    assert "299" in assert_bad_input(result, "vocab")


def test_global_batch_not_divisible_by_the_micro_batch():
    result = run("train", *TINY, "--data", CORPUS, "--steps", 1, "--micro-batch", 2,
                 "--global-batch", 3)
    assert_bad_input(result, "global_batch")


def test_resume_from_an_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("train", *TINY, "--data", CORPUS, "--steps", 1, "--resume", empty)
    assert_bad_input(result, "resume")


def test_resume_from_a_damaged_checkpoint(tmp_path):
    bad = tmp_path / "step_00000001.npz"
    bad.write_bytes(b"\x00garbage, not a zip file\xff" * 8)
    for target in (bad, tmp_path):
        result = run("train", *TINY, "--data", CORPUS, "--steps", 2, "--resume", target)
        assert "step_00000001.npz" in assert_bad_input(result, "resume")


def test_resume_from_a_damaged_zip(tmp_path):
    bad = tmp_path / "step_00000001.npz"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 60)          # a zip header, then nothing
    result = run("train", *TINY, "--data", CORPUS, "--steps", 2, "--resume", bad)
    assert_bad_input(result, "resume")


def test_a_preset_the_trainer_cannot_run():
    # llama2-7b narrowed to a tiny shape: RMSNorm/SwiGLU/RoPE are not the reference GPT.
    # (Without --kv-heads the preset's kv_heads 32 exceeds --heads 4 and is refused first.)
    result = run("train", "--model", "llama2-7b", "--layers", 1, "--hidden", 32, "--heads", 4,
                 "--seq", 32, "--data", CORPUS, "--steps", 1)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in result.output and result.stdout == ""
    assert re.match(r"error: (norm|activation|position|bias|kv_heads): ", line), line

    result = run("train", "--model", "llama2-7b", "--layers", 1, "--hidden", 32, "--heads", 4,
                 "--kv-heads", 4, "--seq", 32, "--data", CORPUS, "--steps", 1)
    assert "rmsnorm" in assert_bad_input(result, "norm")


# ---------------------------------------------------------------------- help


def test_train_help_mentions_data_resume_profile_and_mpiexec():
    result = run("train", "--help")
    assert result.exit_code == 0, result.output
    for word in ("--data", "--resume", "--profile", "mpiexec"):
        assert word in result.stdout, word


def test_generate_help():
    result = run("generate", "--help")
    assert result.exit_code == 0, result.output
    assert "--checkpoint" in result.stdout and "--temperature" in result.stdout


# ---------------------------------------------------------------------- hostile input


def assert_before_training(result, field: str) -> str:
    """Refused before any work: the one error line is all of stderr (no banner, no step)."""
    line = assert_bad_input(result, field)
    assert result.stderr.strip() == line, result.stderr
    return line


def test_non_finite_clip_and_temperature_are_refused(trained):
    ckpt, _ = trained
    for value in ("nan", "inf"):
        result = run("train", *TINY, "--data", CORPUS, "--steps", 1, "--clip", value)
        assert_before_training(result, "--clip")
        result = run("generate", "--checkpoint", ckpt, "--temperature", value)
        assert_before_training(result, "--temperature")


def test_generate_bounds_the_tokens_it_makes(trained):
    from trainer.generate import MAX_TOKENS
    ckpt, _ = trained
    result = run("generate", "--checkpoint", ckpt, "--tokens", 10**9)
    line = assert_before_training(result, "tokens")
    assert f"{MAX_TOKENS}" in line
    assert f"{MAX_TOKENS:,}" in run("generate", "--help").stdout


def test_generate_with_a_tiny_temperature_takes_the_likeliest_tokens(trained):
    # logits / 1e-320 overflowed to inf - inf = NaN probabilities (an internal error)
    ckpt, _ = trained
    args = ["generate", "--checkpoint", ckpt, "--prompt", "We hold", "--tokens", 8, "--json"]
    tiny = run(*args, "--temperature", "1e-320")
    assert tiny.exit_code == 0, tiny.output
    greedy = run(*args, "--temperature", 0)
    assert json.loads(tiny.stdout)["tokens"] == json.loads(greedy.stdout)["tokens"]


def test_generate_refuses_a_prompt_that_is_not_token_ids(tmp_path):
    ckpt = tmp_path / "ckpt"
    train_ok(*TINY, "--vocab", 300, "--data", CORPUS, "--steps", 1, *FAST,
             "--checkpoint-dir", ckpt)
    for prompt, words in (("hello world", "word 1"), ("5 300", "between 0 and 299")):
        line = assert_before_training(run("generate", "--checkpoint", ckpt, "--prompt", prompt,
                                          "--tokens", 2), "prompt")
        assert words in line
    result = run("generate", "--checkpoint", ckpt, "--prompt", "5 299", "--tokens", 2, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["tokens"]) == 2


def test_a_model_too_large_for_memory_is_refused_naming_need_and_have(monkeypatch):
    from trainer import memory
    monkeypatch.setattr(memory, "available_bytes", lambda: (8 * 10**9, "MemAvailable"))
    result = run("train", "--model", "fugaku-llm-13b", "--data", CORPUS, "--steps", 1)
    line = assert_before_training(result, "memory")
    assert "fugaku-llm-13b" in line and "8.00 GB available (MemAvailable)" in line
    assert "parameters 52.67 GB" in line and "AdamW state 105.34 GB" in line


def test_an_uppercase_bin_shard_is_trained_as_tokens(tmp_path):
    from trainer.data import write_shard
    shard = tmp_path / "TOKENS.BIN"
    write_shard(shard, np.arange(500) % 300)
    result = train_ok(*TINY, "--vocab", 300, "--data", shard, "--steps", 1, *FAST)
    assert "500 tokens" in result.stderr                       # not the file's 1,524 bytes


def test_empty_data_is_refused_naming_the_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    line = assert_before_training(run("train", *TINY, "--data", empty, "--steps", 1), "data")
    assert "empty.txt holds 0 tokens" in line


def test_outputs_are_checked_before_training(tmp_path):
    common = [*TINY, "--data", CORPUS, "--steps", 2, *FAST]
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for bad, field in ((tmp_path / "missing" / "m.json", "measurements"),
                       (folder, "--measurements")):
        assert_before_training(run("train", *common, "--measurements", bad), field)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_before_training(run("train", *common, "--checkpoint-dir", a_file), "--checkpoint-dir")
    deep = tmp_path / "no" / "such" / "ckpt"
    line = assert_before_training(run("train", *common, "--checkpoint-dir", deep),
                                  "checkpoint_dir")
    assert "does not exist" in line and not (tmp_path / "no").exists()
    blocked = tmp_path / "blocked"
    (blocked / "step_00000002.npz").mkdir(parents=True)       # where the last checkpoint goes
    assert_before_training(run("train", *common, "--checkpoint-dir", blocked), "checkpoint_dir")


def test_a_new_run_does_not_mix_its_checkpoints_with_another_runs(trained):
    ckpt, _ = trained
    line = assert_before_training(run("train", *TINY, "--data", CORPUS, "--steps", 2, *FAST,
                                      "--checkpoint-dir", ckpt), "checkpoint_dir")
    assert "--resume" in line


def test_stop_after_needs_a_checkpoint_dir():
    result = run("train", *TINY, "--data", CORPUS, "--steps", 3, *FAST, "--stop-after", 1)
    assert_before_training(result, "stop_after")


def test_keep_zero_is_refused():
    result = run("train", *TINY, "--data", CORPUS, "--steps", 1, "--keep", 0)
    assert_before_training(result, "--keep")


@pytest.mark.parametrize("what", ["text", "empty"])
def test_resume_of_something_that_is_not_a_checkpoint(what):
    # an empty --resume used to be ignored: the run started over silently
    # (an empty value of any option is refused as the option, before the command runs)
    target = CORPUS if what == "text" else ""
    result = run("train", *TINY, "--data", CORPUS, "--steps", 1, "--resume", target)
    assert_before_training(result, "resume" if target else "--resume")


def test_resume_past_the_last_step_is_refused_and_at_it_is_nothing_to_do(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = [*TINY, "--data", CORPUS, *FAST, "--decay-steps", 4, "--checkpoint-dir", ckpt]
    train_ok(*common, "--steps", 3)
    line = assert_bad_input(run("train", *common, "--steps", 2, "--resume", ckpt), "steps")
    assert "step 3" in line
    done = train_ok(*common, "--steps", 3, "--resume", ckpt, "--stop-after", 2)
    assert "nothing to do" in done.stdout
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000003.npz"]


@pytest.mark.skipif(__import__("os").cpu_count() < 2, reason="needs two cores")
def test_resume_with_other_threads_says_it_may_not_be_bit_identical(tmp_path):
    ckpt = tmp_path / "ckpt"
    common = [*TINY, "--data", CORPUS, "--steps", 3, "--micro-batch", 2,
              "--checkpoint-dir", ckpt]
    train_ok(*common, "--threads", 1, "--stop-after", 1)
    try:
        result = train_ok(*common, "--threads", 2, "--resume", ckpt, "--json")
    finally:
        from trainer.host import set_threads
        set_threads(1)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")
                and "the machine was" not in line]        # a busy machine may add its own
    assert len(warnings) == 1 and "threads 1 -> 2" in warnings[0], result.stderr
    assert "may not be bit-identical" in warnings[0]
    resume = json.loads(result.stdout)["determinism"]["resume"]
    assert resume["bit_identical"] == "not guaranteed" and resume["checkpoint"]["threads"] == 1


def test_temporary_files_of_a_killed_writer_are_removed_at_start(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    writer = ("import sys, time\n"
              "from fpcore.atomic import atomic_write\n"
              "def slow(f):\n"
              "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n"
              f"atomic_write({str(ckpt / 'step_00000001.npz')!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [p.name for p in ckpt.iterdir()]
    assert len(left) == 1 and left[0].endswith(".tmp") and f".{proc.pid}." in left[0]
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 1, *FAST, "--checkpoint-dir", ckpt)
    assert "removed 1 temporary file(s) left by killed writers" in result.stderr
    assert left[0] in result.stderr
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000001.npz"]


def test_temporary_files_of_a_dead_writer_beside_a_resumed_checkpoint_are_removed(tmp_path):
    import subprocess
    import sys
    from fpcore.atomic import host_tag
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    train_ok(*TINY, "--data", CORPUS, "--steps", 2, *FAST, "--checkpoint-dir", ckpt,
             "--stop-after", 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = ckpt / f".step_00000002.npz.{host_tag()}.{dead}.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = train_ok(*TINY, "--data", CORPUS, "--steps", 2, *FAST, "--resume", ckpt,
                      "--checkpoint-dir", out)
    assert not stale.exists() and stale.name in result.stderr


@pytest.mark.slow
def test_ctrl_c_stops_after_the_step_writes_its_checkpoint_and_says_how_to_resume(tmp_path):
    """SIGINT during training: the run finishes its step, writes that step's checkpoint
    (with --checkpoint-dir), exits 130 and prints the command that continues it, which
    does."""
    import shlex
    import signal
    import subprocess
    import sys
    import time
    ckpt = tmp_path / "ckpt"
    args = [sys.executable, "-m", "fugakuperf", "train", *TINY, "--data", str(CORPUS),
            "--steps", "100000", *FAST, "--checkpoint-dir", str(ckpt)]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:            # until it has run a step
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("step "):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    said = rest.strip().splitlines()[-1]
    m = re.match(r"interrupted at step (\d+); checkpoint (\S+); continue with: (.*)$", said)
    assert m, said
    step, path = int(m.group(1)), Path(m.group(2))
    assert path.is_file() and path.name == f"step_{step:08d}.npz"
    command = shlex.split(m.group(3))
    assert command[0] == "fugakuperf" and command[-2:] == ["--resume", str(path)]
    again = subprocess.run([sys.executable, "-m", *command, "--stop-after", "1"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resumed from {path} at step {step}" in again.stderr


def test_the_resume_command_replaces_a_resume_already_given():
    from fugakuperf.train_commands import resume_command
    assert resume_command("c2.npz", 1, ["train", "--data", "a b.txt", "--resume", "c1.npz"]) \
        == "fugakuperf train --data 'a b.txt' --resume c2.npz"
    assert resume_command("c.npz", 4, ["train", "--resume=x"]) == \
        "mpiexec -n 4 fugakuperf train --resume c.npz"


def test_resume_takes_what_the_command_line_leaves_out_from_the_checkpoint(tmp_path):
    """A run stopped after 2 of 4 steps, resumed with only --data and --resume: the
    model, batch, seed and optimizer come from the checkpoint, the run goes on to the
    end of its schedule (step 4), and its parameters equal the uninterrupted run's."""
    flags = [*TINY, "--data", CORPUS, "--steps", 4, *FAST, "--lr", "3e-3", "--seed", 5]
    train_ok(*flags, "--checkpoint-dir", tmp_path / "whole")
    train_ok(*flags, "--checkpoint-dir", tmp_path / "cut", "--stop-after", 2)
    result = train_ok("--data", CORPUS, "--threads", 1, "--resume", tmp_path / "cut",
                      "--checkpoint-dir", tmp_path / "cut")
    assert "done: step 4" in result.stdout
    assert np.array_equal(params_of(tmp_path / "cut" / "step_00000004.npz"),
                          params_of(tmp_path / "whole" / "step_00000004.npz"))
    # a setting given on the command line still wins, and must agree to resume exactly
    changed = run("train", "--data", CORPUS, "--threads", 1, "--resume", tmp_path / "cut",
                  "--lr", "1e-3", "--steps", 5)
    assert changed.exit_code == 2 and "lr" in changed.stderr
