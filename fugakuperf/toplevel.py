"""How the command line ends: every failure is one line on stderr and a non-zero exit.

* bad input (a ``SpecError`` from any package, or a usage error from click): the
  field or file and what is allowed, exit 2;
* the environment (a disk full, out of memory): what failed, exit 1;
* interrupted (Ctrl-C): exit 130;
* anything else is a bug: one line naming the command line and asking for a report,
  exit 70 (``EX_SOFTWARE``). ``FUGAKUPERF_DEBUG=1`` shows the traceback instead.

A closed stdout (``fugakuperf plan | head``) ends quietly.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

BAD_INPUT, ENVIRONMENT, INTERRUPTED, BUG = 2, 1, 130, 70


LONG_WORD = 240          # characters of one word (a path, a value) shown in an error


def _short(word: str) -> str:
    """A word past LONG_WORD characters with its middle elided (a 4,000-character path
    keeps its start and its end, where the file name is)."""
    if len(word) <= LONG_WORD:
        return word
    return f"{word[:LONG_WORD // 2]}...({len(word) - LONG_WORD + 40:,} characters)..." \
           f"{word[-(LONG_WORD // 2 - 40):]}"


def _line(text: str) -> str:
    return " ".join(_short(w) for w in str(text).split())


def _fail(message: str, code: int):
    click.echo(_line(message), err=True)
    sys.exit(code)


def emit(data: dict, as_json: bool, renderer: str) -> None:
    """A command's result on stdout: ``data`` as JSON, or as text by
    ``reports.text.<renderer>`` (rendering lives in reports/, never here)."""
    if as_json:
        from fpcore.readers import dumps
        click.echo(dumps(data, indent=2))
    else:
        from reports import text
        click.echo(getattr(text, renderer)(data))


def emit_each(nodes: list[int], answers: list, as_json: bool, renderer: str, key: str) -> None:
    """One answer per node count (``answers``: a function each, called in turn). One
    count prints as the command always has; several, with a line on stderr as each
    starts, print as JSON ``{"nodes": [...], key: [...]}`` and as text by
    ``reports.text.<renderer>_each``."""
    if len(answers) == 1:
        emit(answers[0](), as_json, renderer)
        return
    results = []
    for k, (n, answer) in enumerate(zip(nodes, answers), 1):
        click.echo(f"[{k} of {len(nodes)}] {n:,} nodes", err=True)
        results.append(answer())
    emit({"nodes": list(nodes), key: results}, as_json, f"{renderer}_each")


def _command_line(args) -> str:
    words = ["fugakuperf"] + list(sys.argv[1:] if args is None else args)
    text = shlex.join(words)
    return text if len(text) <= 300 else text[:297] + "..."


# Options whose value may be empty (an empty prompt: generate from nothing).
EMPTY_OK = ("--prompt",)


def empty_word(words) -> str | None:
    """What an empty word of the command line stands for ('--trace' in ``--trace ''``,
    'argument' for a command's own), or None: no value of this command line may be
    empty (click would take '' as given, and a path '' as the working directory or as
    no path at all)."""
    for i, word in enumerate(words):
        if word == "--":
            return None
        name, eq, value = word.partition("=")
        if word.startswith("--") and eq and not value and name not in EMPTY_OK:
            return name
        if word == "" and not (i and words[i - 1] in EMPTY_OK):
            return words[i - 1] if i and words[i - 1].startswith("-") else "argument"
    return None


class Commands(click.Group):
    """The ``fugakuperf`` group: runs a command, turning any failure into one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from fpcore.errors import SpecError
        debug = os.environ.get("FUGAKUPERF_DEBUG", "") not in ("", "0")
        empty = empty_word(list(sys.argv[1:] if args is None else args))
        if empty is not None:
            _fail(f"error: {empty}: is empty; give a value, or leave it out", BAD_INPUT)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SpecError as e:
            if debug:
                raise
            _fail(f"error: {e}", BAD_INPUT)
        except click.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
            param = getattr(e, "param", None)
            if isinstance(e, click.BadParameter) and param is not None and \
                    not isinstance(e, click.MissingParameter):     # its message is empty
                name = param.opts[0] if getattr(param, "opts", None) else param.name
                _fail(f"error: {name}: {e.message}{hint}", BAD_INPUT)
            _fail(f"error: {e.format_message()}{hint}", BAD_INPUT)
        except click.ClickException as e:
            _fail(f"error: {e.format_message()}", e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", INTERRUPTED)
        except BrokenPipeError:
            # the reader went away (``| head``): nothing more to say, and nothing to flush
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(ENVIRONMENT)
        except MemoryError:
            if debug:
                raise
            _fail("error: out of memory: the machine cannot hold what this command needs "
                  "(try a smaller model, batch or node count)", ENVIRONMENT)
        except OSError as e:
            if debug:
                raise
            what = f"{e.filename}: " if e.filename else ""
            _fail(f"error: {what}{e.strerror or e}", ENVIRONMENT)
        except Exception as e:              # a bug: say so in one line, ask for a report
            if debug:
                raise
            _fail(f"fugakuperf: internal error ({type(e).__name__}: {e}) while running "
                  f"`{_command_line(args)}`. This is a bug: please report it with this "
                  f"command line and its input files (FUGAKUPERF_DEBUG=1 prints the "
                  f"traceback).", BUG)
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code
