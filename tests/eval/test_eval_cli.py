"""CLI and report: retrieval → probe → report on synthetic embedding tables; tables and plots are written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tgdp.eval.cli import app
from tgdp.eval.report import probe_table, retrieval_table
from tgdp.eval.retrieval import MissingClipsWarning
from tgdp.eval.table import EmbeddingTable, write_embeddings


def _write(path, n: int, seed: int, noise: float) -> None:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(7).standard_normal((3, 8)) * 3
    a = rng.standard_normal((n, 16, 8)).astype(np.float32)
    labels = [[f"vgg_{i % 3}"] for i in range(n)]
    for i in range(n):
        a[i] += centers[i % 3]
    v = a + noise * rng.standard_normal(a.shape).astype(np.float32)
    ids = [f"vggsound:s{seed}v{i}:{i * 1000}" for i in range(n)]
    write_embeddings(path, EmbeddingTable(ids, a, v, labels=labels, meta={"checkpoint": "/x/run7.pt"}))


def test_retrieval_probe_report_commands(tmp_path) -> None:
    runner = CliRunner()
    _write(tmp_path / "test.arrow", 40, 1, 0.3)
    _write(tmp_path / "train.arrow", 96, 0, 0.3)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([f"s1v{i}_{i:06d}" for i in range(30)] + ["missing_000001"]))

    with pytest.warns(MissingClipsWarning, match="1 of 31"):
        r = runner.invoke(
            app,
            [
                "retrieval",
                "--emb",
                str(tmp_path / "test.arrow"),
                "--list",
                str(lst),
                "--out",
                str(tmp_path / "ret"),
                "--set",
                "chunk_size=7",
            ],
        )
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "ret" / "retrieval.json").read_text())
    assert (
        d["model"] == "run7" and d["dataset"] == "vggsound" and d["n_used"] == 30 and d["missing"] == ["missing_000001"]
    )
    assert d["metrics"]["v2a"]["R@10"] >= d["metrics"]["v2a"]["R@1"] > 50
    for f in ("recall.png", "similarity.png", "retrieval.md", "ranks.npz"):
        assert (tmp_path / "ret" / f).stat().st_size > 0
    assert np.load(tmp_path / "ret" / "ranks.npz")["a2v"].shape == (30,)

    def probe(out: str, *extra: str):
        emb = ["--train-emb", str(tmp_path / "train.arrow"), "--test-emb", str(tmp_path / "test.arrow")]
        return runner.invoke(app, ["probe", *emb, "--set", "task=multiclass", "--out", str(tmp_path / out), *extra])

    sets = ["--set", "epochs=4", "--set", "num_heads=2", "--set", "lr=3e-3", "--set", "depth=1"]
    r = probe("probe", "--set", "modality=a", "--device", "cpu", *sets)
    assert r.exit_code == 0, r.output
    p = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert p["metric_name"] == "top1" and p["metric"] > 80 and p["config"]["epochs"] == 4

    r = probe("p2", "--set", "bogus=1")
    assert r.exit_code == 2 and "unknown key 'bogus'" in r.output and "Traceback" not in r.output

    r = runner.invoke(app, ["report", str(tmp_path / "ret"), str(tmp_path / "probe"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "vggsound V→A R@1" in md and "vggsound top1 [a]" in md and "| run7 |" in md
    js = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert js["retrieval"]["run7"]["vggsound"]["a2v"]["R@5"] == d["metrics"]["a2v"]["R@5"]


def test_tables_layout() -> None:
    m = {"R@1": 10.0, "R@5": 20.0, "R@10": 30.0, "MedR": 12.0, "MeanR": 40.0}
    res = [
        {
            "kind": "retrieval",
            "model": "sync",
            "dataset": "AudioSet",
            "metrics": {"v2a": m, "a2v": m},
            "n_used": 9,
            "n_list": 10,
            "n_missing": 1,
            "strategy": "diagonal_mean",
            "ties": "pessimistic",
        },
        {
            "kind": "retrieval",
            "model": "tgdp",
            "dataset": "VGGSound",
            "metrics": {"v2a": m, "a2v": m},
            "n_used": 10,
            "n_list": 10,
            "n_missing": 0,
            "strategy": "diagonal_mean",
            "ties": "pessimistic",
        },
    ]
    md, js = retrieval_table(res)
    header = md.splitlines()[0]
    assert header.count("R@") == 12 and header.index("AudioSet V→A R@1") < header.index("AudioSet A→V R@1")
    assert "| sync | 10.0 | 20.0 | 30.0 | 10.0 | 20.0 | 30.0 | – |" in md
    assert js["tgdp"]["AudioSet"] is None and "1 missing" in md
    probes = [
        {
            "kind": "probe",
            "model": "tgdp",
            "dataset": "AS20K",
            "metric_name": "mAP",
            "metric": 32.04,
            "modality": "av",
            "probe": "attention",
        },
        {
            "kind": "probe",
            "model": "tgdp",
            "dataset": "VGGSound",
            "metric_name": "top1",
            "metric": 52.7,
            "modality": "v",
            "probe": "linear",
        },
    ]
    md, js = probe_table(probes)
    assert md.splitlines()[0] == "| Model | AS20K mAP | VGGSound top1 [v, linear] |"
    assert "| tgdp | 32.0 | 52.7 |" in md


def test_settings_are_config_keys_from_a_file_or_set(tmp_path) -> None:
    """Each command reads its settings from `--config FILE` and `--set` (the set wins); the old setting flags are
    gone; the probe must be told its task; `tgdp-eval config --command C` lists a command's keys."""
    runner = CliRunner()
    _write(tmp_path / "t.arrow", 24, 1, 0.3)
    cfg = tmp_path / "ret.yaml"
    cfg.write_text("strategy: single\nframe: 3\nchunk_size: 5\n", encoding="utf-8")
    ret = ["retrieval", "--emb", str(tmp_path / "t.arrow"), "--out", str(tmp_path / "ret"), "--config", str(cfg)]
    r = runner.invoke(app, [*ret, "--set", "frame=4"])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "ret" / "retrieval.json").read_text())
    assert (d["strategy"], d["frame"]) == ("single", 4)
    r = runner.invoke(app, [*ret, "--set", "chunk_sise=4"])
    assert r.exit_code == 2 and "unknown key 'chunk_sise'" in r.output and "chunk_size" in r.output
    assert runner.invoke(app, [*ret, "--strategy", "single"]).exit_code == 2  # a setting is no option any more

    emb = ["--train-emb", str(tmp_path / "t.arrow"), "--test-emb", str(tmp_path / "t.arrow")]
    r = runner.invoke(app, ["probe", *emb, "--out", str(tmp_path / "p"), "--set", "epochs=1"])
    assert r.exit_code == 2 and "task=multilabel|multiclass" in r.output and not (tmp_path / "p").exists()

    for command, key in [("embed", "num_workers"), ("retrieval", "plot_clips"), ("probe", "epochs"),
                         ("health", "batch_size"), ("selection", "source")]:  # fmt: skip
        r = runner.invoke(app, ["config", "--command", command, "--json"])
        assert r.exit_code == 0, r.output
        assert key in {k["key"] for k in json.loads(r.output)}, command
    assert runner.invoke(app, ["config", "--command", "report"]).exit_code == 2
