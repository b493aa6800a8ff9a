"""Does the teacher keep the informative tokens? Precision of the contrastive pass's kept patches against the
synthetic store's per-patch ground truth (`tgdp.pipeline.truth`), next to random selection at the same ratio.

For a batch, each patch has label shares (visual: object / decoy / background cover; audio: note / off-screen
distractor / quiet time share) and the contrastive pass kept k of the N patches. Figures per label L:
- `sel_{m}_{L}`: mean share of L over the kept patches (the selection's precision for L);
- `rand_{m}_{L}`: mean share of L over all patches = the expected precision of a uniformly random k-subset (exact,
  no sampling noise: what the random-masking arm of the same ratio keeps on average);
- `att_{m}_{L}`: the priority mass on L, Σ_n priority_n · share_n (priorities sum to 1): where the teacher's
  attention goes, whatever the top-k cut does with it.
m = v (visual, L ∈ obj, decoy, bg) or a (audio, L ∈ note, dist, quiet). A selection that does better than random on
the object has `sel_v_obj` > `rand_v_obj`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tgdp.model.config import ModelConfig
from tgdp.pipeline.truth import AUDIO_LABELS, VISUAL_LABELS, PatchTruth, label_precision
from tgdp.store import segment_start

__all__ = ["selection_metrics"]


def _batch_means(figures: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in figures.items()}


def selection_metrics(
    truth: PatchTruth, g: dict[str, torch.Tensor], cfg: ModelConfig, num_frames: int, target_length: int
) -> dict[str, float]:
    """Selection figures of one logged micro-batch: `g` holds `rows` and `frame_index` [B] and the forward's
    `keep_*` [B, k] / `prio_*` [B, N]; a modality whose contrastive pass kept every token has no figures."""
    if "rows" not in g or "frame_index" not in g:
        return {}
    rows = g["rows"].cpu().numpy().astype(np.int64)
    frames = g["frame_index"].cpu().numpy().astype(np.int64)
    out: dict[str, float] = {}

    def arr(key: str) -> Any:
        return g[key].detach().float().cpu().numpy() if key in g else None

    if "keep_v" in g:
        shares = truth.visual(rows, frames, cfg.visual_grid)
        out.update(_batch_means(label_precision(shares, g["keep_v"].cpu().numpy(), arr("prio_v"), VISUAL_LABELS, "v")))
    if "keep_a" in g:
        starts = np.array([segment_start(int(t), num_frames, target_length, cfg.audio_length) for t in frames])
        shares = truth.audio(rows, starts, cfg.audio_length, cfg.audio_grid)
        out.update(_batch_means(label_precision(shares, g["keep_a"].cpu().numpy(), arr("prio_a"), AUDIO_LABELS, "a")))
    return out
