"""Held-out selection precision (`tgdp-eval selection`): a naive recomputation, the interval arithmetic, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.train.train_support import FakeStore
from tgdp.eval.selection import store_selection, summarise
from tgdp.model import build_model
from tgdp.pipeline.truth import TRUTH_FORMAT, PatchTruth, truth_path


def test_summarise_on_a_hand_example() -> None:
    per_clip = {"sel_v_obj": np.array([0.5, 0.3, 0.4]), "rand_v_obj": np.array([0.2, 0.2, 0.2])}
    out = summarise(per_clip)
    d = np.array([0.3, 0.1, 0.2])  # mean 0.2, sd 0.1, t(2) = 4.303
    assert out["diff_v_obj"] == pytest.approx(0.2) and out["lift_v_obj"] == pytest.approx(0.4 / 0.2)
    half = 4.303 * d.std(ddof=1) / np.sqrt(3)
    assert (out["diff_v_obj_lo"], out["diff_v_obj_hi"]) == pytest.approx((0.2 - half, 0.2 + half))


def _truth(tmp_path, store: FakeStore):
    rng = np.random.default_rng(0)
    visual = (rng.random((store.n, 16, 12, 12, 2)) < 0.2).astype(np.uint8) * 120
    audio = rng.integers(0, 3, (store.n, 256)).astype(np.uint8)
    path = truth_path(tmp_path, "train")
    path.parent.mkdir(parents=True)
    meta = np.array(json.dumps({"format": TRUTH_FORMAT}))
    np.savez(path, clip_id=np.array(store.clip_ids), visual=visual, audio=audio, meta=meta)
    return PatchTruth(path, store.clip_ids)


def test_teacher_selection_matches_a_naive_top_k(tmp_path) -> None:
    store = FakeStore(n=6)
    truth = _truth(tmp_path, store)
    torch.manual_seed(0)
    model = build_model("tiny_tgdp")
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    res = store_selection(model, store, truth, frame_index=8, batch_size=4)
    # naive: the teacher's priorities clip by clip, the top 18 of 36 visual patches, the mean object share there
    from tgdp.train.transforms import FrameTransform, decode_frame

    tf, sel, rand = FrameTransform(96), [], []
    for i in range(6):
        audio = torch.from_numpy(store.segment(i, 8, length=128))[None]
        frame = tf(decode_frame(store.frame_jpeg(i, 8)))[None]
        _, _, _, p_v = model.teacher(audio, frame)
        shares = truth.visual(np.array([i]), np.array([8]), (6, 6))[0, :, 0]
        top = torch.argsort(p_v[0], descending=True)[:18].numpy()
        sel.append(shares[top].mean())
        rand.append(shares.mean())
    assert res["sel_v_obj"] == pytest.approx(np.mean(sel), rel=1e-5)
    assert res["rand_v_obj"] == pytest.approx(np.mean(rand), rel=1e-5)
    assert res["clips"] == 6 and res["source"] == "teacher" and res["direction"] == "patch_to_global"
    other = store_selection(model, store, truth, batch_size=4, source="student", direction="global_to_patch")
    assert other["sel_v_obj"] != res["sel_v_obj"] and other["rand_v_obj"] == pytest.approx(res["rand_v_obj"])
    model.reset_teacher()  # the teacher equals the student: both sources rank alike
    same = store_selection(model, store, truth, batch_size=4)
    assert same == {**store_selection(model, store, truth, batch_size=4, source="student"), "source": "teacher"}


def test_health_and_selection_commands_read_their_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tgdp-eval health` / `selection` take their settings from `--set` (HealthConfig, SelectionConfig) and write
    the figures they print to `--out` (tgdp.eval.commands)."""
    from typer.testing import CliRunner

    from tgdp.eval.cli import app
    from tgdp.store import Store

    store = FakeStore(n=6)
    store.split = "eval"
    monkeypatch.setattr(Store, "open", classmethod(lambda cls, *a, **k: store))
    _truth(tmp_path, store)
    eval_path = truth_path(tmp_path, "eval")
    eval_path.parent.mkdir(parents=True, exist_ok=True)
    truth = PatchTruth(truth_path(tmp_path, "train").rename(eval_path), store.clip_ids)
    torch.manual_seed(0)
    model = build_model("tiny_tgdp")
    ckpt = tmp_path / "tiny.pt"
    config = {"model_preset": "tiny_tgdp", "model": {}}
    torch.save({"model": model.student.state_dict(), "teacher": model.teacher.state_dict(), "config": config}, ckpt)
    base = ["--checkpoint", str(ckpt), "--store", str(tmp_path), "--split", "eval", "--device", "cpu"]

    r = CliRunner().invoke(app, ["health", *base, "--set", "batch_size=3", "--set", "frame=2", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["nce_batch"] == 3 and res["split"] == "eval" and res["model_preset"] == "tiny_tgdp"

    out = tmp_path / "sel.json"
    sets = ["--set", "source=student", "--set", "direction=global_to_patch", "--set", "frame=4"]
    r = CliRunner().invoke(app, ["selection", *base, *sets, "--out", str(out)])
    assert r.exit_code == 0, r.output
    sel = json.loads(out.read_text())
    assert (sel["source"], sel["direction"], sel["clips"]) == ("student", "global_to_patch", 6)
    assert "student global_to_patch: 6 eval clips, frame 4" in r.output
    direct = store_selection(model, store, truth, frame_index=4, batch_size=64, source="student",
                             direction="global_to_patch")  # fmt: skip
    assert sel["sel_v_obj"] == pytest.approx(direct["sel_v_obj"])
    bad = CliRunner().invoke(app, ["selection", *base, "--set", "source=techer"])
    assert bad.exit_code == 2 and "teacher" in bad.output and "Traceback" not in bad.output
