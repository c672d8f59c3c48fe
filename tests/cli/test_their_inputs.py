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


@pytest.mark.parametrize("args,field", [
    (["--days", "30", "--params", "13e9"], "params"),
    (["--days", "30", "--tp", "6"], "tp"),
    (["--days", "30", "--nodes", "384,768"], "nodes"),
    (["--days", "30", "--max-mw", "0.0001"], "max-mw"),
    (["--params", "13e9", "--budget-node-hours", "1e6"], "budget-node-hours"),
    (["--days", "0"], "--days"),
])
def test_the_inverse_question_refuses_what_it_cannot_answer(args, field):
    result = CliRunner().invoke(main, ["plan", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field}") and len(result.stderr.splitlines()) == 1
