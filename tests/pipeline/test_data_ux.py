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


def test_import_json_lists_each_file_once_and_zero_imported_exits_2(tmp_path: Path) -> None:
    from tests.fixtures import make_root

    root, src = make_root(tmp_path / "root", [{"ytid": "abcdefghijk"}]), tmp_path / "mine"
    src.mkdir()
    for name in ("holiday 1.mp4", "holiday 2.mkv"):
        (src / name).write_bytes(b"not read: no clip has this name")
    result = runner.invoke(app, ["import", str(root), "--from", str(src), "--json"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["imported"] == 0
    assert [f["file"] for f in report["not_imported_files"]] == ["holiday 1.mp4", "holiday 2.mkv"]
    assert result.stdout.count("holiday 1.mp4") == 1, "each unmatched file is listed once"
    assert "error: 0 of 2 files" in result.stderr and "--dataset files" in result.stderr

    human = runner.invoke(app, ["import", str(root), "--from", str(src)])
    assert human.exit_code == 2 and human.stdout.count("holiday 2.mkv") == 1, human.output
    assert human.stdout.startswith("imported 0 of 2 files")


def test_validate_rerun_with_other_features_recomputes_them_and_no_work_starts_no_ray(
    tmp_path: Path, make_clip, monkeypatch
) -> None:
    import numpy as np

    from tests.fixtures import make_root
    from tgdp.pipeline import parallel
    from tgdp.pipeline.features import FeatureParams, feature_cache_path
    from tgdp.pipeline.validate import ValidateConfig, run_validate

    media = make_clip(tmp_path / "a.mp4", duration=3.0, fps=8, size="48x48")
    root = make_root(tmp_path / "root", [{"ytid": f"clip{i:07d}", "media": media} for i in range(2)],
                     source="import", section_start_s=0.0)  # fmt: skip
    small = FeatureParams(frame_size=32, num_mel_bins=32)
    assert run_validate(root, ValidateConfig(), features=small).valid == 2
    cache = feature_cache_path(root, "audioset:clip0000000:0")
    assert np.load(cache, allow_pickle=False)["fbank"].shape[1] == 32

    other = FeatureParams(frame_size=48, num_mel_bins=64)
    s = run_validate(root, ValidateConfig(), features=other)
    assert (s.validated, s.features_changed, s.valid, s.skipped_up_to_date) == (2, 2, 2, 0), s
    assert np.load(cache, allow_pickle=False)["fbank"].shape[1] == 64  # the cache now holds the new settings

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started with nothing to do")

    monkeypatch.setattr(parallel, "map_unordered", no_ray)
    again = run_validate(root, ValidateConfig(), features=other, backend="ray")
    assert (again.validated, again.skipped_up_to_date) == (0, 2)
    result = runner.invoke(app, ["validate", str(root), "--backend", "ray", "--set", "features.frame_size=48",
                                 "--set", "features.num_mel_bins=64"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "up to date 2, validated now 0" in result.output and "nothing to validate" in result.output
