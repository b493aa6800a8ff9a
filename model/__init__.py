"""tgdp.model: the CAV-MAE Sync backbone and TG-DP. Imports without Ray or pyarrow.

Public names are resolved lazily so `import tgdp.model` stays cheap (no torch/timm import until first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from tgdp.config import __version__ as __version__  # also sets tgdp.__version__ (see tgdp/core/__init__.py)

__all__ = [
    "PRESETS",
    "CavMaeSync",
    "CheckpointError",
    "KeyReport",
    "ModelConfig",
    "TeacherEncoder",
    "TgdpModel",
    "adapt_mae_imagenet",
    "build_model",
    "contrastive_loss",
    "distillation_loss",
    "health_metrics",
    "load_mae_imagenet",
    "load_released",
    "mae_loss",
    "step_flops",
]

_WHERE = {
    "PRESETS": "tgdp.model.presets",
    "CavMaeSync": "tgdp.model.cavmae_sync",
    "TeacherEncoder": "tgdp.model.cavmae_sync",
    "CheckpointError": "tgdp.model.checkpoint",
    "KeyReport": "tgdp.model.checkpoint",
    "adapt_mae_imagenet": "tgdp.model.checkpoint",
    "load_mae_imagenet": "tgdp.model.checkpoint",
    "load_released": "tgdp.model.checkpoint",
    "ModelConfig": "tgdp.model.config",
    "TgdpModel": "tgdp.model.tgdp",
    "build_model": "tgdp.model.tgdp",
    "contrastive_loss": "tgdp.model.losses",
    "distillation_loss": "tgdp.model.losses",
    "mae_loss": "tgdp.model.losses",
    "health_metrics": "tgdp.model.health",
    "step_flops": "tgdp.model.flops",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tgdp.model' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
