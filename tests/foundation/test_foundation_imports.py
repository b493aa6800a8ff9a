"""Architecture rules that code review alone would let slip: where Ray and typer may be imported,
and that `tgdp.model` stays importable without Ray or pyarrow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["pipeline", "model", "train", "eval"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]


def test_ray_only_in_parallel_module() -> None:
    offenders = [str(p.relative_to(REPO)) for p in _modules() if "ray" in _imports(p)]
    assert set(offenders) <= {"pipeline/parallel.py"}, offenders


def test_typer_only_in_cli_modules() -> None:
    offenders = [str(p.relative_to(REPO)) for p in _modules() if "typer" in _imports(p) and p.name != "cli.py"]
    assert offenders == []


def test_no_relative_imports_and_no_grab_bags() -> None:
    for path in _modules():
        assert path.stem not in {"utils", "misc", "helpers", "common"}, path
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
        assert rel == [], f"{path}: relative imports at lines {rel}"


def test_model_imports_without_ray_or_pyarrow() -> None:
    names = sorted(p.stem for p in (REPO / "model").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        "import tgdp.model\n"
        f"for n in {names!r}: importlib.import_module('tgdp.model.' + n)\n"
        "bad = [k for k in ('ray', 'pyarrow', 'typer') if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
