"""Every Makefile target is a working recipe: each phony target has a rule, and every script, file or module a
recipe names exists (`make wheel-check` once ran a script that did not)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _rules(text: str) -> dict[str, list[str]]:
    """target -> recipe lines (tab-indented, with `\\` continuations joined)."""
    rules: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
        elif m := re.match(r"^([A-Za-z0-9_.$()/-]+)\s*:(?!=)", line):
            current = rules.setdefault(m.group(1), [])
        elif line.strip() and not line.startswith("#"):
            current = None
    return rules


def _referenced(recipe: str) -> tuple[list[str], list[str]]:
    """(paths, python modules) named by a recipe line: `bash X`, `python X.py`, `-m module`, other repo files."""
    words = shlex.split(recipe.replace("$(BIN)/", "").replace("$(VENV)", ".venv"), comments=False, posix=True)
    modules = [words[i + 2] for i, w in enumerate(words[:-2]) if w.endswith("python") and words[i + 1] == "-m"]
    runners = ("bash", "sh", "python")
    paths = [w for i, w in enumerate(words) if i > 0 and words[i - 1] in runners and re.fullmatch(r"[\w./]+", w)]
    outputs = {w for i, w in enumerate(words) if i > 0 and words[i - 1] in ("--out", "--md", "-o", ">")}
    repo_file = re.compile(r"[\w.-]+(/[\w.-]+)+\.(sh|py|toml|yaml|cfg|txt|json|md)")
    paths += [w for w in words if w not in outputs and repo_file.fullmatch(w)]
    return sorted(set(paths)), modules


def _module_exists(name: str) -> bool:
    """A `python -m` module: installed (pytest, mypy, tgdp.*) or in the repository (benchmarks.*)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _expand(text: str) -> str:
    """The Makefile with its simple variables (`NAME := value`, `?=`, `=`) substituted, except the venv ones the
    recipes use for tools."""
    values = {m.group(1): m.group(2).strip() for m in re.finditer(r"^([A-Z_]+)\s*[:?]?=(.*)$", text, re.M)}
    for name in ("BIN", "VENV", "PY"):
        values.pop(name, None)
    for _ in range(3):  # values may name other variables
        text = re.sub(r"\$\(([A-Z_]+)\)", lambda m: values.get(m.group(1), m.group(0)), text)
    return text


def test_every_makefile_target_has_a_recipe_whose_files_exist() -> None:
    text = _expand((REPO / "Makefile").read_text(encoding="utf-8"))
    rules = _rules(text)
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M)
    assert phony is not None
    targets = phony.group(1).split()
    assert set(targets) <= set(rules), f"phony targets without a rule: {sorted(set(targets) - set(rules))}"
    problems = []
    for target in targets:
        for line in rules[target]:
            paths, modules = _referenced(line)
            problems += [f"{target}: {p} does not exist" for p in paths if not (REPO / p).exists()]
            problems += [f"{target}: module {m} not found" for m in modules if not _module_exists(m)]
    assert not problems, problems


def test_the_check_sees_a_missing_script() -> None:
    text = ".PHONY: a\na:\n\tbash tests/no_such_check.sh $(BIN)/python\n\t$(BIN)/python -m benchmarks.nope\n"
    paths, modules = _referenced(_rules(text)["a"][0])
    assert paths == ["tests/no_such_check.sh"] and not (REPO / paths[0]).exists()
    assert _referenced(_rules(text)["a"][1])[1] == ["benchmarks.nope"] and not _module_exists("benchmarks.nope")
