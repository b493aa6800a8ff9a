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
from tgdp.pipeline.store import segment_start
from tgdp.pipeline.truth import PatchTruth

__all__ = ["AUDIO_LABELS", "VISUAL_LABELS", "label_precision", "selection_metrics"]

VISUAL_LABELS = ("obj", "decoy", "bg")
AUDIO_LABELS = ("note", "dist", "quiet")


def label_precision(
    shares: np.ndarray, keep: np.ndarray, prio: np.ndarray | None, labels: tuple[str, ...], prefix: str
) -> dict[str, float]:
    """shares [B, N, L], keep [B, k] kept positions, prio [B, N] or None -> {sel_, rand_, att_}{prefix}_{label}."""
    kept = np.take_along_axis(shares, keep[:, :, None], axis=1)  # [B, k, L]
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        out[f"sel_{prefix}_{name}"] = float(kept[..., j].mean())
        out[f"rand_{prefix}_{name}"] = float(shares[..., j].mean())
        if prio is not None:
            out[f"att_{prefix}_{name}"] = float((prio * shares[..., j]).sum(axis=1).mean())
    return out


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
        out.update(label_precision(shares, g["keep_v"].cpu().numpy(), arr("prio_v"), VISUAL_LABELS, "v"))
    if "keep_a" in g:
        starts = np.array([segment_start(int(t), num_frames, target_length, cfg.audio_length) for t in frames])
        shares = truth.audio(rows, starts, cfg.audio_length, cfg.audio_grid)
        out.update(label_precision(shares, g["keep_a"].cpu().numpy(), arr("prio_a"), AUDIO_LABELS, "a"))
    return out
