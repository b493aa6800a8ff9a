"""Architecture rules that code review alone would let slip: where Ray and typer may be imported,
that `tgdp.model` stays importable without Ray or pyarrow, that model and config import nothing from pipeline, and that
`tgdp.core` sits at the bottom (it imports nothing of tgdp; only the `tgdp-data` CLI imports `tgdp.pipeline.cli`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["core", "config", "store", "pipeline", "model", "train", "eval"]


def _imports(path: Path, depth: int = 1) -> set[str]:
    """Top-level names (`depth` 1) or `tgdp.<package>` names (`depth` 2) a module imports, lazy imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return {".".join(m.split(".")[:depth]) for m in modules}


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


def _loads_none_of(package: str, heavy: tuple[str, ...], tgdp_too: bool = False) -> None:
    """Import `tgdp.<package>` and every module of it in a fresh interpreter; none of `heavy` (nor, with `tgdp_too`,
    any other tgdp package) may be loaded afterwards."""
    names = sorted(p.stem for p in (REPO / package).glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"importlib.import_module('tgdp.{package}')\n"
        f"for n in {names!r}: importlib.import_module('tgdp.{package}.' + n)\n"
        f"bad = [k for k in {heavy!r} if k in sys.modules]\n"
        f"own = ('tgdp.{package}',) if {tgdp_too!r} else ('tgdp.',)\n"
        "bad += sorted(k for k in sys.modules if k.startswith('tgdp.') and not k.startswith(own))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_model_imports_without_ray_or_pyarrow() -> None:
    _loads_none_of("model", ("ray", "pyarrow", "typer"))


# The dependency table of docs/ARCHITECTURE.md ("Layout"): the tgdp modules each package may import. An entry
# allows itself and its submodules; a package may always import itself.
ALLOWED = {
    "core": (),
    "config": ("tgdp.core",),
    "model": ("tgdp.core", "tgdp.config"),
    "store": ("tgdp.core", "tgdp.config"),
    "pipeline": ("tgdp.core", "tgdp.config", "tgdp.store"),
    "train": ("tgdp.core", "tgdp.config", "tgdp.model", "tgdp.store", "tgdp.pipeline.truth"),
    "eval": (
        "tgdp.core",
        "tgdp.config",
        "tgdp.model",
        "tgdp.store",
        "tgdp.pipeline.truth",
        "tgdp.train.transforms",
        "tgdp.train.data",  # eval reads stores through the training dataset (its deterministic eval mode)
    ),
    "experiments": (
        "tgdp.core",
        "tgdp.config",
        "tgdp.model",
        "tgdp.store",
        "tgdp.pipeline",
        "tgdp.train",
        "tgdp.eval",
    ),
}


def _tgdp_imports(path: Path) -> set[str]:
    """Every tgdp module a file imports, at module level or inside a function: `import tgdp.a.b` → tgdp.a.b,
    `from tgdp.a import b` → tgdp.a.b (b may be a module or a name in tgdp.a; both are checked by prefix)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "tgdp")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tgdp":
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _allowed(pkg: str, name: str) -> bool:
    ok = (f"tgdp.{pkg}", *ALLOWED[pkg])
    return name in ("tgdp", "tgdp.__version__") or any(name == p or name.startswith(p + ".") for p in ok)


def test_imports_follow_the_dependency_graph() -> None:
    assert set(ALLOWED) == {*PACKAGES, "experiments"}
    offenders = []
    for pkg in ALLOWED:
        for path in (REPO / pkg).rglob("*.py"):
            for name in sorted(_tgdp_imports(path)):
                if not _allowed(pkg, name):
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


def test_no_package_module_imports_the_tests_or_benchmarks() -> None:
    # The fixtures (tests/fixtures.py) are not in the wheel: a package module importing them fails once installed.
    offenders = [
        str(path.relative_to(REPO))
        for pkg in ALLOWED
        for path in (REPO / pkg).rglob("*.py")
        if _imports(path) & {"tests", "benchmarks"}
    ]
    assert offenders == []
    assert not (REPO / "pipeline" / "testing.py").exists()


def test_the_graph_rule_catches_a_wrong_import() -> None:
    # the checker itself: a model module importing the pipeline, or eval importing the training loop, is refused
    assert not _allowed("core", "tgdp.config.ConfigError") and not _allowed("config", "tgdp.store")
    assert not _allowed("train", "tgdp.pipeline.cli.group_app") and not _allowed("eval", "tgdp.pipeline.cli")
    assert _allowed("model", "tgdp.core.errors.TgdpError") and _allowed("config", "tgdp.core.atomic.atomic_write")
    assert not _allowed("model", "tgdp.store.Store") and not _allowed("eval", "tgdp.train.loop.fit")
    assert not _allowed("pipeline", "tgdp.model") and not _allowed("train", "tgdp.pipeline.shard.run_shard")
    assert not _allowed("store", "tgdp.pipeline.layout") and not _allowed("train", "tgdp.pipeline.store")
    assert _allowed("eval", "tgdp.train.transforms.decode_frames") and _allowed("train", "tgdp.store.reader.Store")


def test_model_and_config_load_no_pipeline_module() -> None:
    code = (
        "import sys\n"
        "import tgdp.config, tgdp.model, tgdp.model.config, tgdp.model.presets\n"
        "assert tgdp.__version__ == tgdp.model.__version__ == tgdp.config.__version__\n"
        "pkgs = ('tgdp.pipeline', 'tgdp.store', 'tgdp.train', 'tgdp.eval')\n"
        "bad = sorted(k for k in sys.modules if k.startswith(pkgs))\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_only_the_data_cli_imports_the_pipeline_cli() -> None:
    # the shared CLI section is tgdp.core.cli: no package module (and no benchmark or experiment) reaches into
    # `tgdp-data`'s command module, whose import would load the pipeline's stages and config
    files = [p for pkg in (*PACKAGES, "experiments", "benchmarks") for p in (REPO / pkg).rglob("*.py")]
    offenders = [
        str(p.relative_to(REPO))
        for p in files
        if p != REPO / "pipeline" / "cli.py"
        and any(n.split(".")[:3] == ["tgdp", "pipeline", "cli"] for n in _tgdp_imports(p))
    ]
    assert offenders == []


def test_core_imports_nothing_of_tgdp_and_loads_light() -> None:
    # the bottom of the graph: every module of tgdp.core imports without torch, numpy, pyarrow, Ray or pydantic
    _loads_none_of("core", ("torch", "numpy", "pyarrow", "ray", "pydantic", "yaml"), tgdp_too=True)
