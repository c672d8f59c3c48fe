"""The packages depend one way: fpcore <- topologies <- perfmodel <- {calibration, reports}
<- fugakuperf, and trainer on the model description alone (perfmodel.model).

Every import statement of every module (at the top or inside a function) is read with
``ast``, so a lazy import counts as much as a top-level one. Run as a script to print
the package graph with the modules behind each edge:

    python tests/test_layers.py
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpcore", "topologies", "perfmodel", "trainer", "calibration", "reports",
            "fugakuperf")

# What each package may import of the project (itself always).
ALLOWED = {
    "fpcore": set(),
    "topologies": {"fpcore"},
    "perfmodel": {"fpcore", "topologies"},
    "trainer": {"fpcore", "perfmodel.model", "perfmodel.schedules"},
    "calibration": {"fpcore", "topologies", "perfmodel", "trainer"},
    "reports": {"fpcore", "topologies", "perfmodel", "calibration"},
    "fugakuperf": set(PACKAGES) - {"fugakuperf"},
}


def imports(path: Path) -> set[str]:
    """The absolute names of the project modules ``path`` imports (relative imports
    resolved against its package)."""
    package = path.relative_to(ROOT).parts[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:       # from .x import y, from . import y: within the package
                names = ([f"{package}.{node.module}"] if node.module else
                         [f"{package}.{a.name}" for a in node.names])
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n and n.split(".")[0] in PACKAGES}
    return out


def graph() -> dict[tuple[str, str], set[str]]:
    """(package, imported module) -> the modules of the package that import it."""
    edges = defaultdict(set)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imports(path):
                if name.split(".")[0] != package:
                    edges[(package, name)].add(str(path.relative_to(ROOT)))
    return edges


def allowed(package: str, name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[package])


def test_every_package_imports_only_what_lies_below_it():
    wrong = sorted(f"{', '.join(sorted(where))} imports {name}"
                   for (package, name), where in graph().items() if not allowed(package, name))
    assert wrong == []


def test_the_trainer_shares_only_the_model_description_and_the_schedules():
    """The model it trains, and the pipeline schedules (the step lists perfmodel
    simulates, which the trainer runs over MPI): data, no cost model."""
    names = {name for (package, name) in graph() if package == "trainer"}
    assert {n.rsplit(".", 1)[0] if n.count(".") > 1 else n
            for n in names if n.startswith("perfmodel")} == {"perfmodel.model",
                                                             "perfmodel.schedules"}


def test_no_lower_package_reads_the_version_from_the_command_line():
    assert not [k for k in graph() if k[1].startswith("fugakuperf") and k[0] != "fugakuperf"]


if __name__ == "__main__":
    by_package = defaultdict(lambda: defaultdict(set))
    for (package, name), where in graph().items():
        top = name.split(".")[0] if not name.startswith("perfmodel.model") else "perfmodel.model"
        by_package[package][top] |= where
    for package in PACKAGES:
        deps = by_package.get(package, {})
        print(f"{package} -> {', '.join(sorted(deps)) or '(nothing of the project)'}")
        for dep in sorted(deps):
            print(f"    {dep}: {', '.join(sorted(deps[dep]))}")
