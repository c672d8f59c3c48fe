"""The repository stands alone: its docstrings, comments and docs cite only documents
it holds.

The facts and closed forms the code relies on live in docs/facts.md and
docs/formulas.md, the map of the models in docs/planning.md. A citation of a sheet
kept outside the repository (FACTS.md, FORMULAS.md, STYLE.md, DESIGN.md, in any
spelling that names one of them, or the retired docs/plan.md) fails, and so does a
citation of a ``docs/*.md`` file that does not exist. Every offending line is named
with its file and line number.
"""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = (".py", ".md", ".toml")
SKIPPED_DIRS = {".venv", ".git", "build", "__pycache__", ".pytest_cache", ".hypothesis"}

# Sheets outside the repository, cited by name ("FACTS.md", "FACTS: ...", "STYLE 8")
# or by file name in any case unless it is one of the repository's own docs/ files.
OUTSIDE = re.compile(r"\b(?:FACTS|FORMULAS|STYLE|DESIGN)\b"
                     r"|(?<!docs/)\b(?i:facts|formulas|style|design)\.md\b"
                     r"|\bdocs/plan\.md\b"
                     r"|/work/shared\b")
DOCS_CITATION = re.compile(r"\bdocs/([\w.-]+\.md)\b")
MARKDOWN_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#[\w-]*)?\)")   # a relative link in docs/


def repository_files() -> list[Path]:
    """The repository's .py, .md and .toml files: those git tracks or would add (not
    ignored), or, outside a git checkout, every such file below the root."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        paths = [REPO / line for line in out.splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in REPO.rglob("*") if p.is_file()]
    return sorted(p for p in paths
                  if p.suffix in SUFFIXES and p.is_file()
                  and not SKIPPED_DIRS & set(p.relative_to(REPO).parts))


def cited_lines():
    """(path, "file:line: text", line) for every line of the repository's files but
    this one, whose patterns and examples name the citations it looks for."""
    this = Path(__file__).resolve()
    for path in repository_files():
        if path.resolve() != this:
            for where, line in lines_of(path):
                yield path, where, line


def lines_of(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield f"{path.relative_to(REPO)}:{number}: {line.strip()}", line


def test_the_files_are_found():
    names = {p.relative_to(REPO).as_posix() for p in repository_files()}
    assert {"README.md", "pyproject.toml", "docs/facts.md", "docs/formulas.md",
            "docs/planning.md", "perfmodel/data/systems/fugaku.toml",
            "tests/test_docs.py"} <= names
    assert not any(name.startswith(".venv/") for name in names)


def test_the_pattern_catches_what_it_must_and_spares_the_repository_docs():
    """The check itself can fail: each spelling of an outside citation is caught,
    the repository's own docs are not."""
    cited = ["see FACTS.md", "(FACTS: unconfirmed)", "(STYLE 8)", "FORMULAS.md / DESIGN.md",
             "the design.md page", "../Facts.md", "documented in docs/plan.md",
             "/work/shared/FORMULAS.md"]
    assert all(OUTSIDE.search(text) for text in cited), [t for t in cited
                                                        if not OUTSIDE.search(t)]
    spared = ["see docs/facts.md", "docs/formulas.md rows", "docs/planning.md", "TITLE_STYLE",
              "a design choice", "style of the code", "host facts"]
    assert not any(OUTSIDE.search(text) for text in spared), [t for t in spared
                                                             if OUTSIDE.search(t)]


def test_nothing_cites_a_sheet_outside_the_repository():
    found = [where for _, where, line in cited_lines() if OUTSIDE.search(line)]
    assert found == [], ("cites a document outside the repository (use docs/facts.md, "
                         "docs/formulas.md, docs/planning.md):\n" + "\n".join(found))


def test_every_cited_docs_file_exists():
    missing = []
    for path, where, line in cited_lines():
        names = DOCS_CITATION.findall(line)
        if path.parent == REPO / "docs":
            names += MARKDOWN_LINK.findall(line)
        missing += [f"{where}  (docs/{name})" for name in names
                    if not (REPO / "docs" / name).is_file()]
    assert missing == [], "cites a docs/ file that does not exist:\n" + "\n".join(missing)
