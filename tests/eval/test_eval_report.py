"""The evaluation report reads itself: who did better and by how much, chance levels beside every retrieval and probe
figure, and whether each difference is inside the seed noise the reproduction study measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tgdp.eval.probe import chance_level
from tgdp.eval.report import STUDY_SEED_SD, compare, recall_chance, seed_noise_from_study, write_report


def _retrieval(model: str, r1: float, r5: float, r10: float, n: int = 34) -> dict:
    m = {"R@1": r1, "R@5": r5, "R@10": r10, "MedR": 4.0}
    return {
        "kind": "retrieval",
        "model": model,
        "dataset": "synth",
        "metrics": {"v2a": m, "a2v": dict(m)},
        "n_used": n,
        "n_list": n,
        "n_missing": 0,
        "strategy": "diagonal_mean",
        "ties": "pessimistic",
    }


def _probe(model: str, metric: float, chance: float | None = 37.5) -> dict:
    return {
        "kind": "probe",
        "model": model,
        "dataset": "synth",
        "metric_name": "top1",
        "metric": metric,
        "modality": "av",
        "probe": "attention",
        "n_classes": 8,
        "chance": chance,
    }


def test_report_states_winner_chance_and_seed_noise(tmp_path: Path) -> None:
    results = [
        _retrieval("tiny_tgdp", 20.6, 50.0, 70.0),
        _retrieval("tiny_cavmae_sync", 26.5, 51.0, 70.5),
        _probe("tiny_tgdp", 62.5),
        _probe("tiny_cavmae_sync", 50.0),
    ]
    md_path, json_path = write_report(results, tmp_path)
    md = md_path.read_text(encoding="utf-8")
    # the winner, by how much, per table
    assert "**synth: tiny_cavmae_sync did better on 6 of 6 recall figures**, by +2.5 points on average" in md
    assert "V→A R@1: tiny_cavmae_sync did better, 26.5 vs 20.6 % (tiny_tgdp), by 5.9 points" in md
    assert "synth top1: tiny_tgdp did better, 62.5 vs 50.0 % (tiny_cavmae_sync), by 12.5 points" in md
    # chance beside every figure: R@k = k/N with N = 34 candidates; the probe's recorded chance
    assert "| chance (k/N) | 2.9 | 14.7 | 29.4 | 2.9 | 14.7 | 29.4 |" in md
    assert "| chance | 37.5 |" in md
    # the seed noise and whether each difference is inside it (V→A R@1: 5.9 > 0.5; R@10: 0.5 <= 2.4)
    assert "| seed SD (study) | 0.5 | 1.8 | 2.4 | 0.6 | 2.1 | 3.2 |" in md
    assert (
        "by 5.9 points; chance 2.9 %; the study's seed SD is 0.5 points, so the difference is larger than the "
        "seed noise" in md
    )
    assert "V→A R@10: tiny_cavmae_sync did better, 70.5 vs 70.0 %" in md
    assert "seed SD is 2.4 points, so the difference is inside the seed noise" in md
    assert "seed SD is 8.3 points, so the difference is larger than the seed noise" in md
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert doc["chance"]["retrieval"]["synth"]["R@10"] == pytest.approx(100 * 10 / 34)
    assert doc["seed_sd"] == STUDY_SEED_SD and len(doc["summary"]["retrieval"]) == 7
    assert set(doc["retrieval"]) == {"tiny_tgdp", "tiny_cavmae_sync"}


def test_no_leader_below_chance_and_the_linear_probes_noise(tmp_path: Path) -> None:
    vision = {**_probe("tiny_tgdp", 44.1, 20.6), "modality": "v", "probe": "linear"}
    results = [
        _retrieval("tiny_tgdp", 2.9, 17.6, 32.4),
        _retrieval("tiny_cavmae_sync", 2.9, 20.6, 26.5),
        _probe("tiny_tgdp", 8.8, 20.6),
        _probe("tiny_cavmae_sync", 11.8, 20.6),
        vision,
        {**vision, "model": "tiny_cavmae_sync", "metric": 38.2},
    ]
    md = write_report(results, tmp_path)[0].read_text(encoding="utf-8")
    # each model ahead on two figures (both directions alike), one tie each: nobody is named the winner
    assert "**synth: no model did better on most recall figures** (ahead on: tiny_tgdp 2, tiny_cavmae_sync 2;" in md
    assert "tie at 2.9 %; chance 2.9 %" in md
    assert "(both at or below chance: neither model learnt what this figure measures)" in md  # 11.8 vs 8.8, chance 20.6
    assert "| seed SD (study) | 8.3 | 2.3 |" in md  # attention probe (av), linear probe on vision


def test_ceiling_and_lower_is_better() -> None:
    at_top = compare("top1", {"a": 100.0, "b": 100.0}, chance=12.5, noise=8.3, unit=" %")
    assert "tie at 100.0 %" in at_top and "ceiling" in at_top
    nce = compare(
        "held-out InfoNCE", {"a": 2.11, "b": 2.39}, higher_is_better=False, chance=3.53, noise=0.111, digits=2
    )
    assert nce.startswith("held-out InfoNCE: a did better, 2.11 vs 2.39 (b), by 0.28; chance 3.53")
    assert nce.endswith("larger than the seed noise.")


def test_chance_levels() -> None:
    assert recall_chance(10, 34) == pytest.approx(29.41, abs=0.01) and recall_chance(10, 5) == 100.0
    assert chance_level("multiclass", np.array([0, 0, 0, 1, 2, 3, 1, 0])) == 50.0  # majority class share
    assert chance_level("multiclass", np.arange(8)) == 12.5  # balanced: 1/C
    multi = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]], np.float32)
    assert chance_level("multilabel", multi) == 50.0  # mean positive rate of classes with a positive


def test_probe_result_records_its_chance() -> None:
    from tgdp.eval.probe import ProbeConfig, train_probe
    from tgdp.eval.table import EmbeddingTable

    rng = np.random.default_rng(0)

    def table(n: int, labels: list[str]) -> EmbeddingTable:
        a = rng.standard_normal((n, 2, 8)).astype(np.float16)
        return EmbeddingTable([f"synth:c{i}:0" for i in range(n)], a, a.copy(), labels=[[x] for x in labels])

    cfg = ProbeConfig(task="multiclass", epochs=1, batch_size=4, linear=True)
    res = train_probe(table(8, ["x", "y"] * 4), table(4, ["x", "x", "x", "y"]), cfg).to_dict()
    assert res["chance"] == 75.0


def test_seed_noise_from_study_results(tmp_path: Path) -> None:
    rows = {
        "cavmae_sync": {"v2a R@1": {"mean": 1.9, "std": 0.5}, "attn probe": {"mean": 71.6, "std": 5.2}},
        "tgdp": {"v2a R@1": {"mean": 2.1, "std": 0.7}, "attn probe": {"mean": 71.9, "std": 8.3}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"configs": rows}))
    assert seed_noise_from_study(path) == {"v2a R@1": 0.7, "attn probe": 8.3}
    path.write_text(json.dumps({"configs": {"tgdp": rows["tgdp"]}}))
    with pytest.raises(ValueError, match="not a reproduction study"):
        seed_noise_from_study(path)
