"""The built wheel, installed into a fresh venv, imports every subpackage from the wheel (not the checkout)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    wheels = list(dist.glob("tgdp-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies come from the dev venv as a plain path entry: its .pth files (the editable finder) are not run.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheels[0])], check=True
    )
    code = (
        "import tgdp.config, tgdp.model, tgdp.pipeline, tgdp.store, tgdp.train, tgdp.eval\n"
        "import tgdp.pipeline.cli, tgdp.train.cli, tgdp.eval.cli, tgdp.experiments.cli, tgdp.experiments.reproduce\n"
        "import importlib.resources as r\n"
        "print(tgdp.model.__file__)\n"
        "print(sorted(p.name for p in r.files('tgdp.manifests').iterdir() if p.name.endswith('.yaml')))\n"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert str(site) in first and str(REPO) not in first
