"""tgdp.train: TG-DP training from the Arrow store (one process, or torchrun + DDP).

Public entry points: `fit(cfg, store_path, run_dir, resume=False) -> FitSummary` (tgdp.train.loop), `RunConfig` and
`load_run_config(preset_or_yaml, overrides)` (tgdp.train.config). They are imported lazily so that
`import tgdp.train.data` (used by tgdp.eval) does not pull in the loop.
"""

from __future__ import annotations

from typing import Any

from tgdp.config import __version__  # also sets tgdp.__version__ (see tgdp/core/__init__.py)

__all__ = ["RunConfig", "__version__", "fit", "load_run_config"]


def __getattr__(name: str) -> Any:
    if name == "fit":
        from tgdp.train.loop import fit

        return fit
    if name in ("RunConfig", "load_run_config"):
        from tgdp.train import config

        return getattr(config, name)
    raise AttributeError(f"module 'tgdp.train' has no attribute {name!r}")
