"""The CLIs' surface is one: every `--json` prints one format (indented, keys sorted), every `--device` defaults
to `auto`, and `--help` imports no torch (tgdp-train's help was 3.4 s)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tgdp.core.cli import dumps_json
from tgdp.eval.cli import app as eval_app
from tgdp.experiments.cli import app as experiments_app
from tgdp.pipeline.cli import app as data_app
from tgdp.train.cli import app as train_app

REPO = Path(__file__).resolve().parents[2]
CLI_FILES = ["pipeline/cli.py", "train/cli.py", "eval/cli.py", "experiments/cli.py"]
runner = CliRunner()


def _echoed_json_dumps(path: Path) -> list[int]:
    """Lines where a CLI echoes `json.dumps(...)` itself instead of `dumps_json`."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "echo":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call) and getattr(inner.func, "attr", None) == "dumps":
                    bad.append(inner.lineno)
    return bad


@pytest.mark.parametrize("name", CLI_FILES)
def test_every_json_output_goes_through_dumps_json(name: str) -> None:
    assert not _echoed_json_dumps(REPO / name), f"{name}: echo(json.dumps(...)) instead of dumps_json"


def test_json_output_is_indented_and_sorted(tmp_path: Path) -> None:
    from tests.fixtures import make_root

    root = make_root(tmp_path / "root", [{"ytid": f"v{i}"} for i in range(3)])
    for args in (["status", str(root), "--json"], ["export", str(root), "--out", str(tmp_path / "x"), "--json"]):
        res = runner.invoke(data_app, args)
        assert res.output.strip() == dumps_json(json.loads(res.output)), args
        assert res.output.startswith("{\n  ")
    assert dumps_json({"b": 1, "a": {"d": 2, "c": "é"}}) == '{\n  "a": {\n    "c": "é",\n    "d": 2\n  },\n  "b": 1\n}'


def _params(app: typer.Typer) -> list[tuple[str, typer.core.click.Parameter]]:
    cmd = typer.main.get_command(app)
    commands = getattr(cmd, "commands", {None: cmd})
    return [(name, p) for name, c in commands.items() for p in c.params]


@pytest.mark.parametrize("app", [data_app, train_app, eval_app, experiments_app], ids=["data", "train", "eval", "exp"])
def test_every_device_option_defaults_to_auto(app: typer.Typer) -> None:
    for name, param in _params(app):
        if param.name == "device":
            assert param.default == "auto", name
            assert "auto" in (param.help or ""), name


@pytest.mark.parametrize("module", ["tgdp.train.cli", "tgdp.eval.cli", "tgdp.pipeline.cli", "tgdp.experiments.cli"])
def test_help_imports_no_torch(module: str) -> None:
    code = (
        "import sys\n"
        f"from {module} import app\n"
        "try:\n    app(['--help'], prog_name='x')\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'pyarrow', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out[-300:]
