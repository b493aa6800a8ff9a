"""Per-patch ground truth of a synthetic store: what each frame cell shows and what sounds in each fbank frame.

The synthetic corpus (`tgdp.pipeline.synth`) knows, for every clip, where the sounding object and the silent decoy
are in every video frame and when its notes sound. `write_truth` recomputes that from the synth plan (the plan is a
function of the `SynthConfig` alone; no media is read or written) and maps it through the store's own geometry:
- visual: store frame t of a clip is the video frame at file time `start_s + frame_pts_s[t]`, scaled (short side to
  the store's frame size) and centre-cropped as `tgdp.pipeline.media` does. Each label's pixel coverage is
  box-averaged onto a grid of `cells = size // 8` cells per side, so a 16-px model patch on same-size frames is
  exactly 2×2 cells (the reader pools cells to any patch grid);
- audio: fbank frame j (10 ms shift, 25 ms window) is centred at window time 0.01·j + 0.0125 s and labelled note /
  off-screen distractor / quiet (`synth.sound_labels`); frames past the clip's real fbank (zero padding) are quiet.

Sidecar: `STORE/truth/<split>.npz` (`truth_path`) with `clip_id` [N], `visual` uint8 [N, T, G, G, 2] (object and
decoy coverage ×255; background = the rest), `audio` uint8 [N, L] (`LABEL_QUIET`/`NOTE`/`DISTRACTOR`) and `meta`
(JSON: format, frame size, cells, target length, the synth config). It sits beside the split directories, so the
store format itself is untouched. `PatchTruth` reads it and answers per (row, frame, model grid).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tgdp.core.atomic import atomic_path
from tgdp.core.errors import TgdpError

if TYPE_CHECKING:
    from tgdp.pipeline.synth import ClipPlan, SynthConfig

__all__ = [
    "AUDIO_LABELS",
    "TRUTH_FORMAT",
    "VISUAL_LABELS",
    "PatchTruth",
    "TruthError",
    "label_precision",
    "truth_path",
    "write_truth",
]

TRUTH_FORMAT = "tgdp-truth/1"
_CELL_PX = 8
VISUAL_LABELS = ("obj", "decoy", "bg")  # the label axis of `PatchTruth.visual`
AUDIO_LABELS = ("note", "dist", "quiet")  # the label axis of `PatchTruth.audio`
_SHIFT_S, _HALF_WINDOW_S = 0.010, 0.0125  # fbank frame shift and half the 25-ms window (features.FBANK_PARAMS)


class TruthError(TgdpError, ValueError):
    """The store and the synth config disagree (a clip without a plan, a missing sidecar row, bad geometry)."""


def truth_path(store_dir: str | Path, split: str) -> Path:
    """Where the sidecar of `split` lives: STORE/truth/<split>.npz."""
    return Path(store_dir) / "truth" / f"{split}.npz"


def _scaled_size(w: int, h: int, size: int) -> tuple[int, int]:
    """ffmpeg `scale=w=if(lt(iw,ih),S,-2):h=if(lt(iw,ih),-2,S)`: short side S, long side proportional and even."""
    if w < h:
        return size, max(2, int(round(h * size / w / 2)) * 2)
    return max(2, int(round(w * size / h / 2)) * 2), size


def _box(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Box-resample a float map [H, W] to [h, w] (area averaging)."""
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.BOX), dtype=np.float32)


def visual_cells(labels: np.ndarray, size: int, cells: int) -> np.ndarray:
    """labels uint8 [T, H, W] (synth label maps at video size) -> coverage float32 [T, cells, cells, 2] (object,
    decoy) on the store frame (scaled short side to `size`, centre-cropped `size`×`size`)."""
    from tgdp.pipeline.synth import LABEL_DECOY, LABEL_OBJECT  # the writer's side only: training reads no synth

    t, h, w = labels.shape
    sw, sh = _scaled_size(w, h, size)
    x0, y0 = (sw - size) // 2, (sh - size) // 2
    out = np.zeros((t, cells, cells, 2), np.float32)
    for i in range(t):
        for k, lab in enumerate((LABEL_OBJECT, LABEL_DECOY)):
            m = (labels[i] == lab).astype(np.float32)
            if m.any():
                crop = _box(m, sw, sh)[y0 : y0 + size, x0 : x0 + size]
                out[i, :, :, k] = _box(crop, cells, cells)
    return out


def audio_frames(plan: ClipPlan, target_length: int, real_frames: int) -> np.ndarray:
    """uint8 [target_length]: what sounds at each fbank frame's centre (quiet past the `real_frames`)."""
    from tgdp.pipeline.synth import sound_labels

    j = np.arange(target_length)
    out = sound_labels(plan, plan.start_s + _SHIFT_S * j + _HALF_WINDOW_S)
    out[real_frames:] = 0
    return out


def _clip_truth(plan: ClipPlan, row: dict[str, Any], size: int, cells: int, target: int) -> tuple[Any, Any]:
    from tgdp.pipeline.synth import render_labels

    pts = np.asarray(row["frame_pts_s"], np.float64)
    frame_idx = np.round((plan.start_s + pts) * plan.fps).astype(np.int64)
    vis = visual_cells(render_labels(plan, frame_idx), size, cells)
    aud = audio_frames(plan, target, int(row.get("fbank_frames") or target))
    return np.round(vis * 255).astype(np.uint8), aud


def write_truth(store: Any, split: str, synth: SynthConfig, store_dir: str | Path) -> Path:
    """Write the sidecar of an opened store split (`Store`: clip_ids, meta, row(i)) built from `synth`'s corpus.

    Every clip of the split must have a plan in `synth` (else `TruthError` names the first that does not)."""
    size = int(store.meta["frames"]["size"])
    target = int(store.meta["fbank"]["target_length"])
    if size % _CELL_PX:
        raise TruthError(f"store frame size {size} is not a multiple of {_CELL_PX} px")
    cells = size // _CELL_PX
    from tgdp.pipeline.synth import plan_corpus

    plans = {p.clip_id: p for p in plan_corpus(synth)[1]}
    ids = list(store.clip_ids)
    missing = [c for c in ids if c not in plans]
    if missing:
        raise TruthError(
            f"{len(missing)} clip(s) of split {split!r} have no plan in this synth config, e.g. {missing[0]}"
        )
    n_t = int(store.meta["frames"]["n"])
    visual = np.zeros((len(ids), n_t, cells, cells, 2), np.uint8)
    audio = np.zeros((len(ids), target), np.uint8)
    for i, cid in enumerate(ids):
        visual[i], audio[i] = _clip_truth(plans[cid], store.row(i), size, cells, target)
    meta = {"format": TRUTH_FORMAT, "frame_size": size, "cells": cells, "num_frames": n_t, "target_length": target}
    meta["synth"] = synth.model_dump(mode="json")
    path = truth_path(store_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, clip_id=np.array(ids), visual=visual, audio=audio, meta=np.array(json.dumps(meta)))
    return path


class PatchTruth:
    """A loaded sidecar. `visual(rows, frames, grid)` / `audio(rows, starts, length, grid)` give per-patch label
    shares in the model's patch order; rows are store row indices of the split the sidecar was written for."""

    def __init__(self, path: str | Path, clip_ids: list[str] | None = None) -> None:
        with np.load(Path(path), allow_pickle=False) as z:
            self.meta = json.loads(str(z["meta"]))
            if self.meta.get("format") != TRUTH_FORMAT:
                raise TruthError(f"{path}: format {self.meta.get('format')!r}, expected {TRUTH_FORMAT!r}")
            ids = [str(c) for c in z["clip_id"]]
            self._visual = z["visual"]
            self._audio = z["audio"]
        if clip_ids is not None and ids != list(clip_ids):
            order = {c: k for k, c in enumerate(ids)}
            if any(c not in order for c in clip_ids):
                raise TruthError(f"{path} does not cover every clip of the store split")
            take = np.array([order[c] for c in clip_ids])
            self._visual, self._audio = self._visual[take], self._audio[take]

    @classmethod
    def find(cls, store_path: str | Path, split: str, clip_ids: list[str]) -> PatchTruth | None:
        """The sidecar of a split (`store_path` = STORE, or the split directory itself, as `Store.open` takes it),
        aligned to the split's `clip_ids`; None when the store has none."""
        store_path = Path(store_path)
        if (store_path / "index.json").is_file():
            store_path, split = store_path.parent, store_path.name
        path = truth_path(store_path, split)
        return cls(path, clip_ids) if path.is_file() else None

    def visual(self, rows: np.ndarray, frames: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """Shares float32 [B, gh·gw, 3] (object, decoy, background) per model patch (row-major, as `PatchEmbed`)."""
        cov = self._visual[np.asarray(rows), np.asarray(frames)].astype(np.float32) / 255.0  # [B, G, G, 2]
        b, g = cov.shape[0], cov.shape[1]
        gh, gw = grid
        if g % gh or g % gw:
            raise TruthError(f"truth grid {g}×{g} does not pool onto the model's {gh}×{gw} patches")
        pooled = cov.reshape(b, gh, g // gh, gw, g // gw, 2).mean(axis=(2, 4)).reshape(b, gh * gw, 2)
        return np.concatenate([pooled, 1.0 - pooled.sum(axis=-1, keepdims=True)], axis=-1)

    def audio(self, rows: np.ndarray, starts: np.ndarray, length: int, grid: tuple[int, int]) -> np.ndarray:
        """Shares float32 [B, gf·gt, 3] (note, distractor, quiet) per audio patch of the segments starting at fbank
        frame `starts` [B]; patch k = f·gt + t (freq-major, as the model's audio tokens); one label per time column."""
        gf, gt = grid
        if length % gt:
            raise TruthError(f"segment length {length} does not split into {gt} time patches")
        idx = np.asarray(starts)[:, None] + np.arange(length)[None, :]
        lab = self._audio[np.asarray(rows)[:, None], idx]  # [B, length]
        onehot = np.stack([lab == k for k in (1, 2, 0)], axis=-1).astype(np.float32)  # note, distractor, quiet
        cols = onehot.reshape(lab.shape[0], gt, length // gt, 3).mean(axis=2)  # [B, gt, 3]
        return np.tile(cols, (1, gf, 1))


def label_precision(
    shares: np.ndarray, keep: np.ndarray, prio: np.ndarray | None, labels: tuple[str, ...], prefix: str
) -> dict[str, np.ndarray]:
    """Per-clip precision of a selection: shares [B, N, L] (`PatchTruth` output), keep [B, k] kept positions, prio
    [B, N] (summing to 1) or None -> {sel_, rand_, att_}<prefix>_<label>: float arrays [B].

    sel = mean share of the label over the kept patches; rand = its mean over all patches, which is exactly the
    expected precision of a uniformly random k-subset; att = Σ_n prio_n · share_n, the priority mass on the label."""
    kept = np.take_along_axis(shares, keep[:, :, None], axis=1)  # [B, k, L]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(labels):
        out[f"sel_{prefix}_{name}"] = kept[..., j].mean(axis=1)
        out[f"rand_{prefix}_{name}"] = shares[..., j].mean(axis=1)
        if prio is not None:
            out[f"att_{prefix}_{name}"] = (prio * shares[..., j]).sum(axis=1)
    return out
