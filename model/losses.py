"""Loss terms: masked-patch MSE (MAE), InfoNCE on global tokens (single/symmetric, local/gathered), distillation."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["contrastive_loss", "distillation_loss", "mae_loss"]


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """pred, target: [B, N, P]; mask: [B, N] (1 = masked). Per-patch MSE averaged over masked patches only.

    With `norm_pix` the target is standardised per patch ((t - mean) / sqrt(var + 1e-6), unbiased var as MAE).
    """
    pred = pred.float()
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def _gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather [B, D] across ranks keeping the autograd path; returns ([W·B, D], rank)."""
    # functional collectives: autograd-aware (backward = reduce-scatter of the gathered gradient, summed), the
    # supported successor of the deprecated torch.distributed.nn.functional.all_gather.
    from torch.distributed._functional_collectives import all_gather_single_autograd

    gathered = all_gather_single_autograd(x.contiguous(), gather_dim=0, group=dist.group.WORLD)
    return gathered.wait() if hasattr(gathered, "wait") else gathered, dist.get_rank()


def contrastive_loss(
    g_a: torch.Tensor,
    g_v: torch.Tensor,
    temperature: float = 0.05,
    symmetric: bool = False,
    gather: bool = False,
) -> torch.Tensor:
    """InfoNCE between global tokens g_a, g_v: [B, D] (L2-normalised here; cosine / temperature, in fp32).

    - single (released CAV-MAE Sync): -mean diag log_softmax(a·vᵀ, dim=0) = CE(v→a), each video against all audios.
    - symmetric (TG-DP all-gather path): 0.5·(CE(a→v) + CE(v→a)).
    - gather: negatives from every rank (differentiable all_gather) when torch.distributed is initialised with
      world size > 1; local queries are scored against the global batch with labels offset by rank.
    """
    a = F.normalize(g_a.float(), dim=-1)
    v = F.normalize(g_v.float(), dim=-1)
    b = a.shape[0]
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        all_a, rank = _gather_with_grad(a)
        all_v, _ = _gather_with_grad(v)
        labels = torch.arange(b, device=a.device) + rank * b
    else:
        all_a, all_v = a, v
        labels = torch.arange(b, device=a.device)
    loss_v2a = F.cross_entropy(v @ all_a.t() / temperature, labels)
    if not symmetric:
        return loss_v2a
    loss_a2v = F.cross_entropy(a @ all_v.t() / temperature, labels)
    return 0.5 * (loss_a2v + loss_v2a)


def distillation_loss(
    g_a: torch.Tensor,
    g_v: torch.Tensor,
    t_a: torch.Tensor,
    t_v: torch.Tensor,
    reduction: str = "mean",
    target: str = "raw",
) -> torch.Tensor:
    """Student-to-teacher distillation of the global tokens, summed over the two modalities.

    g_*: student global tokens [B, D] (final-normed); t_*: teacher global tokens [B, D] (detached here).
    - reduction "sum": Eq. 6 of the paper, ‖g − ĝ‖²₂ summed over the D dims, averaged over the batch;
      "mean": F.mse_loss, i.e. also averaged over dims (= "sum" / D).
    - target "raw": the tokens as they are; "l2norm": both L2-normalised first, so with "sum" each sample
      contributes 2 − 2·cos(g, ĝ) ∈ [0, 4], whatever the tokens' scale.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if target not in ("raw", "l2norm"):
        raise ValueError(f"target must be 'raw' or 'l2norm', got {target!r}")

    def term(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g, t = g.float(), t.detach().float()
        if target == "l2norm":
            g, t = F.normalize(g, dim=-1), F.normalize(t, dim=-1)
        if reduction == "mean":
            return F.mse_loss(g, t)
        return (g - t).pow(2).sum(dim=-1).mean()

    return term(g_v, t_v) + term(g_a, t_a)
