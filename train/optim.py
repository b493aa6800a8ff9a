"""Optimiser and learning-rate schedule (docs/TRAINING.md: Adam, betas 0.95/0.999, wd 5e-7; warmup + cosine).

Design: the schedule is a pure function of the optimiser step (`lr_at`), so a resumed run needs no scheduler state;
the loop writes it into every param group before each step. Every trainable parameter gets the same weight decay, as
the released recipe (Adam's L2 on everything); `optim.exclude_no_decay` exempts the model's token-like parameters
(`TgdpModel.no_weight_decay()`); AdamW is offered as an option.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from tgdp.train.config import OptimConfig

__all__ = ["build_optimizer", "lr_at", "set_lr"]


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr_ratio: float) -> float:
    """LR for optimiser step `step` (0-based): linear warmup to `base_lr`, then cosine to `min_lr_ratio*base_lr`."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    min_lr = base_lr * min_lr_ratio
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig, no_decay: Iterable[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """Adam (the recipe) or AdamW over the trainable `params` (`cfg.fused`: torch's fused implementation).

    With `cfg.exclude_no_decay`, the tensors in `no_decay` form a second group with weight_decay 0."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    groups: list[Any] = params
    skip = {id(p) for p in no_decay} if cfg.exclude_no_decay else set()
    if skip:
        decay = [p for p in params if id(p) not in skip]
        groups = [{"params": decay}, {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0}]
    # fused=None leaves torch's default (foreach on CUDA); True asks for the fused kernels (CUDA, or CPU in torch>=2.4).
    return cls(
        groups,
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=True if cfg.fused else None,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
