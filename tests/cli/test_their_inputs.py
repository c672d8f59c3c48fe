"""Inputs users already have: Megatron-LM's long option names are aliases of ours
where they mean the same (each read into the same parameter as our name, checked by
parsing alone), and a Hugging Face config.json is a model; Fugaku-LLM's run given in
Megatron's words, or from its config, plans as the README's pinned command."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fugakuperf.cli import main

ALIASES = [                        # (commands, Megatron's name, ours, value, parameter)
    (("plan", "simulate", "report", "train"), "--num-layers", "--layers", "4", "layers"),
    (("plan", "simulate", "report", "train"), "--hidden-size", "--hidden", "256", "hidden"),
    (("plan", "simulate", "report", "train"), "--num-attention-heads", "--heads", "4", "heads"),
    (("plan", "simulate", "report", "train"), "--num-query-groups", "--kv-heads", "2",
     "kv_heads"),
    (("plan", "simulate", "report", "train"), "--ffn-hidden-size", "--ffn", "1024", "ffn"),
    (("plan", "simulate", "report", "train"), "--seq-length", "--seq", "512", "seq"),
    (("plan", "simulate"), "--tensor-model-parallel-size", "--tp", "6", "tp"),
    (("plan", "simulate"), "--pipeline-model-parallel-size", "--pp", "8", "pp"),
    (("plan", "simulate", "train"), "--micro-batch-size", "--micro-batch", "2", "micro_batch"),
    (("plan", "simulate", "report", "train"), "--global-batch-size", "--global-batch", "2016",
     "global_batch"),
    (("plan", "simulate"), "--virtual-pipeline-model-parallel-size", "--virtual-stages", "2",
     "virtual_stages"),
    (("plan", "simulate"), "--recompute-granularity", "--recompute", "selective", "recompute"),
    (("plan", "simulate"), "--context-parallel-size", "--cp", "2", "cp"),
    (("plan", "simulate"), "--expert-model-parallel-size", "--ep", "8", "ep"),
]


def parsed(command: str, args: list[str]) -> dict:
    """The parameters ``command`` reads from ``args``, without running it."""
    cmd = main.commands[command]
    with cmd.make_context(command, list(args), resilient_parsing=True) as ctx:
        return ctx.params


@pytest.mark.parametrize("commands,alias,ours,value,name", ALIASES,
                         ids=[a[1] for a in ALIASES])
def test_a_megatron_name_sets_the_same_parameter(commands, alias, ours, value, name):
    for command in commands:
        theirs = parsed(command, [alias, value])[name]
        assert theirs == parsed(command, [ours, value])[name]
        assert str(theirs) == value


def test_fugaku_llms_run_in_megatrons_words_plans_as_the_pinned_command():
    megatron = ["--model", "fugaku-llm-13b", "--nodes", "13824",
                "--tensor-model-parallel-size", "6", "--pipeline-model-parallel-size", "8",
                "--global-batch-size", "2016", "--micro-batch-size", "1",
                "--recompute-granularity", "full", "--recompute-stages", "4", "--json"]
    ours = ["--model", "fugaku-llm-13b", "--nodes", "13824", "--tp", "6", "--pp", "8",
            "--global-batch", "2016", "--micro-batch", "1", "--recompute", "full",
            "--recompute-stages", "4", "--json"]
    a, b = (CliRunner().invoke(main, ["plan", *args]) for args in (megatron, ours))
    assert a.exit_code == b.exit_code == 0, a.output
    first, second = json.loads(a.stdout)["best"][0], json.loads(b.stdout)["best"][0]
    assert first["layout"] == second["layout"] and first["layout"]["dp"] == 288
    assert first["iteration_s"] == second["iteration_s"]


def test_help_names_both():
    result = CliRunner().invoke(main, ["plan", "--help"])
    assert "--tp, --tensor-model-parallel-size" in result.output
    assert "--global-batch, --global-batch-size" in result.output


def test_fugaku_llms_config_json_plans_as_the_preset():
    config = str(Path(__file__).resolve().parents[1] / "data" / "hf" / "fugaku-llm-13b.json")
    pinned = ["--nodes", "13824", "--tp", "6", "--pp", "8", "--global-batch", "2016",
              "--recompute", "full", "--recompute-stages", "4", "--json"]
    a, b = (CliRunner().invoke(main, ["plan", "--model", m, *pinned])
            for m in (config, "fugaku-llm-13b"))
    assert a.exit_code == b.exit_code == 0, a.output
    first, second = json.loads(a.stdout), json.loads(b.stdout)
    assert first["model"]["params"] == second["model"]["params"] == 13_167_577_728
    assert first["best"][0]["layout"] == second["best"][0]["layout"]
    assert first["best"][0]["iteration_s"] == second["best"][0]["iteration_s"]


# ------------------------------------------------------------ the inverse question
@pytest.mark.slow
def test_plan_days_answers_the_largest_model_in_one_command():
    """`plan --days 30 --nodes 4096`: the model found trains in 30 days by the p90 of
    its best layout's band on the system's own network, and the next larger size tried
    there does not (the time is jagged in the size, so that is the claim)."""
    from perfmodel.capacity import objective_time
    from perfmodel.plan import plan
    from perfmodel.sizing import model_for_params
    from perfmodel.system import load_system
    result = CliRunner().invoke(main, ["plan", "--days", "30", "--nodes", "4096", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    answer = d["answer"]
    assert d["question"]["nodes"] == 4096 and answer["nodes"] <= 4096
    assert answer["objective_time_to_train_s"] <= 30 * 86400
    assert d["plan"]["best"][0]["band"]["time_to_train_s_high"] == pytest.approx(
        answer["objective_time_to_train_s"])
    above = answer["smallest_too_slow_tried"]
    assert above is not None and above > answer["params"]
    larger = plan(model_for_params(above), load_system(), max_nodes=4096, top=1)
    assert objective_time(larger)[0] > 30 * 86400
    assert any(t["fits"] and t["params"] == answer["params"] for t in d["tried"])


# ------------------------------------------------------------------ --from-megatron
LAUNCH = str(Path(__file__).resolve().parents[1] / "data" / "megatron"
             / "fugaku-llm-13b_pp8_tp6_dp288_inner.sh")


def test_fugaku_llms_launch_script_plans_as_the_pinned_command():
    """Fugaku-LLM's launch script gives the preset's model, its TP6 PP8 and batch; with
    the recomputation on the first 4 of 8 stages that the job ran (NoCAPipe=4, a value
    its scripts compute per rank, which a reading of the arguments cannot see) it plans
    as the README's pinned command."""
    from perfmodel.megatron import read_megatron
    fields, pins, batch, ignored, _ = read_megatron(LAUNCH)
    assert fields == {"layers": 40, "hidden": 5184, "heads": 36, "seq": 2048}
    assert pins == {"tp": 6, "pp": 8, "micro_batch": 1, "recompute": "full"} and batch == 2016
    assert {"--cpu-optimizer", "--DDP-impl", "--lr"} <= set(ignored)
    a = CliRunner().invoke(main, ["plan", "--from-megatron", LAUNCH, "--nodes", "13824",
                                  "--recompute-stages", "4", "--json"])
    b = CliRunner().invoke(main, ["plan", "--model", "fugaku-llm-13b", "--nodes", "13824",
                                  "--tp", "6", "--pp", "8", "--global-batch", "2016",
                                  "--micro-batch", "1", "--recompute", "full",
                                  "--recompute-stages", "4", "--json"])
    assert a.exit_code == b.exit_code == 0, a.output
    first, second = json.loads(a.stdout), json.loads(b.stdout)
    assert first["model"]["params"] == second["model"]["params"] == 13_167_577_728
    assert first["best"][0]["layout"] == second["best"][0]["layout"]
    assert first["best"][0]["iteration_s"] == second["best"][0]["iteration_s"]
    assert "flags ignored" in a.stderr and "--cpu-optimizer" in a.stderr


def test_an_argument_list_reads_the_architecture_flags():
    from perfmodel.megatron import read_megatron
    fields, pins, _, _, _ = read_megatron(
        "--num-layers 2 --hidden-size 768 --num-attention-heads 12 --num-query-groups 4 "
        "--swiglu --normalization RMSNorm --position-embedding-type rope "
        "--untie-embeddings-and-output-weights --disable-bias-linear --sequence-parallel "
        "--tensor-model-parallel-size 2 --bf16 --recompute-granularity selective")
    assert fields == {"layers": 2, "hidden": 768, "heads": 12, "kv_heads": 4,
                      "activation": "swiglu", "ffn": 2048, "norm": "rmsnorm",
                      "position": "rope", "tied_embeddings": False, "bias": False}
    assert pins == {"sequence_parallel": True, "tp": 2, "precision": "bf16",
                    "recompute": "selective"}


@pytest.mark.parametrize("args,message", [
    (["--from-megatron", "--num-layers 2 --num-attention-heads 4"], "gives no --hidden-size"),
    (["--from-megatron", "--num-layers two --hidden-size 64 --num-attention-heads 4"],
     "--num-layers: must be a whole number"),
    (["--from-megatron", LAUNCH, "--params", "13e9"], "leave out --params"),
    # a size Megatron would refuse or divide by is refused as the flag it came in
    (["--from-megatron", "--num-layers 4 --hidden-size 256 --num-attention-heads 4 "
      "--tensor-model-parallel-size 0"],
     "--tensor-model-parallel-size: must be a whole number >= 1; got '0'"),
    (["--from-megatron", "--num-layers 4 --hidden-size 256 --num-attention-heads 4 "
      "--global-batch-size -16"], "--global-batch-size: must be a whole number >= 1"),
    (["--from-megatron", "--num-layers 4 --hidden-size 256 --num-attention-heads 4 "
      "--num-experts 4 --moe-expert-capacity-factor nan"],
     "--moe-expert-capacity-factor: must be a positive number; got 'nan'"),
    (["--from-megatron", "--num-layers 4 --hidden-size 256 --num-attention-heads 4 "
      "--recompute-granularity block"],
     "--recompute-granularity: must be full or selective; got 'block'"),
])
def test_a_launch_that_cannot_be_read_is_refused(args, message):
    result = CliRunner().invoke(main, ["plan", *args])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_a_script_without_a_training_command_is_named(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("TP=2\necho hello\n")
    result = CliRunner().invoke(main, ["plan", "--from-megatron", str(script)])
    assert result.exit_code == 2 and "no python pretrain" in result.stderr


def test_megatron_cores_mixtral_example_is_the_preset():
    """Megatron-Core's MoE README runs Mixtral 8x7B with these arguments (its
    "MoE training example", NVIDIA/Megatron-LM megatron/core/transformer/moe/README.md):
    the model read from them counts the preset's parameters, and EP 8 is pinned."""
    from perfmodel.megatron import read_megatron
    from perfmodel.model import ModelSpec
    from perfmodel.presets import load_model
    args = ("--num-layers 32 --hidden-size 4096 --ffn-hidden-size 14336 "
            "--num-attention-heads 32 --group-query-attention --num-query-groups 8 "
            "--seq-length 4096 --max-position-embeddings 32768 --vocab-size 32000 "
            "--position-embedding-type rope --swiglu --untie-embeddings-and-output-weights "
            "--normalization RMSNorm --disable-bias-linear --num-experts 8 "
            "--moe-router-topk 2 --expert-model-parallel-size 8 "
            "--tensor-model-parallel-size 1 --pipeline-model-parallel-size 4 "
            "--micro-batch-size 1 --global-batch-size 128 --bf16")
    fields, pins, batch, ignored, _ = read_megatron(args)
    model = ModelSpec(**fields)
    mixtral = load_model("mixtral-8x7b")
    assert (model.params, model.active_params) == (mixtral.params, mixtral.active_params)
    assert pins == {"ep": 8, "tp": 1, "pp": 4, "micro_batch": 1, "precision": "bf16"}
    assert batch == 128 and "--max-position-embeddings" in ignored
