#!/usr/bin/env bash
# `make wheel-check`: build the wheel, install it into a throw-away venv that shares this venv's installed packages
# (no download), then, from outside the checkout: import every module of every tgdp subpackage from the installed
# wheel (not the source tree), load the packaged presets, run each console script's --version, and check that the
# wheel ships only `tgdp/` (no tests, conftest or test fixtures of the repository: tests.fixtures does not import).
# Usage: bash tests/wheel_check.sh [PYTHON]   (default .venv/bin/python; exit 0 = all good)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PY:-.venv/bin/python}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "[wheel-check] building the wheel from a clean copy of the source"
# A copy: setuptools reuses ./build/lib, where modules of an older layout would slip into the wheel.
mkdir "$work/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/src"
else
  tar --exclude=./.venv --exclude=./build --exclude=./runs --exclude='*.egg-info' -cf - . | tar -xf - -C "$work/src"
fi
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/dist" "$work/src" >/dev/null
wheel=$(ls "$work"/dist/tgdp-*.whl)

"$PY" - "$wheel" <<'PYEOF'
import sys, zipfile
from pathlib import Path
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
stray = sorted(n for n in names if not n.startswith("tgdp/") and ".dist-info/" not in n)
tests = sorted(n for n in names if "/tests/" in n or n.rsplit("/", 1)[-1].startswith(("test_", "conftest")))
# The test fixtures (tests/fixtures.py; tgdp.pipeline.testing before it moved) are never shipped.
tests += sorted(n for n in names if n.rsplit("/", 1)[-1] in ("fixtures.py", "testing.py"))
# Every module of the checkout's package folders (pyproject package-dir) must be in the wheel: a subpackage missing
# from `packages` would install without its modules.
dirs = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
want = {
    f"{pkg.replace('.', '/')}/{py.relative_to(folder).as_posix()}"
    for pkg, folder in dirs.items()
    for py in Path(folder).rglob("*.py")
    if "__pycache__" not in py.parts
}
missing = sorted(want - names)
if stray or tests or missing:
    sys.exit(f"[wheel-check] FAIL: outside tgdp/ {stray[:5]}; test files {tests[:5]}; not shipped {missing[:5]}")
print(f"[wheel-check] {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, every module of {', '.join(dirs)}, "
      "nothing outside tgdp/, no test files or fixtures")
PYEOF

echo "[wheel-check] installing it into a temporary venv"
"$PY" -m venv --without-pip "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# This venv's site dirs as plain path lines: their packages are shared, their .pth files (the editable install's
# finder among them) are not run, so `tgdp` can only come from the wheel.
"$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith("site-packages")))' > "$site/shared-venv.pth"
"$PY" -m pip --python "$work/venv/bin/python" install --quiet --no-deps --no-index "$wheel"

cd "$work"
"$work/venv/bin/python" - "$site" <<'PYEOF'
import importlib, importlib.util, pkgutil, sys
site = sys.argv[1]
import tgdp.config  # noqa: F401  (sets tgdp.__version__)
import tgdp
paths = list(tgdp.__path__)
if paths != [f"{site}/tgdp"]:
    sys.exit(f"[wheel-check] FAIL: tgdp resolves to {paths}, not only the installed wheel")
mods = sorted(m.name for m in pkgutil.walk_packages(tgdp.__path__, "tgdp.") if not m.name.endswith(".__main__"))
for name in mods:
    mod = importlib.import_module(name)
    if not (getattr(mod, "__file__", None) or "").startswith(site):
        sys.exit(f"[wheel-check] FAIL: {name} imported from {mod.__file__}")
subs = sorted({m.split(".")[1] for m in mods})
for fixtures in ("tgdp.pipeline.testing", "tests.fixtures"):
    try:
        found = importlib.util.find_spec(fixtures)
    except ModuleNotFoundError:
        found = None
    if found is not None:
        sys.exit(f"[wheel-check] FAIL: the test fixtures {fixtures} import from the installed wheel ({found.origin})")
import importlib.resources as resources
from tgdp.train.config import list_presets, load_run_config
presets = list_presets()
load_run_config("tiny_tgdp")
lists = [p.name for p in resources.files("tgdp.manifests").iterdir() if p.name.endswith(".yaml")]
if not presets or not lists:
    sys.exit(f"[wheel-check] FAIL: package data missing (presets {presets}, manifests {lists})")
print(f"[wheel-check] imported {len(mods)} modules of {', '.join(subs)} from the wheel; {len(presets)} train presets, "
      f"{len(lists)} manifest YAMLs; tgdp {tgdp.__version__}")
PYEOF
for exe in tgdp-data tgdp-train tgdp-eval; do
  "$work/venv/bin/$exe" --version >/dev/null || { echo "[wheel-check] FAIL: $exe --version" >&2; exit 1; }
done
echo "[wheel-check] ok: console scripts run"
