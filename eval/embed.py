"""Per-frame global-token embeddings of every clip of a store split, cached to an `EmbeddingTable`.

For clip i and each of its T (=16) frames t, the aligned pair (fbank segment `store.segment(i, t, T_seg)`, frame t)
goes through the unmasked student encoder in eval mode (`model.encode`; bf16 autocast on CUDA, fp32 on CPU) and
gives g_a[i, t], g_v[i, t] (final-normed global tokens, not L2-normalised). `features="pre_joint"` stores instead
the un-normed global tokens after the modality-specific blocks (the released CAV-MAE Sync probe input, docs/EVAL.md).

Checkpoints: a tgdp training checkpoint (a dict with `model` = student state dict and `config` = resolved RunConfig
with `model_preset` + `model` overrides), or a released CAV-MAE Sync / TG-DP state dict (raw, `module.` keys, or
wrapped in `{"model": ...}`) loaded strictly into `preset` (default `cavmae_sync_base`).
Frame preprocessing is the training loader's (`tgdp.train.transforms`: decode_jpeg → resize/centre-crop to the
model's img_size → ImageNet mean/std); the fbank is normalised with the store's constants.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tgdp.config import ConfigError
from tgdp.eval.retrieval import MissingClipsWarning
from tgdp.eval.table import EmbeddingTable, video_id_from_clip_id
from tgdp.model.checkpoint import CheckpointError
from tgdp.store import StoreMismatchError

__all__ = [
    "EmbedDataset",
    "check_geometry",
    "embed_store",
    "load_encoder",
    "load_teacher_state",
    "model_config_from_checkpoint",
    "select_clips",
]

_log = logging.getLogger(__name__)

Features = Literal["global", "pre_joint"]


def model_config_from_checkpoint(config: dict[str, Any]) -> Any:
    """`ModelConfig` of a training checkpoint's resolved RunConfig dict (`model_preset` + `model` overrides)."""
    from tgdp.model.presets import resolve_model_config

    return resolve_model_config(config.get("model_preset"), config.get("model") or {})


def load_teacher_state(model: torch.nn.Module, obj: Any) -> bool:
    """Load a loaded tgdp checkpoint's EMA teacher (`obj["teacher"]`) into `model.teacher`; False when either side
    has none. Call it after the student is loaded (`load_released` resets the teacher to the student)."""
    teacher = getattr(model, "teacher", None)
    state = obj.get("teacher") if isinstance(obj, dict) else None
    if teacher is None or not state:
        return False
    teacher.load_state_dict(state)
    return True


def load_encoder(
    checkpoint: str | Path, preset: str | None = None, device: str | torch.device = "cpu", with_teacher: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model of `checkpoint` and load its student weights strictly. Returns (model in eval mode, info).

    preset: only for released state dicts (they carry no config); default `cavmae_sync_base`.
    with_teacher: also load the checkpoint's EMA teacher (`info["teacher_loaded"]` says whether there was one)."""
    from tgdp.model import PRESETS, build_model
    from tgdp.model.checkpoint import load_released

    path = Path(checkpoint)
    name = preset or "cavmae_sync_base"
    if name not in PRESETS:  # before the (possibly large) file is read
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # a missing or unreadable file: the CLIs name it with the fix
    except Exception as exc:  # torn zip, truncated pickle, not a torch file: all mean "unusable"
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and isinstance(obj.get("model"), dict):
        if preset is not None:
            raise ConfigError(
                f"{path} is a tgdp checkpoint with its own model config; --preset applies to released state dicts "
                "only: drop --preset"
            )
        cfg = model_config_from_checkpoint(obj["config"])
        kind, name, state = "tgdp", obj["config"].get("model_preset"), obj["model"]
    else:
        cfg, kind, state = PRESETS[name], "released", obj
    model = build_model(cfg)
    report = load_released(model, state, strict=True)
    teacher_loaded = with_teacher and load_teacher_state(model, obj)
    model.to(device).eval()
    info = {
        "checkpoint": str(path),
        "checkpoint_kind": kind,
        "model_preset": name,
        "model_config": cfg.model_dump(mode="json"),
        "load_report": str(report),
        "step": int(obj["step"]) if isinstance(obj, dict) and "step" in obj else None,
        "teacher_loaded": teacher_loaded,
    }
    return model, info


def select_clips(store: Any, ids: Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Store rows of the listed clip ids / CAV-MAE video ids (all rows when ids is None), and the missing ids."""
    clip_ids = list(store.clip_ids)
    if ids is None:
        return list(range(len(clip_ids))), []
    by_clip = {c: i for i, c in enumerate(clip_ids)}
    by_video: dict[str, int] = {}
    for i, c in enumerate(clip_ids):
        by_video.setdefault(video_id_from_clip_id(c), i)
    rows, missing, seen = [], [], set()
    for item in ids:
        i = by_clip.get(item, by_video.get(item))
        if i is None:
            missing.append(item)
        elif i not in seen:
            seen.add(i)
            rows.append(i)
    if missing:
        msg = f"{len(missing)} of {len(ids)} listed clips are not in the store (e.g. {missing[:3]})"
        warnings.warn(msg, MissingClipsWarning, stacklevel=2)
        _log.warning(msg)
    return rows, missing


class EmbedDataset(Dataset):
    """Row k → (audio [T, T_seg, F] float32, frames [T, 3, S, S] float32) of store row rows[k]; T = len(frames)
    (default: all num_frames of the clip)."""

    def __init__(
        self,
        store: Any,
        rows: Sequence[int],
        audio_length: int,
        img_size: int,
        num_frames: int,
        frames: Sequence[int] | None = None,
    ) -> None:
        from tgdp.train.transforms import FrameTransform

        self.store, self.rows = store, list(rows)
        self.audio_length, self.num_frames = audio_length, num_frames
        self.frames = list(range(num_frames)) if frames is None else list(frames)
        self.frame_tf = FrameTransform(img_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        from tgdp.train.transforms import decode_frame

        i = self.rows[k]
        audio = np.stack([self.store.segment(i, t, length=self.audio_length) for t in self.frames])
        frames = [self.frame_tf(decode_frame(self.store.frame_jpeg(i, t))) for t in self.frames]
        return torch.from_numpy(np.ascontiguousarray(audio, np.float32)), torch.stack(frames)


def check_geometry(store: Any, cfg: Any) -> int:
    """Check a store against a model config (mel bins, fbank length, frames); returns frames per clip."""
    fb, fr = store.meta.get("fbank", {}), store.meta.get("frames", {})
    problems = []
    if fb.get("num_mel_bins") and fb["num_mel_bins"] != cfg.num_mel_bins:
        problems.append(
            f"store has {fb['num_mel_bins']} mel bins, the model expects {cfg.num_mel_bins}: embed a store built with "
            f"--set features.num_mel_bins={cfg.num_mel_bins} (tgdp-data validate and shard), or a checkpoint of a "
            f"{fb['num_mel_bins']}-bin model"
        )
    if fb.get("target_length") and fb["target_length"] < cfg.audio_length:
        problems.append(f"stored fbank ({fb['target_length']} frames) is shorter than audio_length {cfg.audio_length}")
    num_frames = int(fr.get("n") or 0)
    if num_frames < 1:
        problems.append("store metadata has no frames.n")
    if problems:
        raise StoreMismatchError("store does not fit the model: " + "; ".join(problems))
    return num_frames


@torch.no_grad()
def embed_store(
    model: torch.nn.Module,
    store: Any,
    rows: Sequence[int] | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    features: Features = "global",
    cfg: Any = None,
    progress: bool = False,
    frames: Sequence[int] | None = None,
) -> EmbeddingTable:
    """Embed store rows (all by default). batch_size counts clips (each is T model inputs). Returns float32 arrays.

    frames: the frame indices to embed per clip (default all; T = len(frames)), e.g. every other frame.

    model: anything with `encode(audio [B, T_seg, F], frames [B, 3, H, W]) -> (g_a [B, D], g_v [B, D])` (and
    `encode_tokens` for pre_joint); cfg: its ModelConfig (default `model.cfg`)."""
    cfg = cfg if cfg is not None else model.cfg
    if features not in ("global", "pre_joint"):
        raise ValueError(f"features must be 'global' or 'pre_joint', got {features!r}")
    num_frames = check_geometry(store, cfg)
    if frames is not None:
        frames = list(frames)
        if not frames or any(not 0 <= t < num_frames for t in frames):
            raise ValueError(f"frames must be a non-empty list of indices in [0, {num_frames}), got {frames}")
    rows = list(range(len(store))) if rows is None else list(rows)
    if not rows:
        raise ValueError("no clips to embed")
    device = torch.device(device)
    model.eval()
    ds = EmbedDataset(store, rows, cfg.audio_length, cfg.img_size, num_frames, frames)
    num_frames = len(ds.frames)
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    emb_a = emb_v = None
    done, t0 = 0, time.perf_counter()
    for audio, frames in loader:
        b = audio.shape[0]
        audio = audio.flatten(0, 1).to(device, non_blocking=True)
        frames = frames.flatten(0, 1).to(device, non_blocking=True)
        with amp:
            if features == "global":
                g_a, g_v = model.encode(audio, frames)
            else:
                tok = model.encode_tokens(audio, frames)
                g_a, g_v = tok["pre_joint_a"], tok["pre_joint_v"]
        g_a = g_a.float().reshape(b, num_frames, -1).cpu().numpy()
        g_v = g_v.float().reshape(b, num_frames, -1).cpu().numpy()
        if emb_a is None:
            emb_a = np.empty((len(rows), num_frames, g_a.shape[-1]), np.float32)
            emb_v = np.empty_like(emb_a)
        emb_a[done : done + b], emb_v[done : done + b] = g_a, g_v
        done += b
        if progress:
            _log.info("embedded %d/%d clips (%.1f clips/s)", done, len(rows), done / (time.perf_counter() - t0))
    assert emb_a is not None and emb_v is not None
    if not (np.isfinite(emb_a).all() and np.isfinite(emb_v).all()):
        raise FloatingPointError("the encoder produced non-finite embeddings")
    clip_ids = list(store.clip_ids)
    return EmbeddingTable(
        clip_ids=[clip_ids[i] for i in rows],
        emb_a=emb_a,
        emb_v=emb_v,
        labels=[list(store.labels(i)) for i in rows],
        meta={
            "features": features,
            "precision": "bf16" if device.type == "cuda" else "fp32",
            "clips_per_s": len(rows) / (time.perf_counter() - t0),
        },
    )
