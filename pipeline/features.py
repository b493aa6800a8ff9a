"""Per-clip features for the store: CAV-MAE log-Mel fbank (model-spec §1.3), JPEG frames, audio/video metrics.

The fbank recipe is CAV-MAE Sync's `_wav2fbank`: waveform − mean, `torchaudio.compliance.kaldi.fbank(htk_compat=True,
sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)`,
then zero-padded or cut to `target_length` frames. It is stored UN-normalised (float16); readers normalise with
mean −5.081, std 4.4849 after segmenting, as the reference loader does.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = [
    "FBANK_PARAMS",
    "audio_metrics",
    "encode_jpegs",
    "fbank_from_pcm",
    "still_score",
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
    gray = frames.astype(np.float32).mean(axis=3)
    bh, bw = h // grid, w // grid
    small = gray[:, : bh * grid, : bw * grid].reshape(t, grid, bh, grid, bw).mean(axis=(2, 4))
    return float(np.mean(np.abs(np.diff(small, axis=0))))
