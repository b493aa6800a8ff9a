"""Static tools see the code: `tgdp.*` resolves for mypy through the strict editable install (`make setup`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tgdp.train.step
from tests.static.probe import PROBE, REPO, probe_source


def test_committed_probe_names_every_public_name() -> None:
    assert PROBE.read_text(encoding="utf-8") == probe_source(), "stale: run `python -m tests.static.probe`"


def test_train_step_resolves_statically_and_the_public_api_type_checks(tmp_path: Path) -> None:
    if not Path(tgdp.train.step.__file__).is_symlink():
        # Only `make setup`'s strict editable install (a link tree) is visible to static tools; the default
        # editable install is an import hook that mypy cannot follow. CI always installs through `make setup`.
        pytest.skip(f"tgdp is not installed in strict editable mode ({tgdp.train.step.__file__}): run `make setup`")
    reveal = tmp_path / "reveal.py"
    reveal.write_text("from tgdp.train.step import train_step\nreveal_type(train_step)\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", str(PROBE), str(reveal)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # every public name exists and type-checks
    # Resolved, not Any: the revealed type is train_step's real signature.
    assert "-> tgdp.train.step.StepStats" in proc.stdout, proc.stdout
