"""Load model and system presets from TOML (package data or a user's file).

A preset value is either plain (``layers = 40``) or sourced
(``cores = { value = 48, source = "..." }``); sources are kept so that reports
and ``fugakuperf presets`` can say where every number came from.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from fpcore.caches import cached
from fpcore.errors import SpecError, check_int, check_keys, check_str, require
from fpcore.readers import parse_toml, read_toml

from .model import ModelSpec

MODEL_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq",
              "tied_embeddings", "norm", "activation", "position", "bias", "dropout",
              "experts", "top_k", "expert_ffn", "shared_experts", "moe_every", "first_dense",
              "capacity_factor", "source", "expect_params")
MODEL_REQUIRED = tuple(f.name for f in dataclasses.fields(ModelSpec)     # no default
                       if f.default is f.default_factory is dataclasses.MISSING)
MAX_NAME = 200       # characters in a preset's (a table's) name


def _package_tables(kind: str) -> dict[str, tuple[dict, str]]:
    """All preset tables of one kind ('models' or 'systems'): name -> (table, file)."""
    tables: dict[str, tuple[dict, str]] = {}
    folder = resources.files("perfmodel.data") / kind
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = parse_toml(entry.read_text(encoding="utf-8"), f"{kind}/{entry.name}")
        for name, table in data.items():
            if name in tables:
                raise SpecError(f"{kind}/{entry.name}", f"preset {name!r} defined twice")
            tables[name] = (table, f"{kind}/{entry.name}")
    return tables


@cached("presets", maxsize=None)
def _models() -> dict[str, tuple[dict, str]]:
    return _package_tables("models")


@cached("presets", maxsize=None)
def _systems() -> dict[str, tuple[dict, str]]:
    return _package_tables("systems")


def model_names() -> list[str]:
    return sorted(_models())


def system_names() -> list[str]:
    return sorted(_systems())


def is_shipped(system) -> bool:
    """Whether ``system`` was read from the shipped preset of its name (not from a
    user's file whose table is named like it)."""
    found = _systems().get(system.name)
    return found is not None and system.origin == f"{found[1]}:{system.name}"


def model_from_table(name: str, table: dict, where: str) -> ModelSpec:
    check_keys(where, table, MODEL_KEYS)
    require(where, table, MODEL_REQUIRED)
    fields = {k: v for k, v in table.items() if k != "expect_params"}
    try:
        check_str("name", name, max_len=MAX_NAME)
        if "source" in fields:
            check_str("source", fields["source"])
        spec = ModelSpec(name=name, **fields)
        expected = table.get("expect_params")
        if expected is not None:
            expected = check_int("expect_params", expected)
            if expected != spec.params:
                raise SpecError("expect_params", f"says {expected:,} but the shape gives "
                                                 f"{spec.params:,}")
    except SpecError as e:
        raise e.within(where) from None
    return spec


def _find_table(kind: str, name_or_path: str, allow_files: bool = True) -> tuple[str, dict, str]:
    """(name, table, where) of a preset of ``kind`` ("model" or "system") by name, or of
    the single table in a user's TOML file (only with ``allow_files``: a name read from
    a file, such as a run log's ``system`` column, resolves presets only)."""
    tables = _models() if kind == "model" else _systems()
    if name_or_path in tables:
        table, file = tables[name_or_path]
        return name_or_path, table, f"{file}:{name_or_path}"
    path = Path(name_or_path)
    try:
        looks_like_a_file = path.suffix == ".toml" or path.exists()
    except OSError:                 # e.g. a name too long for the file system: read it and say so
        looks_like_a_file = True
    if allow_files and looks_like_a_file:
        data = read_toml(path)
        if len(data) != 1 or not isinstance(next(iter(data.values())), dict):
            raise SpecError(str(path), f"must hold exactly one [{kind}-name] table")
        name, table = next(iter(data.items()))
        if len(name) > MAX_NAME:
            raise SpecError(str(path), f"the table's name is {len(name):,} characters long; "
                                       f"at most {MAX_NAME} are allowed")
        return name, table, f"{path}:{name}"
    raise SpecError(kind, f"unknown preset {str(name_or_path)[:100]!r}; known presets: "
                          f"{', '.join(sorted(tables))}"
                          + (" (or a path to a .toml file)" if allow_files else ""))


def load_model(name_or_path: str, seq: int | None = None) -> ModelSpec:
    """A model preset by name, the single model in a user's TOML file, or a Hugging
    Face ``config.json`` (a ``.json`` file: perfmodel.hfconfig; ``seq``, the sequence
    trained, if not the longest the config takes)."""
    if str(name_or_path).endswith(".json") and name_or_path not in _models():
        from fpcore.readers import read_json
        from .hfconfig import model_from_hf_config
        path = Path(name_or_path)
        data = read_json(path, "model")
        name = data.get("_name_or_path") if isinstance(data, dict) else None
        name = name if isinstance(name, str) and 0 < len(name) <= MAX_NAME else path.stem
        return model_from_hf_config(data, str(path), name, seq)
    return model_from_table(*_find_table("model", name_or_path))


MAX_BASES = 4        # presets a system may be based on in a chain


def system_table(name_or_path: str, allow_files: bool = True) -> tuple[str, dict, str]:
    """(name, table, where) of a system preset by name or from a user's TOML file. A
    table with ``based_on = "PRESET"`` is that preset's table with its own values
    written over it (a variant names only what it changes)."""
    name, table, where = _find_table("system", name_or_path, allow_files)
    return name, _with_base(table, where, 0), where


def _with_base(table: dict, where: str, depth: int) -> dict:
    if not isinstance(table, dict) or "based_on" not in table:
        return table
    base = table["based_on"]
    here = f"{where}.based_on"
    check_str(here, base, max_len=MAX_NAME)
    if base not in _systems():
        raise SpecError(here, f"must name a system preset; known presets: "
                              f"{', '.join(sorted(_systems()))}")
    if depth >= MAX_BASES:
        raise SpecError(here, f"chains more than {MAX_BASES} presets (or loops)")
    parent, file = _systems()[base]
    parent = _with_base(parent, f"{file}:{base}", depth + 1)
    return _merged(parent, {k: v for k, v in table.items() if k != "based_on"})


def _merged(base: dict, over: dict) -> dict:
    """``over`` written over ``base``: tables merge key by key, a ``{value, source}``
    pair or any other value replaces the base's whole."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if (isinstance(value, dict) and isinstance(old, dict) and "value" not in value
                and "value" not in old):
            out[key] = _merged(old, value)
        else:
            out[key] = value
    return out


def system_values(system) -> dict:
    """The values of ``system`` keyed as in its TOML file (``node.cores``), in the file's
    units: those of the table it was read from (not of a preset it may be named after),
    as the options and stack in use leave them (perfmodel.system.SystemSpec.toml_values)."""
    return system.toml_values()
