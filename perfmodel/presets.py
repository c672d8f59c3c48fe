"""Load model and system presets from TOML (package data or a user's file).

A preset value is either plain (``layers = 40``) or sourced
(``cores = { value = 48, source = "..." }``); sources are kept so that reports
and ``fugakuperf presets`` can say where every number came from.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from fpcore.errors import SpecError, check_keys

from .model import ModelSpec

MODEL_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "seq",
              "tied_embeddings", "norm", "activation", "position", "bias", "dropout",
              "source", "expect_params")


def read_toml(path: Path | str) -> dict:
    """Parse a TOML file; a missing or malformed file is a SpecError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(str(path), "no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), f"malformed TOML: {e}") from None
    except OSError as e:
        raise SpecError(str(path), f"cannot be read: {e.strerror}") from None


def _package_tables(kind: str) -> dict[str, tuple[dict, str]]:
    """All preset tables of one kind ('models' or 'systems'): name -> (table, file)."""
    tables: dict[str, tuple[dict, str]] = {}
    folder = resources.files("perfmodel.data") / kind
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        with entry.open("rb") as f:
            data = tomllib.load(f)
        for name, table in data.items():
            if name in tables:
                raise SpecError(f"{kind}/{entry.name}", f"preset {name!r} defined twice")
            tables[name] = (table, f"{kind}/{entry.name}")
    return tables


@lru_cache(maxsize=None)
def _models() -> dict[str, tuple[dict, str]]:
    return _package_tables("models")


@lru_cache(maxsize=None)
def _systems() -> dict[str, tuple[dict, str]]:
    return _package_tables("systems")


def model_names() -> list[str]:
    return sorted(_models())


def system_names() -> list[str]:
    return sorted(_systems())


def model_from_table(name: str, table: dict, where: str) -> ModelSpec:
    check_keys(where, table, MODEL_KEYS)
    fields = {k: v for k, v in table.items() if k != "expect_params"}
    try:
        spec = ModelSpec(name=name, **fields)
    except SpecError as e:
        raise SpecError(f"{where}.{e.field}", e.message) from None
    expected = table.get("expect_params")
    if expected is not None and expected != spec.params:
        raise SpecError(f"{where}.expect_params",
                        f"says {expected:,} but the shape gives {spec.params:,}")
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
    if allow_files and (path.suffix == ".toml" or path.exists()):
        data = read_toml(path)
        if len(data) != 1 or not isinstance(next(iter(data.values())), dict):
            raise SpecError(str(path), f"must hold exactly one [{kind}-name] table")
        name, table = next(iter(data.items()))
        return name, table, f"{path}:{name}"
    raise SpecError(kind, f"unknown preset {str(name_or_path)[:100]!r}; known presets: "
                          f"{', '.join(sorted(tables))}"
                          + (" (or a path to a .toml file)" if allow_files else ""))


def load_model(name_or_path: str) -> ModelSpec:
    """A model preset by name, or the single model in a user's TOML file."""
    return model_from_table(*_find_table("model", name_or_path))


def system_table(name_or_path: str, allow_files: bool = True) -> tuple[str, dict, str]:
    """(name, table, where) of a system preset by name or from a user's TOML file."""
    return _find_table("system", name_or_path, allow_files)


def system_values(system) -> dict:
    """Preset values keyed as in the TOML file (``node.cores``), in the file's units."""
    _, table, _ = system_table(system.name)
    out = {}
    for part in ("node", "network"):
        for key, raw in table[part].items():
            out[f"{part}.{key}"] = raw["value"] if isinstance(raw, dict) and "value" in raw else raw
    for key in ("default_ranks_per_node", "allowed_ranks_per_node", "default_stack"):
        raw = table.get(key)
        out[key] = raw["value"] if isinstance(raw, dict) else raw
    for name, body in table.get("stacks", {}).items():
        for key, raw in body.items():
            if key != "description":
                out[f"stacks.{name}.{key}"] = raw["value"] if isinstance(raw, dict) else raw
    return out
