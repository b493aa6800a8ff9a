"""Shared test set-up: CPU only, offline, 2 threads, and a generator of real media files made with ffmpeg."""

from __future__ import annotations

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("TGDP_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (or $TGDP_SHARED); tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def ffmpeg_bin() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("ffmpeg is required in CI (make setup installs it)")
        pytest.skip("ffmpeg not installed")
    return exe


@pytest.fixture(scope="session")
def make_clip(ffmpeg_bin: str) -> Callable[..., Path]:
    """Make a small real media file with ffmpeg lavfi sources.

    make_clip(path, duration=3.0, video=True, audio=True, size="64x64", fps=8, freq=440, sr=16000,
              vcodec="libx264", acodec="aac") -> path
    """

    def _make(
        path: Path,
        duration: float = 3.0,
        video: bool = True,
        audio: bool = True,
        size: str = "64x64",
        fps: int = 8,
        freq: int = 440,
        sr: int = 16000,
        vcodec: str = "libx264",
        acodec: str = "aac",
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [ffmpeg_bin, "-hide_banner", "-loglevel", "error", "-y"]
        if video:
            cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={duration}"]
        if audio:
            cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={sr}:duration={duration}"]
        if video:
            cmd += ["-c:v", vcodec, "-pix_fmt", "yuv420p"]
            if vcodec == "libx264":
                cmd += ["-preset", "ultrafast"]
        if audio:
            cmd += ["-c:a", acodec]
        cmd += ["-shortest", str(path)]
        subprocess.run(cmd, check=True)
        return path

    return _make
