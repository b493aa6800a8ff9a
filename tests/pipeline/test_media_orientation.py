"""Two decode behaviours the store documents (docs/STORE.md, "Frame sampling rule"): rotation metadata is applied, so
frames are stored in display orientation, and 10-bit HDR video is converted to 8-bit RGB without tone mapping."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tgdp.pipeline.media import decode_window


def _ffmpeg(ffmpeg_bin: str, *args: str) -> None:
    subprocess.run([ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


def test_rotation_metadata_is_applied(ffmpeg_bin: str, make_clip: Callable[..., Path], tmp_path: Path) -> None:
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    src = "color=red:s=32x48:d=1:r=8[a];color=blue:s=32x48:d=1:r=8[b];[a][b]hstack"  # red left, blue right
    make_clip(plain, video_source=src, audio=False, preset=None)
    _ffmpeg(ffmpeg_bin, "-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))

    def halves(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        f = decode_window(path, 0.0, 1.0, audio=False, num_frames=2, size=48).frames[0].astype(float)
        return f[:, :16].mean((0, 1)), f[:, -16:].mean((0, 1)), f[:16].mean((0, 1)), f[-16:].mean((0, 1))

    left, right, _, _ = halves(plain)
    assert left[0] > 200 > left[2] and right[2] > 200 > right[0]
    left, right, top, bottom = halves(rotated)
    # A quarter turn puts the two colours above each other, as a player shows the clip.
    assert np.allclose(left, right, atol=3) and abs(top - bottom).max() > 200


def test_ten_bit_hdr_is_converted_without_tone_mapping(make_clip: Callable[..., Path], tmp_path: Path) -> None:
    """The same 10-bit pixels tagged PQ (HDR10) and SDR decode to the same RGB: the transfer function is ignored."""
    enc = {"video_source": "testsrc2=s=64x48:d=1:r=8", "audio": False, "vcodec": "libx265", "pix_fmt": "yuv420p10le"}
    tags = ["-x265-params", "log-level=error", "-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc"]
    pq, sdr = tmp_path / "pq.mp4", tmp_path / "sdr.mp4"
    try:
        make_clip(pq, output_args=[*tags, "smpte2084"], **enc)
        make_clip(sdr, output_args=[*tags, "bt709"], **enc)
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg has no 10-bit libx265")
    a = decode_window(pq, 0.0, 1.0, audio=False, num_frames=4, size=48).frames
    b = decode_window(sdr, 0.0, 1.0, audio=False, num_frames=4, size=48).frames
    assert a.dtype == np.uint8 and a.shape == (4, 48, 48, 3)
    assert np.array_equal(a, b)
