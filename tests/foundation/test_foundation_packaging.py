"""`make wheel-check` (tests/wheel_check.sh): the built wheel, installed into a fresh venv, imports every module of
every subpackage from the wheel (not the checkout), ships every module of the checkout's package folders and its
package data, and nothing else (no tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_check_script_passes(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(REPO / "tests" / "wheel_check.sh"), sys.executable], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing outside tgdp/, no test files or fixtures" in out.stdout
    assert "from the wheel" in out.stdout and "ok: console scripts run" in out.stdout
