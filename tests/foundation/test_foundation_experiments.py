"""`tgdp.experiments` is the top of the dependency graph (docs/ARCHITECTURE.md): it alone imports from all four
packages, nothing imports it, and eval runs no pipeline stage (the demo that did lives in experiments/)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "model", "train", "eval")
# pipeline modules that run or describe a stage of the chain; eval reads stores, it never runs these
PIPELINE_STAGES = {"synth", "serve", "fetch", "importer", "manifest", "validate", "shard", "export", "status"}


def _tgdp_imports(path: Path) -> set[str]:
    """Dotted `tgdp.*` modules a file imports (`from tgdp.a import b` counts as tgdp.a and tgdp.a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tgdp."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tgdp."):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _package_of(module: str) -> str:
    return module.split(".")[1]


def test_nothing_imports_experiments_and_experiments_imports_all_four() -> None:
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            bad = sorted(m for m in _tgdp_imports(path) if _package_of(m) == "experiments")
            assert bad == [], f"{path.relative_to(REPO)} imports {bad}"
    used = {_package_of(m) for p in (REPO / "experiments").rglob("*.py") for m in _tgdp_imports(p)}
    assert set(PACKAGES) <= used


def test_eval_runs_no_pipeline_stage() -> None:
    assert not (REPO / "eval" / "demo.py").exists()
    for path in (REPO / "eval").rglob("*.py"):
        stages = {m.split(".")[2] for m in _tgdp_imports(path) if m.startswith("tgdp.pipeline.")} & PIPELINE_STAGES
        assert not stages, f"{path.relative_to(REPO)} imports pipeline stages {sorted(stages)}"


def test_experiments_follow_the_house_rules() -> None:
    for path in (REPO / "experiments").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "typer" not in names or path.name == "cli.py", path
        assert "ray" not in names, path
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0], path


def test_module_entry_point_lists_both_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tgdp.experiments", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "demo" in out.stdout and "reproduce" in out.stdout
