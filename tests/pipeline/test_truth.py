"""Per-patch ground truth of a synthetic store: labels paint what the frames show, the store geometry maps them onto
the stored frames, and the sidecar reader pools them onto a model's patch grid."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from tgdp.pipeline.synth import (
    LABEL_DECOY,
    LABEL_DISTRACTOR,
    LABEL_NOTE,
    LABEL_OBJECT,
    LABEL_QUIET,
    SynthConfig,
    plan_corpus,
    render_frames,
    render_labels,
    sound_labels,
)
from tgdp.pipeline.truth import TRUTH_FORMAT, PatchTruth, TruthError, truth_path, visual_cells

SMALL = dict(num_clips=4, seed=11, profile="coupled", difficulty=1.0, fault_fraction=0.0, segment_s=1.0)
SMALL.update(start_s=(1, 1), tail_s=(0.5, 0.5), sizes=[(64, 48)], fps=[12])


def test_frames_are_the_bytes_they_were_before_the_labels_existed() -> None:
    # sha256 of these plans' frames as rendered before render_frames was split into scene + painting
    _, plans = plan_corpus(SynthConfig(**SMALL))
    h = hashlib.sha256()
    for p in plans:
        h.update(render_frames(p).tobytes())
    assert h.hexdigest() == "10841cc8656ed0077dcecc60976a8b82cd93aecf769b3dc85f06b554465e89df"


def test_labels_paint_what_the_frames_show() -> None:
    _, plans = plan_corpus(SynthConfig(**SMALL))
    assert {p.cls.motion for p in plans} == {"pulse", "shake", "jump", "slide"} and all(p.decoy for p in plans)
    for p in plans:
        frames = render_frames(p)
        idx = np.arange(0, len(frames), 3)
        labels = render_labels(p, idx)
        obj, decoy = labels == LABEL_OBJECT, labels == LABEL_DECOY
        assert obj.any(axis=(1, 2)).all() and decoy.any()
        assert (frames[idx][obj] == np.array(p.rgb)).all()
        assert (frames[idx][decoy] == np.array(p.decoy[1])).all()
        # the object moves: its pixels are not the same in every labelled frame
        assert len({m.tobytes() for m in obj}) > 1


def test_sound_labels_follow_the_notes_the_distractors_and_the_silence() -> None:
    cfg = SynthConfig(num_clips=30, seed=2, difficulty=0.9, fault_fraction=0.0, profile="coupled")
    plan = next(p for p in plan_corpus(cfg)[1] if p.distractors and p.silence[1] > p.silence[0])
    onsets = np.array(plan.onsets)
    assert (sound_labels(plan, onsets + 0.1) == LABEL_NOTE).all()
    assert (sound_labels(plan, onsets + 0.4) != LABEL_NOTE).all()  # a note lasts 0.35 s
    quiet = sound_labels(plan, np.linspace(plan.silence[0], plan.silence[1] - 1e-3, 20))
    assert (quiet == LABEL_QUIET).all()
    lone = [t for t, _, _ in plan.distractors if (np.abs(onsets - t) > 0.4).all()]
    assert lone and (sound_labels(plan, np.array(lone) + 0.05) == LABEL_DISTRACTOR).all()


def test_visual_cells_scale_the_short_side_and_crop_the_centre() -> None:
    # 160×120 video → 128×96 (×0.8) → centre crop 96×96 (16 px off each side) → 12×12 cells of 8 px
    labels = np.zeros((1, 120, 160), np.uint8)
    labels[0, 0:15, 20:40] = LABEL_OBJECT  # → store x 0..16, y 0..12
    labels[0, 100:120, 130:140] = LABEL_DECOY  # → x 88..96, y 80..96
    cells = visual_cells(labels, size=96, cells=12)
    obj, dec = cells[0, :, :, 0], cells[0, :, :, 1]
    assert obj[0, :2] == pytest.approx([1.0, 1.0], abs=0.02) and obj[1, :2] == pytest.approx([0.5, 0.5], abs=0.02)
    assert obj.sum() == pytest.approx(3.0, abs=0.05) and obj[2:].sum() == pytest.approx(0.0, abs=0.01)
    assert dec[10:, 11] == pytest.approx([1.0, 1.0], abs=0.02) and dec.sum() == pytest.approx(2.0, abs=0.05)


def _sidecar(tmp_path, visual: np.ndarray, audio: np.ndarray, ids: list[str]):
    path = truth_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    meta = {"format": TRUTH_FORMAT, "cells": visual.shape[2]}
    np.savez(path, clip_id=np.array(ids), visual=visual, audio=audio, meta=np.array(json.dumps(meta)))
    return path


def test_reader_pools_cells_onto_patches_in_model_order(tmp_path) -> None:
    visual = np.zeros((2, 3, 4, 4, 2), np.uint8)
    visual[1, 2, 0, 0, 0] = 255  # clip 1, frame 2: object in the top-left cell
    visual[1, 2, 3, 2:, 1] = 255  # decoy on two cells of the bottom row, right half
    audio = np.zeros((2, 16), np.uint8)
    audio[1, 4:8] = LABEL_NOTE
    audio[1, 8:10] = LABEL_DISTRACTOR
    _sidecar(tmp_path, visual, audio, ["a", "b"])
    truth = PatchTruth.find(tmp_path, "train", ["b", "a"])  # the store's row order differs from the sidecar's
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "index.json").write_text("{}")
    same = PatchTruth.find(tmp_path / "train", "ignored", ["b", "a"])  # a split dir works too
    assert truth is not None and same is not None
    v = truth.visual(np.array([0]), np.array([2]), (2, 2))  # 2×2 patches of 2×2 cells
    assert v[0, :, 0] == pytest.approx([0.25, 0, 0, 0]) and v[0, :, 1] == pytest.approx([0, 0, 0, 0.5])
    assert v.sum(axis=-1) == pytest.approx(np.ones((1, 4)))
    a = truth.audio(np.array([0]), np.array([2]), 8, (2, 4))  # frames 2..9 → 4 time patches of 2 frames, 2 freq rows
    note = [0.0, 1.0, 1.0, 0.0]
    assert a[0, :, 0] == pytest.approx(note + note)  # k = f·4 + t
    assert a[0, :, 1] == pytest.approx([0, 0, 0, 1.0] * 2) and a[0, :, 2] == pytest.approx([1.0, 0, 0, 0] * 2)
    assert PatchTruth.find(tmp_path / "nothing", "train", ["a"]) is None
    with pytest.raises(TruthError, match="does not cover"):
        PatchTruth.find(tmp_path, "train", ["a", "c"])
    with pytest.raises(TruthError, match="pool"):
        truth.visual(np.array([0]), np.array([0]), (3, 3))


CORPUS = dict(num_clips=6, eval_fraction=0.34, segment_s=2.56, seed=5)


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory, ffmpeg_bin):
    from tgdp.experiments.reproduce.store import Corpus, build_synth_store

    return build_synth_store(tmp_path_factory.mktemp("truth") / "data", Corpus(**CORPUS), workers=1)


def test_store_truth_matches_the_stored_frames_and_fbank(synth_store) -> None:
    from tgdp.experiments.reproduce.store import Corpus, synth_config
    from tgdp.store import Store

    corpus, store_dir = Corpus(**CORPUS), synth_store
    store = Store.open(store_dir, split="train")
    truth = PatchTruth.find(store_dir, "train", store.clip_ids)
    assert truth is not None and truth.meta["synth"] == synth_config(corpus, 1).model_dump(mode="json")
    plans = {p.clip_id: p for p in plan_corpus(synth_config(corpus))[1]}
    agree = []
    for i, cid in enumerate(store.clip_ids):
        rgb = torch.tensor(plans[cid].rgb, dtype=torch.float32)[:, None, None]
        for t in (0, 7, 15):
            shares = truth.visual(np.array([i]), np.array([t]), (12, 12))[0, :, 0]  # 8-px cells of the 96-px frame
            # the share of each cell's pixels showing the object's colour (JPEG + scaling: within 30 levels)
            near = ((store.frame(i, t).float() - rgb).abs().amax(dim=0) < 30).float()
            seen = near.reshape(12, 8, 12, 8).mean(dim=(1, 3)).reshape(-1).numpy()
            assert shares.max() > 0.5 and seen.max() > 0.5
            agree.append(np.corrcoef(shares, seen)[0, 1])
            assert np.abs(shares - seen).mean() < 0.05
        n = store.row(i)["fbank_frames"]
        loud = store.fbank(i).astype(np.float32).mean(axis=1)[:n]  # mean log-Mel per fbank frame
        lab = truth.audio(np.array([i]), np.array([0]), 256, (1, 256))[0, :n].argmax(axis=1)  # 0 note, 1 dist, 2 quiet
        assert loud[lab == 0].mean() > loud[lab == 2].mean() + 1.0
        starts = [j for j in range(6, n - 5) if lab[j] == 0 and lab[j - 1] != 0]
        assert starts  # each note's onset: its first 50 ms are louder than the 50 ms before it
        assert all(loud[j : j + 5].mean() > loud[j - 6 : j - 1].mean() + 1.5 for j in starts)
    assert min(agree) > 0.8, agree


def test_cli_truth_rewrites_the_sidecar_and_refuses_another_corpus(synth_store, tmp_path) -> None:
    import yaml
    from typer.testing import CliRunner

    from tgdp.experiments.reproduce.store import Corpus, synth_config
    from tgdp.pipeline.cli import app
    from tgdp.store import Store

    synth = synth_config(Corpus(**CORPUS), 1).model_dump(mode="json")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"synth": synth}))
    before = PatchTruth.find(synth_store, "eval", Store.open(synth_store, split="eval").clip_ids)
    res = CliRunner().invoke(app, ["truth", str(synth_store), "--split", "eval", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    after = PatchTruth.find(synth_store, "eval", Store.open(synth_store, split="eval").clip_ids)
    assert before is not None and after is not None
    assert np.array_equal(before._visual, after._visual) and np.array_equal(before._audio, after._audio)
    res = CliRunner().invoke(app, ["truth", str(synth_store), "--config", str(cfg), "--set", "synth.seed=6"])
    assert res.exit_code == 2 and "no plan in this synth config" in res.output
