"""Held-out selection precision of a checkpoint: which patches would the teacher keep, against the ground truth?

For each clip of a store split that has a per-patch truth sidecar (`tgdp.pipeline.truth`), one aligned pair (fbank
segment and frame `frame_index`) goes through a priority encoder, which ranks the patches by its last joint block's
attention (`TeacherEncoder`, direction `patch_to_global` or `global_to_patch`); the contrastive pass would keep the
top k = `keep_count(N, contrastive_mask_ratio)`. The encoder is the checkpoint's EMA teacher (`source="teacher"`)
or a copy of its student (`source="student"`: the same ranking with no EMA lag). Per label, the figures of
`truth.label_precision` are averaged over clips, with the paired difference selected − random and its 95 %
t-interval over clips. The released code's shuffled-priority bug and Gumbel selection are not applied: this is the
deterministic top-k of `distinct` masking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tgdp.eval.embed import eval_batches, eval_dataset
from tgdp.model.cavmae_sync import TeacherEncoder
from tgdp.model.config import keep_count
from tgdp.model.masking import priority_order
from tgdp.pipeline.truth import AUDIO_LABELS, VISUAL_LABELS, PatchTruth, label_precision
from tgdp.store import segment_start
from tgdp.train.data import check_geometry

__all__ = ["store_selection", "summarise"]

# two-sided 95 % Student t quantiles; a df between two entries takes the smaller df's (wider: conservative)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042, 60: 2.0, 120: 1.98}


def _t95(df: int) -> float:
    return _T95[max(k for k in _T95 if k <= max(df, 1))]


def summarise(per_clip: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over clips of every figure, plus for each label `lift_*` (= sel / rand) and `diff_*` (sel − rand) with
    its 95 % t-interval over clips (`diff_*_lo`, `diff_*_hi`)."""
    out = {k: float(v.mean()) for k, v in per_clip.items()}
    for key in [k for k in per_clip if k.startswith("sel_")]:
        name = key[len("sel_") :]
        d = per_clip[key] - per_clip[f"rand_{name}"]
        half = _t95(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        out[f"diff_{name}"] = float(d.mean())
        out[f"diff_{name}_lo"], out[f"diff_{name}_hi"] = float(d.mean()) - half, float(d.mean()) + half
        rand = out[f"rand_{name}"]
        out[f"lift_{name}"] = out[key] / rand if rand > 0 else float("nan")
    return out


@torch.no_grad()
def store_selection(
    model: torch.nn.Module,
    store: Any,
    truth: PatchTruth,
    rows: Sequence[int] | None = None,
    frame_index: int = 8,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    source: str = "teacher",
    direction: str | None = None,
) -> dict[str, Any]:
    """Selection figures of `model` (a `TgdpModel`) on store rows (all by default); see the module docstring."""
    cfg = model.cfg
    if source == "teacher" and model.teacher is None:
        raise ValueError("this model has no teacher; use source='student'")
    if source not in ("teacher", "student"):
        raise ValueError(f"source must be 'teacher' or 'student', got {source!r}")
    encoder = model.teacher if source == "teacher" else TeacherEncoder(model.student)
    direction = direction or cfg.priority_direction
    rows = list(range(len(store))) if rows is None else list(rows)
    geo = check_geometry(store, cfg)
    start = segment_start(frame_index, geo["num_frames"], geo["target_length"], cfg.audio_length)
    ds = eval_dataset(store, cfg, rows, frames=[frame_index])
    encoder.eval()
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    for audio, frames in eval_batches(ds, batch_size, torch.device(device)):  # one pair per clip
        _, _, p_a, p_v = encoder(audio, frames, direction)
        r = np.asarray(rows[done : done + len(audio)])
        done += len(audio)
        for m, prio, shares, labels in (
            ("v", p_v, truth.visual(r, np.full(len(r), frame_index), cfg.visual_grid), VISUAL_LABELS),
            ("a", p_a, truth.audio(r, np.full(len(r), start), cfg.audio_length, cfg.audio_grid), AUDIO_LABELS),
        ):
            k = keep_count(prio.shape[1], cfg.contrastive_mask_ratio, cfg.keep_rounding)
            keep = priority_order(prio)[:, :k].cpu().numpy()
            for key, v in label_precision(shares, keep, prio.float().cpu().numpy(), labels, m).items():
                parts.setdefault(key, []).append(v)
    per_clip = {k: np.concatenate(v) for k, v in parts.items()}
    return {
        "clips": len(rows),
        "frame_index": frame_index,
        "source": source,
        "direction": direction,
        **summarise(per_clip),
    }
