"""``fugakuperf presets``, ``--help``/``--version``, and the fast-import promise."""

import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import fugakuperf
from fugakuperf.cli import main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "simpy", "numba", "networkx", "matplotlib")


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def python(code_or_args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_presets_lists_models_and_systems():
    out = invoke("presets")
    assert "fugaku-llm-13b" in out
    assert "13.17 B" in out          # 13,167,577,728 parameters
    systems = out.split("Systems", 1)[1]
    assert "fugaku" in systems


def test_presets_json_lists_every_model_with_params():
    data = json.loads(invoke("presets", "--json"))
    assert data["models"]["fugaku-llm-13b"]["params"] == 13_167_577_728
    assert "fugaku" in data["systems"]


def test_system_preset_shows_the_source_of_every_value():
    out = invoke("presets", "--system", "fugaku")
    assert out.startswith("fugaku: ")
    assert "Manual" in out           # A64FX Microarchitecture Manual
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "node.cores" in lines and "48" in lines["node.cores"]
    assert "207.69" in lines["node.stream_bandwidth_per_domain_gbs"]


def test_system_preset_json_has_values_and_sources():
    data = json.loads(invoke("presets", "--system", "fugaku", "--json"))
    assert data["values"]["node.cores"] == 48
    assert data["values"]["network.shape"] == [24, 23, 24, 2, 3, 2]
    assert set(data["values"]) >= set(data["sources"])
    assert all(data["sources"].values())


def test_model_preset_json():
    data = json.loads(invoke("presets", "--model", "fugaku-llm-13b", "--json"))
    assert data["params"] == 13_167_577_728
    assert (data["layers"], data["hidden"], data["heads"]) == (40, 5184, 36)


def test_model_preset_text_prints_counts_with_commas():
    assert "13,167,577,728" in invoke("presets", "--model", "fugaku-llm-13b")


def test_unknown_preset_is_an_error_naming_the_field():
    result = CliRunner().invoke(main, ["presets", "--model", "nope"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "error: model: " in result.output


def test_help_lists_the_commands():
    """The main page's "Commands:" section lists them with their own summaries (its
    examples above name them too, so finding the names anywhere proves nothing)."""
    section = invoke("--help").split("\nCommands:\n", 1)[1]
    commands = {m.group(1): m.group(2)
                for m in re.finditer(r"^  ([\w-]+) {2,}(\S.*)$", section, re.M)}
    assert commands["plan"].startswith("Best parallel layouts, throughput, memory")
    assert commands["presets"].startswith("List model and system presets")


def test_presets_help_says_what_it_shows():
    """``presets --help`` itself: its options, listed as options, and what each shows."""
    out = invoke("presets", "--help")
    assert re.match(r"Usage: \S+ presets \[OPTIONS\]\n", out)
    options = out.split("\nOptions:\n", 1)[1]
    listed = {m.group(1): " ".join(m.group(2).split())
              for m in re.finditer(r"^  (--[\w-]+)(?: [A-Z]+)? +(\S.*)$", options, re.M)}
    assert listed["--model"] == "Show one model preset in full."
    assert listed["--system"] == "Show one system preset with the source of every value."
    assert listed["--json"] == "Print JSON."


def test_cli_import_does_not_load_heavy_modules():
    code = ("import fugakuperf.cli, sys; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_plan_help_does_not_load_heavy_modules():
    code = ("import sys; from click.testing import CliRunner; from fugakuperf.cli import main; "
            "r = CliRunner().invoke(main, ['plan', '--help']); assert r.exit_code == 0, r.output; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_python_m_fugakuperf_version():
    proc = python(["-m", "fugakuperf", "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fugakuperf, version {fugakuperf.__version__}"


def _custom_system(tmp_path, table: str) -> Path:
    """The Fugaku preset with 24 cores per node, under the table name ``table``."""
    from importlib import resources
    text = (resources.files("perfmodel.data") / "systems" / "fugaku.toml").read_text()
    path = tmp_path / f"{table}.toml"
    path.write_text(text.replace("[fugaku", f"[{table}")
                    .replace("cores = { value = 48,", "cores = { value = 24,"))
    return path


def test_a_custom_system_named_like_a_preset_shows_its_own_values(tmp_path):
    path = _custom_system(tmp_path, "fugaku")
    data = json.loads(invoke("presets", "--system", str(path), "--json"))
    assert data["name"] == "fugaku" and data["origin"] == f"{path}:fugaku"
    assert data["values"]["node.cores"] == 24                  # the file's, not the preset's 48
    out = invoke("presets", "--system", str(path))
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert " 24 " in lines["node.cores"] and str(path) in out
    assert json.loads(invoke("presets", "--system", "fugaku", "--json"))["values"]["node.cores"] == 48


def test_a_custom_system_with_any_table_name_is_shown(tmp_path):
    path = _custom_system(tmp_path, "mymachine")
    data = json.loads(invoke("presets", "--system", str(path), "--json"))
    assert data["name"] == "mymachine" and data["values"]["node.cores"] == 24
    assert set(data["values"]) >= set(data["sources"])


def test_a_system_preset_prints_as_its_toml_with_its_stacks_and_tags():
    """Values as the TOML file writes them (never Python's reprs), every software stack
    with the default marked, and what the sources' tags mean."""
    out = invoke("presets", "--system", "fugaku")
    assert "{ fp64 = 32, fp32 = 64, fp16 = 128 }" in out and '["X", "Y", "Z", "a", "b", "c"]' in out
    import re
    assert not re.search(r" (True|False|None)  |\['|\{'", out)        # no Python reprs
    assert "fugaku-llm (default):" in out and "deepspeedfugaku-2023:" in out
    assert "[P] peak or nominal" in out and "[A] assumed" in out
    model = invoke("presets", "--model", "llama2-7b")
    assert 'norm             "rmsnorm"' in model and "tied_embeddings  false" in model
