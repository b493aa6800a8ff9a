"""Issue 22's data UX: manifest errors one issue per line, import's report and exit code, a 0-clip manifest
never passes silently."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tgdp.pipeline.cli import app

runner = CliRunner()


def _bad_audioset_csv(path: Path, n_bad: int) -> Path:
    rows = ['abcdefghijk, 0.000, 10.000, "/m/a"'] + [f'bad{i}, 0.000, 10.000, "/m/a"' for i in range(n_bad)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_manifest_errors_print_one_issue_per_line_with_a_cap(tmp_path: Path) -> None:
    src = _bad_audioset_csv(tmp_path / "balanced_train_segments.csv", 25)
    result = runner.invoke(app, ["manifest", str(tmp_path / "root"), "--dataset", "audioset", "--csv", str(src)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[0].startswith("error: 25 malformed row(s)"), lines[0]
    issues = [ln for ln in lines[1:] if "bad_ytid" in ln]
    assert len(issues) == 20 and all(ln.strip().startswith("balanced_train_segments.csv:") for ln in issues)
    assert issues[0].strip().startswith("balanced_train_segments.csv:2: bad_ytid")
    assert lines[-1].strip() == "... and 5 more", lines[-1]
