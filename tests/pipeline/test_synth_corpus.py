"""Synthetic corpus: deterministic ground truth, every fault case, real media that ffprobe accepts, AV coupling."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tgdp.pipeline import synth
from tgdp.pipeline.cli import app
from tgdp.pipeline.manifest import parse_label_index, parse_segments
from tgdp.pipeline.synth import (
    EXPECTED_REASON,
    FAULTS,
    LABELS_FILE,
    SEGMENT_FILES,
    SynthConfig,
    generate,
    plan_corpus,
    read_ground_truth,
    render_audio,
    render_frames,
)

SMALL = dict(num_clips=12, fault_fraction=0.6, seed=3, difficulty=0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ffmpeg_bin):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    result = generate(SynthConfig(**SMALL), out)
    return out, result


def _probe(path: Path) -> subprocess.CompletedProcess:
    cmd = ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height,sample_rate"]
    cmd += ["-show_entries", "format=duration", "-of", "json", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_same_seed_same_ground_truth_bytes(corpus, tmp_path):
    out, _ = corpus
    # the ground truth depends on the seed only, not on the encoding run
    again = generate(SynthConfig(**SMALL), tmp_path / "again", write_media=False)
    for name in ("ground_truth.csv", *SEGMENT_FILES.values(), LABELS_FILE):
        assert (again.out / name).read_bytes() == (out / name).read_bytes(), name
    assert not list((tmp_path / "again" / "videos").iterdir())
    other = generate(SynthConfig(**{**SMALL, "seed": 4}), tmp_path / "other", write_media=False)
    assert other.ground_truth.read_bytes() != (out / "ground_truth.csv").read_bytes()


def test_encoding_is_bitexact(tmp_path, ffmpeg_bin):
    classes, plans = plan_corpus(SynthConfig(num_clips=6, fault_fraction=0.0, webm_fraction=0.5, seed=2))
    for plan in [next(p for p in plans if p.container == c) for c in ("mp4", "webm")]:
        a, b = tmp_path / f"a.{plan.container}", tmp_path / f"b.{plan.container}"
        synth._encode(plan, classes, a, ffmpeg_bin, tmp_path)
        synth._encode(plan, classes, b, ffmpeg_bin, tmp_path)
        assert a.read_bytes() == b.read_bytes(), plan.container


def test_every_fault_case_and_expected_reason(corpus):
    out, result = corpus
    gt = read_ground_truth(out)
    assert len(gt) == 12 and result.num_clips == 12
    assert set(FAULTS) <= {r["fault"] for r in gt}
    for r in gt:
        assert r["expected_reason"] == EXPECTED_REASON[r["fault"]]
        assert r["expect_silent"] == str(r["fault"] == "silent").lower()
        assert r["expect_still"] == str(r["fault"] == "still").lower()
        assert r["clip_id"] == f"audioset:{r['ytid']}:{round(float(r['start_s']) * 1000)}"
        assert len(r["ytid"]) == 11 and (out / r["file"]).is_file()
    assert any(r["ytid"].startswith("-") for r in gt)


def test_media_match_ground_truth(corpus):
    out, _ = corpus
    for r in read_ground_truth(out):
        path = out / r["file"]
        fault = r["fault"]
        if fault == "empty":
            assert path.stat().st_size == 0
        probe = _probe(path)
        if fault in ("empty", "garbage"):
            assert probe.returncode != 0, fault
            continue
        assert probe.returncode == 0, (fault, probe.stderr)
        info = json.loads(probe.stdout)
        streams = {s["codec_type"]: s for s in info["streams"]}
        duration = float(info["format"]["duration"])
        want = {"video"} if fault == "no_audio" else {"audio"} if fault == "no_video" else {"audio", "video"}
        assert set(streams) == want, (r["ytid"], fault)
        if "video" in streams:
            v = streams["video"]
            assert (v["codec_name"], v["width"], v["height"]) == (r["vcodec"], int(r["width"]), int(r["height"]))
        if "audio" in streams:
            assert streams["audio"]["codec_name"] == r["acodec"]
        if fault == "truncated":
            # the container still probes but decoding stops early with errors
            dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True)
            assert dec.stderr.strip()
        elif fault == "short":
            assert duration < float(r["end_s"]) - 1.0
        else:
            assert abs(duration - float(r["duration_s"])) < 0.1
            assert float(r["start_s"]) >= 1.0 and duration >= float(r["end_s"]) + 0.9


def _decode_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.int16)


def _decode_gray(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-an", "-vf", "fps=4,scale=32:24", "-pix_fmt", "gray",
         "-f", "rawvideo", "-"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 24, 32).astype(np.float32)


def test_silent_and_still_flags_are_real(corpus):
    out, _ = corpus
    gt = read_ground_truth(out)
    by_fault = {r["fault"]: out / r["file"] for r in gt}
    normal = next(out / r["file"] for r in gt if r["fault"] == "none")
    assert np.abs(_decode_audio(by_fault["silent"])).max() <= 2
    assert np.abs(_decode_audio(normal)).max() > 5000
    still, moving = _decode_gray(by_fault["still"]), _decode_gray(normal)
    assert np.abs(np.diff(still, axis=0)).mean() < 0.5
    assert np.abs(np.diff(moving, axis=0)).mean() > 1.0


def test_sound_onsets_coincide_with_object_motion():
    cfg = SynthConfig(num_clips=8, difficulty=0.0, fault_fraction=0.0, seed=1)
    classes, plans = plan_corpus(cfg)
    for plan in plans[:4]:  # four classes → jump, shake, slide, pulse
        frames = render_frames(plan)
        colour = np.array(plan.cls.rgb, dtype=np.uint8)
        masks = np.all(frames == colour, axis=-1)  # [N, H, W]: the object (no clutter at difficulty 0)
        t = np.arange(len(frames)) / plan.fps
        onsets = np.array(plan.onsets)
        for onset in onsets[1:-1]:
            before = int(np.searchsorted(t, onset)) - 1  # last frame before the event
            during = int(np.searchsorted(t, onset + 0.15))
            if t[during] - onset >= 0.35 or before < 0:
                continue
            assert not np.array_equal(masks[before], masks[during]), (plan.cls.motion, onset)
        # between events (after the previous one has ended) the object rests
        rest = [i for i in range(1, len(t)) if np.all((t[i] - onsets < 0) | (t[i] - onsets > 0.36))
                and np.all((t[i - 1] - onsets < 0) | (t[i - 1] - onsets > 0.36))]  # fmt: skip
        assert rest and all(np.array_equal(masks[i], masks[i - 1]) for i in rest)

        audio = render_audio(plan, classes).astype(np.float32)
        sr = plan.sample_rate
        for onset in onsets:
            i = int(onset * sr)
            pre = np.sqrt(np.mean(audio[max(0, i - int(0.05 * sr)) : i] ** 2) + 1e-9)
            post = np.sqrt(np.mean(audio[i : i + int(0.05 * sr)] ** 2))
            assert post > 10 * pre


def test_difficulty_controls_semantic_noise():
    _, easy = plan_corpus(SynthConfig(num_clips=40, difficulty=0.0))
    _, hard = plan_corpus(SynthConfig(num_clips=40, difficulty=1.0))
    assert all(p.distractors == () and p.silence == (0.0, 0.0) and p.clutter == 0.0 for p in easy)
    assert sum(len(p.distractors) for p in hard) > 60
    assert sum(p.silence[1] > p.silence[0] for p in hard) > 20
    assert max(p.object_scale for p in hard) < min(p.object_scale for p in easy)
    for p in hard:  # no sound inside a silent stretch
        assert not any(p.silence[0] - 0.35 < t < p.silence[1] for t in p.onsets + tuple(d[0] for d in p.distractors))


def test_config_is_strict():
    with pytest.raises(ValueError):
        SynthConfig(num_clip=3)
    with pytest.raises(ValueError):
        SynthConfig(sizes=[(33, 20)])


def test_cli_synth_then_manifest(tmp_path, ffmpeg_bin):
    runner = CliRunner()
    out = tmp_path / "corpus"
    res = runner.invoke(
        app,
        ["synth", str(out), "--set", "synth.num_clips=3", "--set", "synth.seed=7", "--set", "synth.fault_fraction=0"],
    )
    assert res.exit_code == 0, res.output
    assert "wrote 3 clips" in res.output
    gt = read_ground_truth(out)
    assert len(parse_segments(out / SEGMENT_FILES["as_bal_train"], "audioset").rows) == sum(
        r["split"] == "as_bal_train" for r in gt
    )
    assert set(parse_label_index(out / LABELS_FILE)) == {f"/x/synth{i:02d}" for i in range(8)}

    root = tmp_path / "root"
    args = ["manifest", str(root), "--dataset", "audioset", "--labels", str(out / LABELS_FILE)]
    args += [a for name in SEGMENT_FILES.values() for a in ("--csv", str(out / name))]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    rows = pq.read_table(root / "manifest" / "source.parquet").to_pylist()
    assert sorted((r["clip_id"], r["split"]) for r in rows) == sorted((g["clip_id"], g["split"]) for g in gt)

    res = runner.invoke(app, ["synth", str(root)])  # not empty, not a corpus
    assert res.exit_code == 2 and "refusing" in res.output
    res = runner.invoke(app, ["manifest", str(root), "--dataset", "audioset", "--csv", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "not found" in res.output


# --- profile "coupled": an instance latent shared by sound and picture ------------------------------------------

_COUPLED = dict(
    num_classes=12,
    difficulty=0.6,
    profile="coupled",
    fault_fraction=0.0,
    segment_s=2.56,
    sizes=[(64, 48)],
    fps=[8],
    sample_rates=[16000],
    webm_fraction=0.0,
    start_s=(1, 1),
    tail_s=(0.5, 0.5),
)


def _pitch_features(plan, classes) -> list[float]:
    """Power-weighted mean log2 frequency and the lowest log2 frequency within 10 % of the peak, over the segment."""
    x = render_audio(plan, classes).astype(np.float32)
    sr = plan.sample_rate
    seg = x[int(plan.start_s * sr) : int(plan.end_s * sr)]
    frames = np.lib.stride_tricks.sliding_window_view(seg, 2048)[::512] * np.hanning(2048)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)
    f = np.fft.rfftfreq(2048, 1 / sr)
    keep = (f > 150) & (f < 4000)
    w, lf = power[keep], np.log2(f[keep])
    return [float(np.sum(w * lf) / w.sum()), float(lf[np.argmax(w > 0.1 * w.max())])]


def _hue_histogram(plan) -> np.ndarray:
    """Histogram (24 bins) of the hue of saturated bright pixels over the segment's frames."""
    import matplotlib.colors as mcolors

    frames = render_frames(plan)[int(plan.start_s * plan.fps) : int(plan.end_s * plan.fps)]
    px = frames.reshape(-1, 3).astype(np.float32) / 255
    hi, lo = px.max(1), px.min(1)
    sel = px[((hi - lo) / np.maximum(hi, 1e-6) > 0.8) & (hi > 0.85)]
    hist = np.histogram(mcolors.rgb_to_hsv(sel)[:, 0], bins=24, range=(0, 1))[0].astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def _ridge_cv_r(x: np.ndarray, y: np.ndarray, lam: float = 1.0, folds: int = 4) -> float:
    """Correlation between y and its out-of-fold ridge prediction from standardised x."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    pred, idx = np.zeros_like(y), np.arange(len(y))
    for k in range(folds):
        te = idx % folds == k
        xt = np.c_[x[~te], np.ones((~te).sum())]
        w = np.linalg.solve(xt.T @ xt + lam * np.eye(xt.shape[1]), xt.T @ y[~te])
        pred[te] = np.c_[x[te], np.ones(te.sum())] @ w
    return float(np.corrcoef(pred, y)[0, 1])


def test_coupled_latent_is_recoverable_from_sound_and_picture():
    classes, plans = plan_corpus(SynthConfig(num_clips=64, seed=7, **_COUPLED))
    u = np.array([p.latent for p in plans])
    audio = np.array([_pitch_features(p, classes) for p in plans])
    video = np.stack([_hue_histogram(p) for p in plans])
    r_audio, r_video = _ridge_cv_r(audio, u), _ridge_cv_r(video, u)
    assert r_audio > 0.6 and r_video > 0.6, (r_audio, r_video)
    # the same probe finds nothing when the latent is shuffled across clips: the coupling is per clip
    shuffled = np.random.default_rng(0).permutation(u)
    assert abs(_ridge_cv_r(audio, shuffled)) < 0.4 and abs(_ridge_cv_r(video, shuffled)) < 0.4


def test_coupled_profile_keeps_the_default_plans_and_names_classes_by_shape_and_timbre(tmp_path):
    base = dict(num_clips=24, seed=3, difficulty=0.6)
    _, default = plan_corpus(SynthConfig(**base))
    again = plan_corpus(SynthConfig(**base, profile="default"))[1]
    assert default == again and all(p.latent is None and p.rgb == p.cls.rgb for p in default)
    classes, coupled = plan_corpus(SynthConfig(**{**_COUPLED, "num_clips": 96, "seed": 3}))
    assert len({(c.shape, c.motion) for c in classes}) == len({(c.timbre, c.pattern) for c in classes}) == 12
    assert all(c.timbre != "buzz" for c in classes)
    # colour and pitch follow the clip's latent, not its class
    by_class: dict[int, list[float]] = {}
    for p in coupled:
        by_class.setdefault(p.cls.index, []).append(p.latent)
        assert p.pitch_hz == pytest.approx(220.0 * 2 ** (2 * p.latent))
    assert min(max(v) - min(v) for v in by_class.values()) > 0.3
    assert 0.3 < np.mean([p.decoy is not None for p in coupled]) < 0.9
    assert 0.3 < np.mean([p.static_background for p in coupled]) < 0.7
    generate(SynthConfig(**{**_COUPLED, "num_clips": 8}), tmp_path / "c", write_media=False)
    gt = read_ground_truth(tmp_path / "c")
    assert {r["profile"] for r in gt} == {"coupled"} and all(0 <= float(r["latent"]) < 1 for r in gt)
