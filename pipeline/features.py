"""Per-clip features for the store: CAV-MAE log-Mel fbank (docs/STORE.md), JPEG frames, audio/video metrics, and
the per-clip feature cache that lets `validate` hand its decode to `shard` (docs/STORE.md, "One decode per clip").

The fbank recipe is CAV-MAE Sync's `_wav2fbank`: waveform − mean, `torchaudio.compliance.kaldi.fbank(htk_compat=True,
sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`,
then zero-padded or cut to `target_length` frames. It is stored UN-normalised (float16); readers normalise with
mean −5.081, std 4.4849 after segmenting, as the reference loader does.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from tgdp.config import StrictConfig
from tgdp.core.atomic import atomic_path
from tgdp.pipeline.layout import safe_name

__all__ = [
    "FBANK_PARAMS",
    "FeatureParams",
    "audio_metrics",
    "cache_key",
    "clip_payload",
    "encode_jpegs",
    "fbank_from_pcm",
    "feature_cache_path",
    "read_feature_cache",
    "still_score",
    "write_feature_cache",
]

# Every parameter that determines the stored fbank (written into the store metadata).
FBANK_PARAMS: dict[str, Any] = {
    "sr": 16000,
    "num_mel_bins": 128,
    "frame_shift_ms": 10,
    "frame_length_ms": 25,
    "window": "hanning",
    "htk_compat": True,
    "use_energy": False,
    "dither": 0.0,
    "channel": "first",
    "target_length": 1024,
    "pad": "zeros (log domain), or cut",
    "mean": -5.081,
    "std": 4.4849,
}


def fbank_from_pcm(
    pcm: np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 128, target_length: int = 1024
) -> tuple[np.ndarray, int]:
    """pcm [S] float32 mono → (fbank [target_length, num_mel_bins] float16 un-normalised, real frame count)."""
    import torch
    import torchaudio

    wave = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32)).unsqueeze(0)
    wave = wave - wave.mean()
    if wave.shape[1] < int(0.025 * sample_rate):  # kaldi needs at least one 25 ms window
        return np.zeros((target_length, num_mel_bins), np.float16), 0
    fb = torchaudio.compliance.kaldi.fbank(
        wave,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_shift=10,
    )
    n = int(fb.shape[0])
    out = np.zeros((target_length, num_mel_bins), np.float16)
    keep = min(n, target_length)
    out[:keep] = fb[:keep].numpy().astype(np.float16)
    return out, keep


def encode_jpegs(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    """frames [T, H, W, 3] uint8 RGB → T baseline JPEGs (PIL, 4:2:0, deterministic for the same input)."""
    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame), "RGB").save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def audio_metrics(pcm: np.ndarray, sample_rate: int = 16000, window_s: float = 0.1, floor_dbfs: float = -60.0):
    """pcm [S] → (rms_dbfs, silent_frac, peak): overall RMS in dBFS, share of `window_s` windows below `floor_dbfs`."""
    if pcm.size == 0:
        return -120.0, 1.0, 0.0
    x = pcm.astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x)))
    win = max(1, int(round(window_s * sample_rate)))
    n = x.size // win
    if n == 0:
        win_db = np.array([20 * np.log10(rms + 1e-10)])
    else:
        w = x[: n * win].reshape(n, win)
        win_db = 20 * np.log10(np.sqrt(np.mean(w * w, axis=1)) + 1e-10)
    return 20 * np.log10(rms + 1e-10), float(np.mean(win_db < floor_dbfs)), float(np.max(np.abs(x)))


def still_score(frames: np.ndarray, grid: int = 32) -> float:
    """frames [T, H, W, 3] uint8 → mean |Δ| (0–255) between consecutive frames as `grid`×`grid` grayscale."""
    if frames is None or len(frames) < 2:
        return 0.0
    t, h, w, _ = frames.shape
    bh, bw = h // grid, w // grid
    # Integer block sums (gray = channel mean, then block mean): ~6x cheaper than a float32 copy of the frames.
    sums = frames[:, : bh * grid, : bw * grid].reshape(t, grid, bh, grid, bw, 3).sum(axis=(2, 4, 5), dtype=np.int64)
    small = sums / float(bh * bw * 3)
    return float(np.mean(np.abs(np.diff(small, axis=0))))


# -- per-clip feature cache (validate → shard) --------------------------------------------------------------


class FeatureParams(StrictConfig):
    """Everything besides the raw file and the window that determines a clip's store payload."""

    num_frames: int = Field(16, ge=1, description="video frames sampled per clip into the store (T)")
    frame_size: int = Field(224, ge=16, description="stored frame side in pixels (center crop, square)")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the stored frames")
    sample_rate: int = Field(16000, ge=8000, description="audio resample rate in Hz before the fbank")
    num_mel_bins: int = Field(128, ge=8, description="mel bins of the Kaldi fbank")
    target_length: int = Field(1024, ge=16, description="fbank frames per clip after padding/cutting (10 ms each)")


def clip_payload(
    frames: np.ndarray | None, frame_pts_s: np.ndarray | None, pcm: np.ndarray | None, params: FeatureParams
) -> tuple[dict[str, Any] | None, str | None]:
    """Decoded window → (store payload, None) or (None, reason). The payload has the store columns
    `frames_jpeg` (T JPEG bytes), `frame_pts_s` (T floats), `fbank` [L, M] float16, `fbank_frames`."""
    if frames is None or len(frames) != params.num_frames or pcm is None:
        return None, "too_short: no frames or audio in the window"
    fbank, n_frames = fbank_from_pcm(pcm, params.sample_rate, params.num_mel_bins, params.target_length)
    if n_frames == 0 or not np.isfinite(fbank).all():
        return None, "bad_fbank: empty or non-finite"
    payload = {
        "frames_jpeg": encode_jpegs(frames, params.jpeg_quality),
        "frame_pts_s": [float(x) for x in np.asarray(frame_pts_s, np.float32)],
        "fbank": fbank,
        "fbank_frames": n_frames,
    }
    return payload, None


def feature_cache_path(root: Path, clip_id: str) -> Path:
    """ROOT/features/<bb>/<safe_name>.npz (the raw file's bucket rule; never a path built from the id)."""
    name = safe_name(clip_id)
    return Path(root) / "features" / name[-2:] / f"{name}.npz"


def cache_key(
    fetch_sha256: str | None,
    window_start_s: float,
    duration_s: float,
    params: FeatureParams,
    valid_rule: str,
    ffmpeg_version: str,
) -> str:
    """Digest of every input of a cached payload; a cache entry is used only when its key matches exactly."""
    blob = json.dumps(
        {
            "sha256": fetch_sha256,
            "window": [round(float(window_start_s), 6), round(float(duration_s), 6)],
            "params": params.model_dump(),
            "valid_rule": valid_rule,
            "ffmpeg": ffmpeg_version,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def write_feature_cache(path: Path, key: str, payload: dict[str, Any]) -> None:
    """Write a payload atomically (`core.atomic.atomic_path`: temporary name in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jpegs = payload["frames_jpeg"]
    offsets = np.cumsum([0] + [len(b) for b in jpegs], dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.frombuffer(key.encode(), np.uint8),
            jpeg_data=np.frombuffer(b"".join(jpegs), np.uint8),
            jpeg_offsets=offsets,
            frame_pts_s=np.asarray(payload["frame_pts_s"], np.float32),
            fbank=payload["fbank"],
            fbank_frames=np.asarray(payload["fbank_frames"], np.int32),
        )


def read_feature_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached payload when `path` holds one written under `key`; None when missing, stale or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if z["key"].tobytes().decode() != key:
                return None
            data, off = z["jpeg_data"].tobytes(), z["jpeg_offsets"]
            payload = {
                "frames_jpeg": [data[off[k] : off[k + 1]] for k in range(len(off) - 1)],
                "frame_pts_s": [float(x) for x in z["frame_pts_s"]],
                "fbank": z["fbank"],
                "fbank_frames": int(z["fbank_frames"]),
            }
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile):
        return None
    fb = payload["fbank"]
    if fb.dtype != np.float16 or fb.ndim != 2 or len(payload["frames_jpeg"]) != len(payload["frame_pts_s"]):
        return None
    return payload
