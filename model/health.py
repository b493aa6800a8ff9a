"""Representation health of the global tokens: is the embedding still a function of the input?

Figures per modality m ∈ {a, v}, over a batch of global tokens g_m [B, D] (L2-normalised here):
- `{m}_std`: mean over dimensions of the per-dimension std over the batch. 0 when every clip maps to the same
  vector; ≈ 1/√D for isotropic unit vectors. `{m}_std_iso` = `{m}_std`·√D puts it on a 0..≈1 scale.
- `{m}_cos`: mean pairwise cosine between different clips (1 = collapsed onto one direction).
- `{m}_erank`: effective rank exp(H(p)), p = singular values of the [B, D] matrix of unit vectors normalised to sum 1
  (RankMe, Garrido et al. 2023); 1 = rank-one (collapsed), up to min(B, D).
- `{m}_ts_cos`: mean cosine between each clip's student and teacher token (only with a teacher).
- `nce_ratio`: InfoNCE / ln(B) of the contrastive term (1 = chance; only when the loss and B are given).

`collapse_warnings` applies the documented rules (docs/MODEL.md, "Representation health") to such a dict.

Gradient shares (`term_grad_norms`): the norm of each weighted loss term's gradient on the student's shared encoder
(`encoder_parameters`: the trainable tensors of the parts the EMA teacher copies, i.e. everything but the decoder,
the fused-pass norm and the mask token), each from its own `torch.autograd.grad` call (no `.grad` is touched), and
its share of their sum: `gnorm_{rec,contra,dis}`, `gshare_{rec,contra,dis}`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tgdp.model.cavmae_sync import TEACHER_PARTS

__all__ = [
    "COLLAPSE_RULES",
    "GRAD_TERMS",
    "collapse_warnings",
    "effective_rank",
    "encoder_parameters",
    "health_metrics",
    "pairwise_cosine",
    "term_grad_norms",
]

GRAD_TERMS = ("rec", "contra", "dis")  # `TgdpModel.forward(with_terms=True)` returns them as term_<name>

# (figure suffix, comparison, threshold, meaning). A rule fires for a modality when its figure crosses it.
COLLAPSE_RULES: tuple[tuple[str, str, float, str], ...] = (
    ("cos", ">", 0.995, "mean pairwise cosine above 0.995: the global token barely depends on the input"),
    ("std_iso", "<", 0.06, "per-dimension std below 0.06/√D: the batch sits on (almost) one point"),
    ("erank", "<", 1.5, "effective rank below 1.5: the batch spans (almost) one direction"),
)


def pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine over ordered pairs i ≠ j of the rows of x [B, D] (B ≥ 2)."""
    u = F.normalize(x.float(), dim=-1)
    b = u.shape[0]
    if b < 2:
        return float("nan")
    s = u.sum(dim=0)
    # Σ_{i≠j} u_i·u_j = |Σ u_i|² − Σ |u_i|²  (= |s|² − B for unit rows): O(B·D) instead of a B×B matrix
    return float((s.dot(s) - (u * u).sum()) / (b * (b - 1)))


def effective_rank(x: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(entropy) of the normalised singular values of the L2-normalised rows of x [B, D]."""
    u = F.normalize(x.float(), dim=-1)
    s = torch.linalg.svdvals(u.double())
    p = s / s.sum().clamp_min(eps)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _modality(prefix: str, g: torch.Tensor, t: torch.Tensor | None) -> dict[str, float]:
    u = F.normalize(g.detach().float(), dim=-1)
    d = u.shape[-1]
    std = float(u.std(dim=0, unbiased=False).mean()) if u.shape[0] > 1 else float("nan")
    out = {
        f"{prefix}_std": std,
        f"{prefix}_std_iso": std * math.sqrt(d),
        f"{prefix}_cos": pairwise_cosine(u),
        f"{prefix}_erank": effective_rank(u),
    }
    if t is not None:
        out[f"{prefix}_ts_cos"] = float(F.cosine_similarity(g.detach().float(), t.detach().float(), dim=-1).mean())
    return out


@torch.no_grad()
def health_metrics(
    g_a: torch.Tensor,
    g_v: torch.Tensor,
    t_a: torch.Tensor | None = None,
    t_v: torch.Tensor | None = None,
    nce: float | None = None,
    batch: int | None = None,
) -> dict[str, float]:
    """Health figures of student global tokens g_a, g_v [B, D] (teacher tokens t_* [B, D] optional).

    nce / batch: the InfoNCE value and the number of candidates per query it was computed over (gives `nce_ratio`).
    """
    out = {**_modality("a", g_a, t_a), **_modality("v", g_v, t_v)}
    if nce is not None and batch is not None and batch > 1:
        out["nce_ratio"] = float(nce) / math.log(batch)
    return out


def collapse_warnings(h: dict[str, float]) -> list[str]:
    """One message per (modality, rule) of `COLLAPSE_RULES` that fires on the health dict `h`."""
    fired = []
    for m, name in (("a", "audio"), ("v", "visual")):
        for suffix, op, thr, meaning in COLLAPSE_RULES:
            val = h.get(f"{m}_{suffix}")
            if val is None or not math.isfinite(val):
                continue
            if (op == ">" and val > thr) or (op == "<" and val < thr):
                fired.append(f"{name} {m}_{suffix}={val:.3f}: {meaning}")
    return fired


def encoder_parameters(student: nn.Module) -> list[nn.Parameter]:
    """The student's shared encoder: trainable parameters of the `TEACHER_PARTS` (all three losses reach them)."""
    return [p for n, p in student.named_parameters() if n.split(".")[0] in TEACHER_PARTS and p.requires_grad]


def term_grad_norms(terms: dict[str, torch.Tensor], params: list[nn.Parameter], scale: float = 1.0) -> dict[str, float]:
    """Per-term gradient norms on `params` and their shares: {gnorm_<t>, gshare_<t>} for t in `GRAD_TERMS`.

    terms: `term_<t>` 0-dim tensors still in the graph (weighted as they enter the loss); a missing term, or one
    without a graph (a zero λ), has norm 0. Each norm comes from its own `autograd.grad(retain_graph=True)`, so
    the caller's backward afterwards is unchanged. `scale` multiplies each term first and divides the norm after
    (a GradScaler's scale, so fp16 gradients do not underflow). Shares are norm / sum of the norms (NaN when all 0).
    """
    norms: dict[str, float] = {}
    for t in GRAD_TERMS:
        term = terms.get(f"term_{t}")
        if term is None or not term.requires_grad or not float(term.detach()) != 0.0:
            norms[t] = 0.0
            continue
        grads = torch.autograd.grad(term * scale, params, retain_graph=True, allow_unused=True)
        per_tensor = [g.detach().float().norm() for g in grads if g is not None]
        norms[t] = float(torch.stack(per_tensor).norm()) / scale if per_tensor else 0.0
    total = sum(norms.values())
    out = {f"gnorm_{t}": v for t, v in norms.items()}
    out.update({f"gshare_{t}": (v / total if total > 0 else float("nan")) for t, v in norms.items()})
    return out
