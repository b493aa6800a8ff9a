"""Shared test set-up: CPU only, offline, 2 threads, `make_clip` (real media files made with ffmpeg), and the `gpu`
marker: its tests skip, with the reason, where torch sees no CUDA device. CUDA is hidden unless CUDA_VISIBLE_DEVICES
is set (`make test-gpu` sets it), so that `auto` device choices stay on the CPU in every other test."""

from __future__ import annotations

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import fixtures

SHARED = Path(os.environ.get("TGDP_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    why = "needs a CUDA device: torch sees none" + (
        " (tests hide CUDA unless CUDA_VISIBLE_DEVICES is set: run `make test-gpu`)"
        if os.environ.get("CUDA_VISIBLE_DEVICES") == ""
        else ""
    )
    for item in gpu:
        item.add_marker(pytest.mark.skip(reason=why))


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
    """`tests.fixtures.make_clip` with this machine's ffmpeg: make_clip(path, duration=3.0, ...) -> path."""
    return functools.partial(fixtures.make_clip, ffmpeg=ffmpeg_bin)
