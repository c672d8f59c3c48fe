"""A Megatron-LM / Megatron-DeepSpeed launch (``--from-megatron SCRIPT`` or an argument
list) read as a model, a layout and a precision.

A shell script is read the way its ``python pretrain_*.py ...`` line would run: lines
continued with a backslash are joined; plain assignments (``NAME=value``,
``export NAME="..."``) give the variables; ``$NAME``, ``${NAME}`` and integer
arithmetic ``$((...))`` over them are expanded; the words after the training script
are the arguments. Anything else the shell would do (conditionals, commands run per
rank) is not: a value such a script computes at run time is not seen.

The flags read (``FLAGS``) map to the model's shape, the layout's pins and the
precision, as Megatron-LM names them; every other flag is listed as ignored (data,
paths, learning rate and the like change nothing a plan predicts, or the software
stack states it: ``--DDP-impl``, ``--cpu-optimizer``).
"""

from __future__ import annotations

import ast
import math
import operator
import re
import shlex
from pathlib import Path

from fpcore.errors import SpecError

# Megatron's flag -> (what it sets, the field, how its value is read: a type or choices)
FLAGS = {
    "--num-layers": ("model", "layers", int),
    "--hidden-size": ("model", "hidden", int),
    "--num-attention-heads": ("model", "heads", int),
    "--num-query-groups": ("model", "kv_heads", int),
    "--ffn-hidden-size": ("model", "ffn", int),
    "--seq-length": ("model", "seq", int),
    "--vocab-size": ("model", "vocab", int),
    "--padded-vocab-size": ("model", "vocab", int),
    "--tensor-model-parallel-size": ("pin", "tp", int),
    "--pipeline-model-parallel-size": ("pin", "pp", int),
    "--micro-batch-size": ("pin", "micro_batch", int),
    "--global-batch-size": ("batch", "global_batch", int),
    "--virtual-pipeline-model-parallel-size": ("pin", "virtual_stages", int),
    # Megatron-LM megatron/training/arguments.py: choices=['full', 'selective']
    "--recompute-granularity": ("pin", "recompute", ("full", "selective")),
    "--context-parallel-size": ("pin", "cp", int),
    "--expert-model-parallel-size": ("pin", "ep", int),
    "--moe-expert-parallel-size": ("pin", "ep", int),       # (Megatron-DeepSpeed's name)
    "--num-experts": ("model", "experts", int),
    "--moe-router-topk": ("model", "top_k", int),
    "--moe-ffn-hidden-size": ("model", "expert_ffn", int),
    "--moe-expert-capacity-factor": ("model", "capacity_factor", float),
}
SWITCHES = {                      # flags without a value -> (what, field, value)
    "--sequence-parallel": ("pin", "sequence_parallel", True),
    "--checkpoint-activations": ("pin", "recompute", "full"),
    "--recompute-activations": ("pin", "recompute", "selective"),
    "--fp16": ("pin", "precision", "fp16"),
    "--bf16": ("pin", "precision", "bf16"),
    "--swiglu": ("model", "activation", "swiglu"),
    "--untie-embeddings-and-output-weights": ("model", "tied_embeddings", False),
    "--disable-bias-linear": ("model", "bias", False),
    # Megatron-DeepSpeed: the experts split over TP (else whole on every TP rank)
    "--enable-expert-tensor-parallelism": ("pin", "expert_tp", True),
}
MAX_TEXT = 1_000_000
MAX_VARIABLE = 100_000          # a launch script's variable, expanded (an argument list is less)


def read_megatron(source: str) -> tuple[dict, dict, int | None, list[str], str]:
    """(model fields, layout pins, global batch, flags ignored, where) of a launch
    script's path or an argument list."""
    where = "--from-megatron"
    path = Path(source)
    try:
        is_file = len(source) < 4096 and path.is_file()
    except OSError:
        is_file = False
    if is_file:
        from fpcore.readers import read_text
        where = str(path)
        words = script_arguments(read_text(path, "from-megatron", MAX_TEXT), where)
    else:
        try:
            words = shlex.split(source)
        except ValueError as e:
            raise SpecError("from-megatron", f"cannot split the arguments: {e}") from None
    model, pins, batch, ignored = {}, {}, None, []
    i = 0
    while i < len(words):
        word = words[i]
        flag, _, inline = word.partition("=")
        if flag in FLAGS:
            kind, field, cast = FLAGS[flag]
            value = inline if inline else (words[i + 1] if i + 1 < len(words) else None)
            i += 1 if inline else 2
            if value is None:
                raise SpecError(f"{where}: {flag}", "needs a value")
            value = _value(value, cast, f"{where}: {flag}")
            if kind == "model":
                model[field] = value
            elif kind == "pin":
                pins[field] = value
            else:
                batch = value
            continue
        if flag in SWITCHES:
            kind, field, value = SWITCHES[flag]
            (model if kind == "model" else pins)[field] = value
        elif flag == "--normalization":
            norm = words[i + 1] if i + 1 < len(words) else ""
            model["norm"] = {"RMSNorm": "rmsnorm", "LayerNorm": "layernorm"}.get(norm, norm)
            i += 2
            continue
        elif flag == "--position-embedding-type":
            kind = words[i + 1] if i + 1 < len(words) else ""
            model["position"] = {"rope": "rope", "learned_absolute": "learned"}.get(kind, kind)
            i += 2
            continue
        elif flag.startswith("--"):
            ignored.append(flag)
        i += 1
    missing = [flag for flag, field in (("--num-layers", "layers"), ("--hidden-size", "hidden"),
                                        ("--num-attention-heads", "heads")) if field not in model]
    if missing:
        raise SpecError(where, f"gives no {missing[0]}: the model's shape needs --num-layers, "
                               f"--hidden-size and --num-attention-heads")
    if model.get("activation") == "swiglu" and "ffn" not in model:
        model["ffn"] = _swiglu_ffn(model["hidden"])
    if model.get("experts"):
        if "top_k" not in model and model["experts"] < 2:
            raise SpecError(f"{where}: --num-experts", f"{model['experts']} expert is fewer "
                                                       f"than Megatron-Core's default "
                                                       f"--moe-router-topk 2: give "
                                                       f"--moe-router-topk 1")
        model.setdefault("top_k", 2)   # Megatron-Core's --moe-router-topk default
    return model, pins, batch, sorted(set(ignored)), where


def _value(text: str, cast, field: str):
    """A flag's value as Megatron reads it: its counts and sizes whole numbers of at
    least 1, its factors finite and positive (a 0 Megatron itself would refuse or
    divide by); a choice one of its choices."""
    if isinstance(cast, tuple):
        if text not in cast:
            raise SpecError(field, f"must be {' or '.join(cast)}; got {text[:30]!r}")
        return text
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        kind = "whole number >= 1" if cast is int else "positive number"
        raise SpecError(field, f"must be a {kind}; got {text[:30]!r}")
    return value


def _swiglu_ffn(hidden: int) -> int:
    """Megatron-LM's default FFN size with --swiglu: 4h x 2/3, rounded up to 64."""
    return -(-int(4 * hidden * 2 / 3) // 64) * 64


_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.FloorDiv: operator.floordiv, ast.Div: operator.floordiv, ast.Mod: operator.mod}


def _arith(expr: str, variables: dict) -> str:
    """Shell integer arithmetic over known variables (a value it cannot work out is
    left as it was written)."""
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and re.fullmatch(r"-?\d+", variables.get(node.id, "")):
            return int(variables[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            return _ARITH[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(expr)
    try:
        return str(value(ast.parse(expr.replace("$", "").strip(), mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError, RecursionError):
        return f"$(({expr}))"


def _expand(text: str, variables: dict, limit: int = MAX_TEXT) -> str:
    """``text`` with its variables' values in; SpecError (field "expanded") past ``limit``
    characters, before building them (a line may name a long variable many times)."""
    text = re.sub(r"\$\(\((.*?)\)\)", lambda m: _arith(m.group(1), variables), text)
    size = len(text)

    def value(m) -> str:
        nonlocal size
        out = variables.get(m.group(1) or m.group(2), m.group(0))
        size += len(out) - len(m.group(0))
        if size > limit:
            raise SpecError("expanded", f"more than {limit:,} characters")
        return out
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def script_arguments(text: str, where: str) -> list[str]:
    """The arguments a launch script passes to its ``pretrain_*.py``."""
    lines = text.replace("\\\n", " ").splitlines()
    variables: dict[str, str] = {}
    for line in lines:
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$", line)
        if m:
            raw = m.group(2).split(" #")[0].strip()
            try:                             # (each using the last twice: 2^n characters)
                value = _expand(raw, variables, MAX_VARIABLE)
            except SpecError:
                raise SpecError(where, f"variable {m.group(1)} expands to more than "
                                       f"{MAX_VARIABLE:,} characters; not a launch script"
                                ) from None
            try:
                parts = shlex.split(value)
            except ValueError:
                continue
            variables[m.group(1)] = " ".join(parts)
            continue
        if re.search(r"\bpretrain_\w*\.py\b", line):
            try:
                words = shlex.split(_expand(line, variables), comments=True)
            except SpecError:            # (a ValueError too: first)
                raise SpecError(where, f"the training command expands to more than "
                                       f"{MAX_TEXT:,} characters; not a launch script") from None
            except ValueError as e:
                raise SpecError(where, f"cannot split the training command: {e}") from None
            start = next((k for k, w in enumerate(words)
                          if re.search(r"pretrain_\w*\.py$", w)), None)
            if start is not None:
                return words[start + 1:]
    raise SpecError(where, "has no python pretrain_*.py command (Megatron-LM's training "
                           "script) to read the arguments of")
