"""What the CLIs print reads cleanly: paths are never folded mid-word, every option has help, status shows every
count it computes, retrieval names directions as the tables do (V→A / A→V) and raises no torch warning on a
read-only table, and starting Ray prints no notice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tgdp.eval.cli import app as eval_app
from tgdp.experiments.cli import app as experiments_app
from tgdp.pipeline.cli import app as data_app
from tgdp.train.cli import app as train_app

runner = CliRunner()
APPS = {"tgdp-data": data_app, "tgdp-train": train_app, "tgdp-eval": eval_app, "experiments": experiments_app}


@pytest.mark.parametrize("name", list(APPS))
def test_every_option_and_argument_has_help(name: str) -> None:
    cmd = typer.main.get_command(APPS[name])
    missing = [
        f"{command} {p.name}"
        for command, c in getattr(cmd, "commands", {None: cmd}).items()
        for p in c.params
        if not getattr(p, "help", None)
    ]
    assert not missing, missing


def test_manifest_prints_its_path_whole(tmp_path: Path) -> None:
    csv = tmp_path / "eval_segments.csv"
    csv.write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=1, num_segs=1\n"
        '# YTID, start_seconds, end_seconds, positive_labels\nabcdefghijk, 1.000, 11.000, "/m/a"\n'
    )
    root = tmp_path / ("a_long_directory_name_that_a_table_would_fold_" * 2)
    res = runner.invoke(data_app, ["manifest", str(root), "--dataset", "audioset", "--csv", f"{csv}:as_eval"])
    assert res.exit_code == 0, res.output
    assert f"{root / 'manifest' / 'source.parquet'}: 1 clips" in res.output


def test_human_status_shows_every_count(tmp_path: Path) -> None:
    from tests.fixtures import make_root
    from tgdp.pipeline.status import format_funnel, funnel

    f = funnel(make_root(tmp_path / "root", [{"ytid": f"v{i}"} for i in range(3)]))
    text = format_funnel(f)
    for key, value in f.items():
        if isinstance(value, int) and not isinstance(value, bool) and key != "source":
            assert f"{key.replace('_', ' ')} " in text and f" {value:,} " in text, key


def test_retrieval_names_directions_like_the_tables_and_warns_nothing(tmp_path: Path) -> None:
    # In a fresh interpreter: torch reports a non-writable array once per process, so an earlier test could hide it.
    code = textwrap.dedent(
        f"""
        import warnings
        import numpy as np
        from typer.testing import CliRunner
        from tgdp.eval.cli import app
        from tgdp.eval.table import EmbeddingTable, write_embeddings

        rng = np.random.default_rng(0)
        a = rng.standard_normal((12, 16, 32)).astype(np.float32)
        ids = [f"vggsound:v{{i}}:0" for i in range(12)]
        write_embeddings({str(tmp_path / "e.arrow")!r}, EmbeddingTable(ids, a, a.copy(), labels=[["c"]] * 12))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            res = CliRunner().invoke(app, ["retrieval", "--emb", {str(tmp_path / "e.arrow")!r}, "--out",
                                           {str(tmp_path / "out")!r}])
        print(res.output)
        print("WARNINGS", [str(w.message)[:60] for w in seen if "writable" in str(w.message)])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "V→A: R@1" in out and "A→V: R@1" in out and "v2a" not in out, out
    assert "WARNINGS []" in out, out


@pytest.mark.ray
def test_ray_start_prints_no_notice() -> None:
    code = "from tgdp.pipeline.parallel import ray_session\nwith ray_session(1):\n    pass\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert "Token authentication" not in out and "Started a local Ray instance" not in out, out
