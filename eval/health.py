"""Held-out representation health of a checkpoint: the training run's health figures, on clips it never saw.

For each clip of a store split, one aligned pair (fbank segment and frame `frame_index`, default the middle frame)
goes through the unmasked student (`model.encode`) and, when the checkpoint has one, the EMA teacher. The figures
are `tgdp.model.health.health_metrics` over all clips, plus the held-out InfoNCE: the model's own contrastive loss
(its temperature and direction) over consecutive chunks of `batch_size` clips, averaged, next to its chance level
ln(batch_size). A model whose held-out InfoNCE stays at ln(B) has not learnt the correspondence, whatever its
training loss says.

With `grad_shares`, the training loss's terms are also computed on the first chunk of held-out clips (the model's
own training forward, masks drawn from a forked generator seeded with `seed`, so the caller's RNG is untouched) and
each weighted term's gradient norm on the shared encoder and its share are reported (`gnorm_*`, `gshare_*`,
`tgdp.model.health.term_grad_norms`): how much each term still pushes the encoder at this checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tgdp.eval.embed import eval_batches, eval_dataset
from tgdp.model.health import collapse_warnings, encoder_parameters, health_metrics, term_grad_norms
from tgdp.model.losses import contrastive_loss
from tgdp.train.data import check_geometry

__all__ = ["heldout_grad_shares", "heldout_infonce", "store_health"]


def heldout_infonce(
    g_a: torch.Tensor, g_v: torch.Tensor, batch_size: int, temperature: float, symmetric: bool
) -> tuple[float, int]:
    """Mean InfoNCE over consecutive chunks of `batch_size` rows of g_a, g_v [N, D]; returns (loss, chunk size).

    The remainder after the last full chunk is dropped; with fewer than `batch_size` rows one chunk of all N is used.
    """
    n = g_a.shape[0]
    b = min(batch_size, n)
    if b < 2:
        raise ValueError(f"held-out InfoNCE needs at least 2 clips, got {n}")
    losses = [
        float(contrastive_loss(g_a[s : s + b], g_v[s : s + b], temperature, symmetric)) for s in range(0, n - b + 1, b)
    ]
    return float(np.mean(losses)), b


def heldout_grad_shares(model: torch.nn.Module, audio: torch.Tensor, frames: torch.Tensor, seed: int = 0) -> dict:
    """Per-term gradient norms and shares (`term_grad_norms`) of `model`'s training loss on one batch
    (audio [B, T_seg, F], frames [B, 3, S, S]); masks come from a forked generator seeded with `seed`, and no
    `.grad` is written."""
    with torch.enable_grad(), torch.random.fork_rng(devices=[] if audio.device.type == "cpu" else [audio.device]):
        torch.manual_seed(seed)
        out = model(audio, frames, with_terms=True)
        terms = {k: v for k, v in out.items() if k.startswith("term_")}
        return term_grad_norms(terms, encoder_parameters(model.student))


@torch.no_grad()
def store_health(
    model: torch.nn.Module,
    store: Any,
    rows: Sequence[int] | None = None,
    frame_index: int = 8,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    with_teacher: bool = False,
    grad_shares: bool = False,
) -> dict[str, Any]:
    """Health figures of `model` (a `TgdpModel`) on store rows (all by default); see the module docstring."""
    cfg = model.cfg
    rows = list(range(len(store))) if rows is None else list(rows)
    if len(rows) < 2:
        raise ValueError(f"health needs at least 2 clips, the split has {len(rows)}")
    num_frames = check_geometry(store, cfg)["num_frames"]
    if not 0 <= frame_index < num_frames:
        raise ValueError(f"frame_index {frame_index} is outside the clips' {num_frames} frames")
    device = torch.device(device)
    model.eval()
    ds = eval_dataset(store, cfg, rows, frames=[frame_index])
    teacher = model.teacher if with_teacher else None
    parts: dict[str, list[torch.Tensor]] = {"g_a": [], "g_v": [], "t_a": [], "t_v": []}
    grads: dict[str, float] = {}
    for audio, frames in eval_batches(ds, batch_size, device, num_workers):  # one pair per clip
        if grad_shares and not grads:
            grads = heldout_grad_shares(model, audio, frames)
        g_a, g_v = model.encode(audio, frames)
        parts["g_a"].append(g_a.float().cpu())
        parts["g_v"].append(g_v.float().cpu())
        if teacher is not None:
            t_a, t_v, _, _ = teacher(audio, frames, cfg.priority_direction)
            parts["t_a"].append(t_a.float().cpu())
            parts["t_v"].append(t_v.float().cpu())
    g = {k: torch.cat(v) for k, v in parts.items() if v}
    nce, chunk = heldout_infonce(g["g_a"], g["g_v"], batch_size, cfg.contrastive_temperature, cfg.contrastive_symmetric)
    out: dict[str, Any] = {
        "clips": len(rows),
        "frame_index": frame_index,
        "heldout_nce": nce,
        "heldout_nce_chance": math.log(chunk),
        "nce_batch": chunk,
        "contrastive": "symmetric" if cfg.contrastive_symmetric else "v2a",
        **health_metrics(g["g_a"], g["g_v"], g.get("t_a"), g.get("t_v"), nce=nce, batch=chunk),
    }
    out.update(grads)
    out["collapse_warnings"] = collapse_warnings(out)
    return out
