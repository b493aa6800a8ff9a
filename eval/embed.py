"""Per-frame global-token embeddings of every clip of a store split, cached to an `EmbeddingTable`.

For clip i and each of its T (=16) frames t, the aligned pair (fbank segment `store.segment(i, t, T_seg)`, frame t)
goes through the unmasked student encoder in eval mode (`model.encode`; bf16 autocast on CUDA, fp32 on CPU) and
gives g_a[i, t], g_v[i, t] (final-normed global tokens, not L2-normalised). `features="pre_joint"` stores instead
the un-normed global tokens after the modality-specific blocks (the released CAV-MAE Sync probe input, docs/EVAL.md).

Checkpoints: a tgdp training checkpoint (a dict with `model` = student state dict and `config` = resolved RunConfig
with `model_preset` + `model` overrides), or a released CAV-MAE Sync / TG-DP state dict (raw, `module.` keys, or
wrapped in `{"model": ...}`) loaded strictly into `preset` (default `cavmae_sync_base`).
Samples come from the training dataset in its deterministic eval mode (`tgdp.train.data.ClipDataset`, mode
"eval": decode_jpeg → resize/centre-crop to the model's img_size → ImageNet mean/std, no crop or augmentation; the
fbank normalised with the store's constants), normalised in the DataLoader workers so that the values are those of
the per-sample float32 path on any device; `check_geometry` checks the store against the model first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from tgdp.config import ConfigError
from tgdp.eval.table import EmbeddingTable
from tgdp.model.checkpoint import CheckpointError
from tgdp.train.data import ClipDataset, batch_to_device, check_geometry, fbank_stats

__all__ = [
    "embed_store",
    "eval_batches",
    "eval_dataset",
    "load_encoder",
    "load_teacher_state",
    "model_config_from_checkpoint",
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
                f"{path} is a tgdp checkpoint with its own model config; the preset key applies to released state "
                "dicts only: drop --set preset=..."
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


def eval_dataset(
    store: Any, cfg: Any, rows: Sequence[int] | None = None, frames: Sequence[int] | None = None
) -> ClipDataset:
    """The deterministic dataset evaluation reads: sample k = store row rows[k] (default every row) with frames
    `frames` of the clip (default all), for a model of `cfg` (its ModelConfig); normalised in the worker."""
    return ClipDataset(
        store=store,
        audio_length=cfg.audio_length,
        img_size=cfg.img_size,
        mode="eval",
        rows=rows,
        frames=frames,
        normalize_in_worker=True,
    )


def eval_batches(
    ds: ClipDataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(audio [B*T, T_seg, F], frames [B*T, 3, S, S]) float32 on `device`, clip-major, for B clips of `ds` at a time
    in order; T = len(ds.eval_frames)."""
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    stats = fbank_stats(ds.store.meta)
    for batch in loader:
        audio, frames = batch_to_device(batch, device, stats)
        yield audio.flatten(0, 1), frames.flatten(0, 1)


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
    check_geometry(store, cfg)
    rows = list(range(len(store))) if rows is None else list(rows)
    ds = eval_dataset(store, cfg, rows, frames)
    num_frames = len(ds.eval_frames)  # checks the frame indices
    if not rows:
        raise ValueError("no clips to embed")
    device = torch.device(device)
    model.eval()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    emb_a = emb_v = None
    done, t0 = 0, time.perf_counter()
    for audio, frames in eval_batches(ds, batch_size, device, num_workers):
        b = audio.shape[0] // num_frames
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
