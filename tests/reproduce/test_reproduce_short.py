"""`benchmarks/reproduce.py --short` end to end: synth store, 3 configs trained and evaluated, tables written, and a
rerun reads the cached results instead of training again."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("tgdp_reproduce_script", REPO / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_reproduce_short_end_to_end(tmp_path: Path) -> None:
    rep = _load()
    out = tmp_path / "out"
    argv = ["--out", str(out), "--short", "--num-clips", "16", "--steps", "3", "--probe-epochs", "1"]
    assert rep.main(argv) == 0
    agg = json.loads((out / "results.json").read_text())
    assert set(agg["configs"]) == {"random_init", "cavmae_sync", "tgdp"}
    for name, row in agg["configs"].items():
        for key in ("v2a R@1", "v2a R@5", "v2a R@10", "a2v R@1", "a2v R@5", "a2v R@10", "probe"):
            v = row[key]["mean"]
            assert math.isfinite(v) and 0.0 <= v <= 100.0, (name, key, v)
        assert row["seeds"] == [0]
    results = sorted(out.glob("runs/*/seed0/result.json"))
    assert len(results) == 3
    trained = json.loads(next(p for p in results if "tgdp-" in p.parent.parent.name).read_text())
    assert trained["steps"] == 3 and trained["n_eval"] >= 2
    assert all(math.isfinite(v) for v in trained["final_losses"].values()) and trained["final_losses"]
    md = (out / "results.md").read_text()
    assert "CAV-MAE Sync vs TG-DP" in md and "| `tgdp`" in md

    # a rerun resumes from the cache: no checkpoint is written again
    ckpts = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/train/checkpoints/*.pt")}
    assert ckpts
    assert rep.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/train/checkpoints/*.pt")} == ckpts


def test_reproduce_configs_share_equal_runs() -> None:
    rep = _load()
    study = rep.parse_args(["--out", "unused", "--steps", "10"])
    fp = {name: rep.fingerprint(study, name) for name in study.configs}
    # rows that are the full method by definition resolve to the same run; every ablation differs from it
    assert fp["ratio_0.5"] == fp["mask_distinct"] == fp["distill_on"] == fp["tgdp"]
    others = {n: f for n, f in fp.items() if n not in ("ratio_0.5", "mask_distinct", "distill_on", "tgdp")}
    assert fp["tgdp"] not in others.values() and len(set(others.values())) == len(others)
    # same budget for every config: only the model section differs
    a = rep.run_overrides(study, "cavmae_sync", 1)[1]
    b = rep.run_overrides(study, "mask_random", 1)[1]
    assert [o for o in a if o.startswith(("train.", "optim."))] == [o for o in b if o.startswith(("train.", "optim."))]
