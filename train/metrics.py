"""Run metrics: JSON lines (`run_dir/metrics.jsonl`), TensorBoard scalars and a tqdm bar, all on rank 0 only.

Design: one `MetricsLogger.log(step, values)` call per log interval writes one JSON object (keyed by `step`) and the
same scalars to TensorBoard under `train/<name>`; other ranks get a logger whose methods do nothing. The JSON file
is appended to (a resumed run continues it) and flushed per line so a crash loses at most the current line.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

from tgdp.train.config import write_error

__all__ = ["MetricsLogger", "StepTimer"]


class MetricsLogger:
    """JSON-lines + TensorBoard + progress bar; `enabled=False` (non-zero ranks) makes every method a no-op."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        total_steps: int = 0,
        initial_step: int = 0,
        samples_per_step: int = 1,
    ) -> None:
        self.enabled = enabled
        self._fh = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self._fh = self.path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=initial_step or None)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps * samples_per_step,
                initial=initial_step * samples_per_step,
                unit="sample",
                unit_scale=True,
                dynamic_ncols=True,
                desc="train",
            )

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled or self._fh is None:
            return
        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()})
        assert self._fh is not None
        try:
            self._fh.write(json.dumps(row) + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk: name the file and the free space
            with contextlib.suppress(OSError):
                self._fh.close()  # its unwritten line would fail again in close()
            self._fh = None
            raise write_error(self.path, exc) from exc
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"train/{k}", v, step)
        if self._bar is not None and "loss" in values:
            post = {"loss": f"{values['loss']:.4f}"}
            if "nce_ratio" in values:  # InfoNCE / ln(B): 1 = chance
                post["nce/lnB"] = f"{values['nce_ratio']:.2f}"
            if "a_cos" in values and "v_cos" in values:  # mean pairwise cosine: → 1 on collapse
                post["cos a/v"] = f"{values['a_cos']:.2f}/{values['v_cos']:.2f}"
            self._bar.set_postfix(post, refresh=False)

    def advance(self, samples: int) -> None:
        if self._bar is not None:
            self._bar.update(samples)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._fh is not None:
            self._fh.close()
        self._fh = self._tb = self._bar = None


class StepTimer:
    """Accumulates data-wait and total wall time over a log window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.data_s = 0.0
        self.total_s = 0.0
        self.samples = 0
        self.steps = 0

    def summary(self) -> dict[str, float]:
        total = max(self.total_s, 1e-9)
        return {
            "samples_per_s": self.samples / total,
            "step_time_s": total / max(self.steps, 1),
            "data_wait_frac": self.data_s / total,
        }
