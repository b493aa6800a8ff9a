"""The device choice of every command that runs the model (train, eval, experiments): `auto` is the GPU when CUDA
is present, else the CPU. torch is imported inside the function, so `tgdp.core` stays importable without it."""

from __future__ import annotations

from typing import Any

from tgdp.core.errors import TgdpError

__all__ = ["DeviceError", "pick_device"]


class DeviceError(TgdpError, RuntimeError):
    """The device asked for is not there (`cuda` without CUDA)."""


def pick_device(kind: str = "auto", local_rank: int | None = None, key: str = "device") -> Any:
    """`torch.device` for `kind` (`auto`, `cpu`, `cuda`, `cuda:N`, …): `auto` → CUDA when available, else CPU; a bare
    `cuda` becomes `cuda:local_rank` when a rank is given (torchrun). `key` names the setting in the error."""
    import torch

    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(kind)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{key}={kind} but CUDA is not available")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device
