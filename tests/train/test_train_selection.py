"""Selection precision: the arithmetic on a hand example, and the figures in metrics.jsonl when the store has truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.train.train_support import FakeStore, fake_open, tiny_config, write_fake_store
from tgdp.pipeline.truth import TRUTH_FORMAT, VISUAL_LABELS, label_precision, truth_path
from tgdp.train.loop import fit


def test_label_precision_on_a_hand_example() -> None:
    # 2 clips, 4 patches; labels (obj, decoy, bg) per patch; keep 2 patches each
    shares = np.array(
        [
            [[1.0, 0, 0], [0.5, 0, 0.5], [0, 1.0, 0], [0, 0, 1.0]],
            [[0, 0, 1.0], [0, 0, 1.0], [0.25, 0, 0.75], [0, 0.5, 0.5]],
        ]
    )
    keep = np.array([[0, 1], [2, 3]])
    prio = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    out = {k: v.mean() for k, v in label_precision(shares, keep, prio, VISUAL_LABELS, "v").items()}
    assert out["sel_v_obj"] == pytest.approx((1.0 + 0.5 + 0.25 + 0) / 4)
    assert out["sel_v_decoy"] == pytest.approx((0 + 0 + 0 + 0.5) / 4)
    assert out["sel_v_bg"] == pytest.approx((0 + 0.5 + 0.75 + 0.5) / 4)
    assert out["rand_v_obj"] == pytest.approx((1.5 + 0.25) / 8)  # a random half keeps the mean share on average
    assert out["att_v_obj"] == pytest.approx(((0.7 + 0.05) + 0.25 * 0.25) / 2)
    assert "att_v_obj" not in label_precision(shares, keep, None, VISUAL_LABELS, "v")


def test_runs_on_a_store_with_truth_log_the_selection_figures(tmp_path) -> None:
    store = write_fake_store(tmp_path / "store", n=16)
    fake = FakeStore(n=16)
    visual = np.zeros((16, 16, 12, 12, 2), np.uint8)
    visual[:, :, :4, :4, 0] = 255  # the object fills the top-left 2×2 of the 6×6 patches, in every frame
    visual[:, :, 8:, 8:, 1] = 255  # a decoy the bottom-right 2×2
    audio = np.zeros((16, 256), np.uint8)
    audio[:, ::2] = 1  # a note in every other fbank frame: half of every audio patch
    path = truth_path(store, "train")
    path.parent.mkdir()
    meta = json.dumps({"format": TRUTH_FORMAT})
    ids = np.array(list(reversed(fake.clip_ids)))  # the sidecar's order need not be the store's
    np.savez(path, clip_id=ids, visual=visual, audio=audio, meta=np.array(meta))
    fit(tiny_config("train.steps=2"), store, tmp_path / "run", store_opener=fake_open)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["rand_v_obj"] == pytest.approx(4 / 36) and r["rand_v_decoy"] == pytest.approx(4 / 36)
        assert r["rand_a_note"] == pytest.approx(0.5) and r["sel_a_note"] == pytest.approx(0.5)
        assert 0 <= r["sel_v_obj"] <= 1 and r["sel_v_obj"] + r["sel_v_decoy"] + r["sel_v_bg"] == pytest.approx(1)
        assert 0 <= r["att_v_obj"] <= 1 and "gshare_contra" in r
    # a random crop moves the patches off the truth's grid: no figures then
    fit(tiny_config("train.steps=1", "data.random_resized_crop=true"), store, tmp_path / "crop", store_opener=fake_open)
    crop = json.loads((tmp_path / "crop" / "metrics.jsonl").read_text().splitlines()[0])
    assert "sel_v_obj" not in crop and "loss" in crop
