"""The README's commands are the CLIs' commands: every `tgdp-data` / `tgdp-train` / `tgdp-eval` command it shows
(the command map, the workflow block, inline mentions) names a command that exists and only options it takes; the
same holds in docs/*.md and REPRODUCTION.md."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from tgdp.eval.cli import app as eval_app
from tgdp.pipeline.cli import app as data_app
from tgdp.train.cli import app as train_app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "REPRODUCTION.md", *sorted((REPO / "docs").glob("*.md"))]
APPS = {"tgdp-data": data_app, "tgdp-train": train_app, "tgdp-eval": eval_app}


def readme_commands(text: str) -> list[str]:
    """Every command line the README shows: code-block lines and `inline` spans that start with a CLI's name
    (or run `tgdp.train.cli` under torchrun); comments cut, `&&` chains split."""
    spans = re.findall(r"`([^`\n]+)`", text)
    blocks = [
        ln for b in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) for ln in b.replace("\\\n", " ").splitlines()
    ]
    found = []
    for line in [*spans, *blocks]:
        line = line.replace("\\|", "|").split(" #")[0].strip()
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith(tuple(APPS)) or "-m tgdp.train.cli" in part:
                found.append(part)
    return found


def _resolve(tokens: list[str]) -> tuple[str, list[Any], list[str]]:
    """(program, the commands named, the remaining tokens) of one README command line."""
    if tokens[0] == "torchrun":
        tokens = ["tgdp-train", *tokens[tokens.index("tgdp.train.cli") + 1 :]]
    program, rest = tokens[0], tokens[1:]
    root = typer.main.get_command(APPS[program])
    if not hasattr(root, "commands"):  # a single-command app (tgdp-train)
        return program, [root], rest
    names, after_slash = [], False  # `tgdp-eval embed / retrieval / probe` names several commands
    while rest and not rest[0].startswith("-") and (not names or after_slash or rest[0] in (*root.commands, "/")):
        if not names and rest[0].isupper():  # `tgdp-eval COMMAND --help`: a placeholder for any command
            return program, list(root.commands.values()), rest[1:]
        after_slash = rest[0] == "/"
        if not after_slash:
            names.append(rest[0])
        rest = rest[1:]
    unknown = [n for n in names if n not in root.commands]
    assert not unknown, f"{program}: no command {unknown}; commands: {sorted(root.commands)}"
    return program, [root.commands[n] for n in names] or [root], rest


def _options(command: Any) -> set[str]:
    return {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def test_readme_shows_commands() -> None:
    commands = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))
    programs = {c.split()[0] for c in commands}
    assert {"tgdp-data", "tgdp-train", "tgdp-eval", "torchrun"} <= programs
    assert len(commands) >= 20


@pytest.mark.parametrize(
    "line", sorted({c for p in DOCS for c in readme_commands(p.read_text(encoding="utf-8"))}), ids=lambda c: c[:60]
)
def test_readme_command_exists_with_its_options(line: str) -> None:
    tokens = [t.strip("[]") for t in shlex.split(line)]
    program, commands, rest = _resolve(tokens)
    flags = [t.split("=", 1)[0] for t in rest if t.startswith("--")]
    for command in commands:
        unknown = [f for f in flags if f not in _options(command)]
        assert not unknown, f"`{line}`: {program} {command.name} has no option {unknown}"


def test_the_check_catches_a_wrong_flag_and_command() -> None:
    with pytest.raises(AssertionError, match="no option"):
        test_readme_command_exists_with_its_options("tgdp-data status ROOT --jsonn")
    with pytest.raises(AssertionError, match="no command"):
        test_readme_command_exists_with_its_options("tgdp-eval retrieval / probes")
