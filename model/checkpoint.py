"""Checkpoint loading: the released CAV-MAE Sync / TG-DP state dict (strict) and the ImageNet-MAE ViT-B init.

Files are read with `torch.load(weights_only=True)` only. Every load compares keys and shapes first and returns a
`KeyReport`; anything missing, unexpected or mis-shaped raises `CheckpointError` unless the caller lists it as
allowed (regular expressions), so a partial load never happens silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tgdp.core.errors import TgdpError

__all__ = [
    "MAE_INIT_ALLOWED_MISSING",
    "CheckpointError",
    "KeyReport",
    "adapt_mae_imagenet",
    "compare_keys",
    "load_mae_imagenet",
    "load_released",
    "read_state_dict",
    "strip_prefix",
]

# Student tensors the ImageNet MAE cannot provide: fixed sin-cos positions (recomputed), modality embeddings,
# registers (randn, as released), and the never-used modality norm sets of the modality/decoder blocks.
MAE_INIT_ALLOWED_MISSING = (
    r"pos_embed_[av]",
    r"decoder_pos_embed_[av]",
    r"modality_[av]",
    r"decoder_modality_[av]",
    r"register_tokens",
    r"blocks_[av]\.\d+\.norm[12]_[av]\.(weight|bias)",
    r"decoder_blocks\.\d+\.norm[12]_[av]\.(weight|bias)",
)


class CheckpointError(TgdpError, RuntimeError):
    """A checkpoint that cannot be used: a state dict that does not fit the model (the message carries the key
    report), no readable training checkpoint, or a config that differs from the run's (raised by tgdp.train too)."""


@dataclass
class KeyReport:
    """Key comparison of a state dict against a module."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    allowed_missing: list[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def __str__(self) -> str:
        def head(items: list, n: int = 8) -> str:
            return ", ".join(map(str, items[:n])) + (f", … (+{len(items) - n})" if len(items) > n else "")

        parts = [f"loaded {self.loaded} tensors"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {head(self.unexpected)}")
        if self.shape_mismatch:
            parts.append(
                f"shape mismatch {len(self.shape_mismatch)}: "
                + head([f"{k} ckpt {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatch])
            )
        if self.allowed_missing:
            parts.append(f"allowed missing {len(self.allowed_missing)}")
        return "; ".join(parts)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop `prefix` from every key that has it (DataParallel/DDP checkpoints)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def read_state_dict(source: Mapping[str, torch.Tensor] | str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a mapping or a file (torch.load weights_only=True; a `{"model": sd}` wrapper is opened)."""
    if isinstance(source, (str, Path)):
        obj = torch.load(Path(source), map_location="cpu", weights_only=True)
    else:
        obj = source
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def _student(model: nn.Module) -> nn.Module:
    return getattr(model, "student", model)


def compare_keys(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], allow_missing: Iterable[str] = ()
) -> KeyReport:
    """Compare `state_dict` with `module.state_dict()` (keys and shapes); missing keys matching any regex in
    `allow_missing` are listed separately and do not make the report fail."""
    own = module.state_dict()
    patterns = [re.compile(p) for p in allow_missing]
    report = KeyReport()
    for key in own:
        if key not in state_dict:
            (report.allowed_missing if any(p.fullmatch(key) for p in patterns) else report.missing).append(key)
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
    return report


def _load(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], allow_missing: Iterable[str], strict: bool
) -> KeyReport:
    student = _student(model)
    report = compare_keys(student, state_dict, allow_missing)
    if strict and not report.ok:
        raise CheckpointError(f"refusing a partial load: {report}")
    bad = {k for k, _, _ in report.shape_mismatch} | set(report.unexpected)
    loadable = {k: v for k, v in state_dict.items() if k not in bad}
    student.load_state_dict(loadable, strict=False)
    report.loaded = len(loadable)
    if hasattr(model, "reset_teacher"):
        model.reset_teacher()
    return report


def load_released(
    model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | Path, strict: bool = True
) -> KeyReport:
    """Load a released CAV-MAE Sync / TG-DP checkpoint (keys prefixed `module.`, or not) into the student of a
    `TgdpModel` (or a `CavMaeSync`); the teacher, if any, is reset to the loaded student.

    strict=True (default) raises `CheckpointError` on any missing, unexpected or mis-shaped key; strict=False loads
    what fits and returns the report for the caller to inspect.
    """
    sd = strip_prefix(read_state_dict(state_dict_or_path))
    return _load(model, sd, (), strict)


def adapt_mae_imagenet(
    state_dict: Mapping[str, torch.Tensor], modality_depth: int | None = None
) -> dict[str, torch.Tensor]:
    """Map an ImageNet MAE ViT (timm/MAE names: `blocks.i.*`, `norm`, `patch_embed.proj`, `cls_token`, `decoder_*`)
    to CAV-MAE Sync names, as CAV-MAE's `adapt_vmae_weights.py` does (docs/MODEL.md, init):

    - blocks 0..modality_depth-1 → `blocks_a.i` and `blocks_v.i`; the remaining blocks → `blocks_u.j`, with MAE
      norm1/norm2 copied into all three norm sets;
    - `norm` → `norm`, `norm_a`, `norm_v`; `cls_token` → `cls_token_a`, `cls_token_v`;
    - `patch_embed_v` = the RGB conv; `patch_embed_a` = that conv summed over RGB (1 input channel);
    - decoder copied (`decoder_embed`, `decoder_blocks`, `decoder_norm`, `mask_token`); `decoder_pred_v` =
      `decoder_pred`, `decoder_pred_a` = its first p² rows;
    - `pos_embed` / `decoder_pos_embed` are dropped (the model's sin-cos tables are fixed and grid-specific).
    `modality_depth` defaults to (number of MAE blocks − 1).
    """
    sd = strip_prefix(read_state_dict(state_dict))
    block_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not block_ids:
        raise CheckpointError("no `blocks.<i>.` keys: not a ViT/MAE state dict")
    depth = modality_depth if modality_depth is not None else len(block_ids) - 1
    if not 0 < depth < len(block_ids):
        raise CheckpointError(f"modality_depth={depth} must leave at least one joint block of {len(block_ids)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            if i < depth:
                out[f"blocks_a.{i}.{rest}"] = value.clone()
                out[f"blocks_v.{i}.{rest}"] = value.clone()
            else:
                j = i - depth
                out[f"blocks_u.{j}.{rest}"] = value.clone()
                nm = re.match(r"(norm[12])\.(weight|bias)$", rest)
                if nm:
                    for suffix in ("_a", "_v"):
                        out[f"blocks_u.{j}.{nm.group(1)}{suffix}.{nm.group(2)}"] = value.clone()
        elif key.startswith(("decoder_blocks.", "decoder_embed.", "decoder_norm.")) or key == "mask_token":
            out[key] = value.clone()
    for part in ("weight", "bias"):
        if f"norm.{part}" in sd:
            for name in ("norm", "norm_a", "norm_v"):
                out[f"{name}.{part}"] = sd[f"norm.{part}"].clone()
    if "cls_token" in sd:
        out["cls_token_a"] = sd["cls_token"].clone()
        out["cls_token_v"] = sd["cls_token"].clone()
    if "patch_embed.proj.weight" in sd:
        w = sd["patch_embed.proj.weight"]
        out["patch_embed_v.proj.weight"] = w.clone()
        out["patch_embed_a.proj.weight"] = w.sum(dim=1, keepdim=True)
        out["patch_embed_v.proj.bias"] = sd["patch_embed.proj.bias"].clone()
        out["patch_embed_a.proj.bias"] = sd["patch_embed.proj.bias"].clone()
    if "decoder_pred.weight" in sd:
        w, b = sd["decoder_pred.weight"], sd["decoder_pred.bias"]
        p2 = w.shape[0] // 3
        out["decoder_pred_v.weight"], out["decoder_pred_v.bias"] = w.clone(), b.clone()
        out["decoder_pred_a.weight"], out["decoder_pred_a.bias"] = w[:p2].clone(), b[:p2].clone()
    return out


def load_mae_imagenet(model: nn.Module, state_dict_or_path: Mapping[str, torch.Tensor] | str | Path) -> KeyReport:
    """Initialise the student from an ImageNet MAE checkpoint via `adapt_mae_imagenet`; only the tensors in
    `MAE_INIT_ALLOWED_MISSING` may be absent, anything else missing/unexpected/mis-shaped raises."""
    depth = getattr(getattr(model, "cfg", None), "modality_depth", None)
    adapted = adapt_mae_imagenet(read_state_dict(state_dict_or_path), depth)
    return _load(model, adapted, MAE_INIT_ALLOWED_MISSING, strict=True)
