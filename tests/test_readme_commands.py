"""The README's commands as printed: each names a real command and only options it
takes, with values of the right type (parsed by the command itself, not run), and a
block of commands that are not under .venv/bin/ first puts .venv/bin on PATH."""

import re
import shlex
from pathlib import Path

import click
import pytest

from fugakuperf.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```sh\n(.*?)```", README, re.S)


def commands():
    """(block, words) of every fugakuperf command line of the README's shell blocks."""
    for k, block in enumerate(BLOCKS):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["mpiexec"]:
                words = words[3:]                    # mpiexec -n N ...
            if words and words[0].endswith("fugakuperf") and "..." not in words:
                yield k, words


CASES = list(commands())


def test_the_readme_has_commands():
    assert len(CASES) >= 20


@pytest.mark.parametrize("block,words", CASES, ids=[" ".join(w[:3]) for _, w in CASES])
def test_a_readme_command_parses(block, words):
    name, args = words[1], words[2:]
    assert name in main.commands, f"no command {name!r}"
    command = main.commands[name]
    try:
        command.make_context(name, list(args))
    except click.exceptions.Exit:
        pass                                         # --help
    except click.UsageError as e:
        pytest.fail(f"{' '.join(words)}: {e.format_message()}")
    if not words[0].startswith(".venv/bin/"):        # bare: the block activates the venv
        assert ". .venv/bin/activate" in BLOCKS[block], " ".join(words)
