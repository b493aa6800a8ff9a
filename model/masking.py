"""Token selection: random masking (MAE), teacher-guided top-k ("distinct") and Gumbel top-k ("probabilistic").

Every strategy produces `ids_shuffle` [B, N]: a per-sample permutation of patch positions whose first k entries
are kept. `gather_visible` then returns the kept tokens plus the MAE bookkeeping (binary mask, ids_restore).
Priorities are indexed by the ORIGINAL patch position (k = f·W + t for audio), so kept ids map straight back.
"""

from __future__ import annotations

import torch

__all__ = [
    "gather_visible",
    "guided_order",
    "priority_order",
    "random_order",
]


def random_order(
    batch: int, n: int, device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B, N] permutation by ascending uniform noise (MAE/CAV-MAE `random_masking_unstructured`)."""
    noise = torch.rand(batch, n, device=device, generator=generator)
    return torch.argsort(noise, dim=1)


def priority_order(priority: torch.Tensor) -> torch.Tensor:
    """priority: [B, N] -> [B, N] positions by descending priority ("distinct": keep the top-k)."""
    return torch.argsort(priority, dim=1, descending=True)


def guided_order(
    priority: torch.Tensor, strategy: str, tau: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """priority: [B, N] (non-negative, per-sample normalised) -> ordering [B, N] for `strategy`.

    - "distinct": descending priority (deterministic top-k).
    - "probabilistic": Gumbel top-k on log(priority)/tau, i.e. k draws without replacement with probabilities
      ∝ priority^(1/tau); tau → 0 recovers "distinct", large tau approaches random.
    - "random": ignores the priority.
    """
    if strategy == "distinct":
        return priority_order(priority)
    if strategy == "random":
        return random_order(priority.shape[0], priority.shape[1], priority.device, generator)
    if strategy == "probabilistic":
        logp = priority.float().clamp_min(torch.finfo(torch.float32).tiny).log()
        u = torch.rand(priority.shape, device=priority.device, generator=generator)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        return torch.argsort(logp / tau + gumbel, dim=1, descending=True)
    raise ValueError(f"unknown masking strategy {strategy!r}")


def gather_visible(
    x: torch.Tensor, ids_shuffle: torch.Tensor, keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the first `keep` positions of `ids_shuffle`.

    x: [B, N, D], ids_shuffle: [B, N] -> (x_vis [B, keep, D], mask [B, N] with 1 = masked (original order),
    ids_restore [B, N] so that cat(x_vis, mask_tokens) gathered by ids_restore is back in original order).
    """
    b, n, d = x.shape
    if not 0 < keep <= n:
        raise ValueError(f"keep must be in [1, {n}], got {keep}")
    ids_keep = ids_shuffle[:, :keep]
    x_vis = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, n, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_vis, mask, ids_restore
