"""The three CLIs behave alike: `--version`, expected errors as one line naming the culprit and the fix (exit 2,
tracebacks only with `--debug`), nothing created before the inputs are checked, `--json` on every data stage."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tgdp.eval.cli import app as eval_app
from tgdp.pipeline.cli import app as data_app
from tgdp.train.cli import app as train_app

runner = CliRunner()
APPS = {"tgdp-data": data_app, "tgdp-train": train_app, "tgdp-eval": eval_app}


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def test_version_everywhere() -> None:
    expected = version("tgdp")
    code = (
        "import tgdp.model, tgdp, tgdp.pipeline, tgdp.train, tgdp.eval; print(tgdp.__version__, tgdp.eval.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [expected, expected]
    for name, app in APPS.items():
        result = runner.invoke(app, ["--version"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{name} {expected}"


@pytest.mark.parametrize(
    "args",
    [
        ["status", "{root}"],
        ["validate", "{root}", "--backend", "serial"],
        ["export", "{root}", "--out", "{tmp}/out"],
        ["shard", "{root}", "--store", "{tmp}/store", "--backend", "serial"],
        ["fetch", "{root}", "--backend", "serial"],
        ["import", "{root}", "--from", "{tmp}"],
    ],
)
def test_missing_root_is_one_line_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    root = tmp_path / "no_root"
    argv = [a.format(root=root, tmp=tmp_path) for a in args]
    _one_line_error(runner.invoke(data_app, argv), str(root), "tgdp-data manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "created before the inputs were checked"


def test_root_without_manifest_names_the_missing_step(tmp_path: Path) -> None:
    _one_line_error(runner.invoke(data_app, ["status", str(tmp_path)]), "source.parquet", "tgdp-data manifest")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(data_app, ["--debug", "status", str(tmp_path / "nope")])
    assert result.exit_code != 0 and isinstance(result.exception, FileNotFoundError)
    result = runner.invoke(train_app, ["--debug", "-c", "tiny_tgdp", "--store", str(tmp_path / "x"), "--run-dir", "r"])
    assert result.exit_code != 0 and result.exception is not None and not isinstance(result.exception, SystemExit)


def _tiny_root(root: Path) -> Path:
    from tests.fixtures import make_root

    return make_root(root, [{"ytid": f"v{i}"} for i in range(3)])


def test_read_only_output_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tiny_root(tmp_path / "root")
    ro = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *a, **kw) -> None:  # a read-only directory (tests run as root, so chmod cannot say no)
        if self == ro or ro in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    _one_line_error(runner.invoke(data_app, ["export", str(root), "--out", str(ro / "export")]), str(ro), "permission")


def test_export_says_where_it_wrote_and_json(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path / "root")
    human = runner.invoke(data_app, ["export", str(root), "--out", str(tmp_path / "exp")])
    assert human.exit_code == 0, human.output
    assert f"wrote {tmp_path / 'exp'}" in human.output and "funnel.json" in human.output
    js = runner.invoke(data_app, ["export", str(root), "--out", str(tmp_path / "exp2"), "--json"])
    assert js.exit_code == 0, js.output
    d = json.loads(js.output)
    assert d["out"] == str(tmp_path / "exp2") and d["valid"] == 0 and d["funnel"]["source"] == 3
    names = ["clip_ids.txt", "dropped.parquet", "funnel.json", "funnel.md", "manifest.parquet"]
    assert sorted(Path(f).name for f in d["files"]) == names and all(Path(f).is_file() for f in d["files"])


@pytest.mark.parametrize("stage", ["manifest", "validate", "export", "shard", "verify", "fetch", "import", "clips"])
def test_every_stage_has_json(stage: str) -> None:
    result = runner.invoke(data_app, [stage, "--help"])
    assert "--json" in result.output


def _write_table(path: Path, dim: int = 64) -> None:
    from tgdp.eval.table import EmbeddingTable, write_embeddings

    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 16, dim)).astype(np.float32)
    ids = [f"vggsound:v{i}:0" for i in range(12)]
    write_embeddings(path, EmbeddingTable(ids, a, a.copy(), labels=[[f"c{i % 3}"] for i in range(12)]))


def test_eval_config_errors_are_one_line(tmp_path: Path) -> None:
    emb = tmp_path / "e.arrow"
    _write_table(emb)
    out = str(tmp_path / "o")
    bad = runner.invoke(eval_app, ["retrieval", "--emb", str(emb), "--out", out, "--set", "strategy=diag"])
    assert bad.exit_code == 2 and "diag" in bad.output and "diagonal_mean" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "o").exists()
    probe = ["probe", "--train-emb", str(emb), "--test-emb", str(emb), "--set", "task=multiclass", "--out", out]
    _one_line_error(runner.invoke(eval_app, [*probe, "--set", "num_heads=12"]), "num_heads=8")
    _one_line_error(runner.invoke(eval_app, [*probe, "--set", "bogus=1"]), "bogus")
    _one_line_error(runner.invoke(eval_app, [*probe, "--set", "epochs=0"]), "epochs")
    assert not (tmp_path / "o").exists()


def test_embed_on_a_store_with_other_mel_bins_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tgdp import store as store_mod
    from tgdp.model import build_model

    ckpt = tmp_path / "tiny.pt"
    torch.save(
        {"model": build_model("tiny_cavmae_sync").student.state_dict(), "config": {"model_preset": "tiny_cavmae_sync"}},
        ckpt,
    )

    class Store128:  # the reader's API as far as embed needs it, with a 128-bin fbank
        meta = {"fbank": {"num_mel_bins": 128, "target_length": 1024}, "frames": {"n": 16, "size": 96}}
        clip_ids = ["audioset:a:0"]

        split = "eval"

        @classmethod
        def open(cls, path, split=None, **kw):
            return cls()

        def __len__(self) -> int:
            return 1

    monkeypatch.setattr(store_mod, "Store", Store128)
    (tmp_path / "store").mkdir()
    args = ["embed", "--checkpoint", str(ckpt), "--store", str(tmp_path / "store")]
    result = runner.invoke(eval_app, [*args, "--out", str(tmp_path / "e.arrow"), "--device", "cpu"])
    _one_line_error(result, "128 mel bins", "features.num_mel_bins=64")
    assert not (tmp_path / "e.arrow").exists()
