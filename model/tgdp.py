"""TG-DP: a CAV-MAE Sync student trained with two passes and an EMA teacher that picks the contrastive tokens.

Per step (`TgdpModel.forward`), with `dual_pass=True`:
1. teacher (no grad, full unmasked input in original patch order) → ĝ_a, ĝ_v and patch priorities from the
   attention between the global token and each patch in its last joint block (fp32, mean over heads);
2. reconstruction pass: random masks at mask_ratio_a/v → fused joint pass → decoder → L_rec = L_mae_a + L_mae_v;
3. contrastive pass (same student weights): keep k = int(N·(1-ρ_c)) patches per modality chosen by `masking`
   (random, top-k of the priority, or Gumbel top-k) → global tokens g_a, g_v → L_contra, and
   L_dis = MSE(g_v, ĝ_v) + MSE(g_a, ĝ_a);
   loss = λ_rec·L_rec + λ_dis·L_dis + λ_contra·L_contra.
With `dual_pass=False` the model is CAV-MAE Sync: one random-masked pass gives both L_rec and L_contra.

`model.student` is the CAV-MAE Sync module whose `state_dict()` equals the released checkpoint's keys;
`model.teacher` (or None) is a frozen `TeacherEncoder` updated by `update_teacher` after each optimizer step.
Choices where the paper and released code differ are tabled in `tgdp.model.config` and docs/MODEL.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tgdp.model.cavmae_sync import CavMaeSync, TeacherEncoder
from tgdp.model.config import ModelConfig, keep_count
from tgdp.model.losses import contrastive_loss, distillation_loss
from tgdp.model.masking import guided_order, random_order

__all__ = ["TgdpModel", "build_model", "momentum_at"]


def momentum_at(
    step: int, total_steps: int, base: float, end: float, schedule: str, ref_steps: int | None = None
) -> float:
    """EMA momentum at `step`: constant `base`, or cosine from `base` (step 0) to `end` (step total_steps).

    "relative_cosine": the cosine starts at m0 = max(0, 1 − (1 − base)·ref_steps/total_steps), so that the teacher's
    time constant 1/(1 − m0) and the total update Σ(1 − m) ≈ (1 − m0)·T/2 are the same fraction of any run length T
    as `base` gives a run of `ref_steps` steps (docs/MODEL.md, "Teacher schedule").
    """
    if schedule == "constant":
        return base
    if schedule not in ("cosine", "relative_cosine"):
        raise ValueError(f"unknown momentum schedule {schedule!r}")
    if total_steps <= 0:
        return base
    if schedule == "relative_cosine":
        if ref_steps is None:
            raise ValueError("relative_cosine needs ref_steps")
        base = min(max(1.0 - (1.0 - base) * ref_steps / total_steps, 0.0), end)
    frac = min(max(step / total_steps, 0.0), 1.0)
    return end - (end - base) * (1.0 + math.cos(math.pi * frac)) / 2.0


class TgdpModel(nn.Module):
    """CAV-MAE Sync student + optional EMA teacher; `forward(audio, frames)` returns the loss dict."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = CavMaeSync(cfg)
        self.teacher = TeacherEncoder(self.student) if cfg.use_teacher else None

    # ---------------------------------------------------------------- training step
    def _contrastive_keep_ids(
        self, n: int, batch: int, device: torch.device, priority: torch.Tensor | None
    ) -> torch.Tensor | None:
        cfg = self.cfg
        keep = keep_count(n, cfg.contrastive_mask_ratio, cfg.keep_rounding)
        if keep >= n:  # ratio 0: every token, original order
            return None
        if priority is None:
            order = random_order(batch, n, device)
        else:
            order = guided_order(priority, cfg.masking, cfg.gumbel_tau)
        return order[:, :keep]

    def teacher_outputs(
        self, audio: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ĝ_a, ĝ_v, priority_a [B, N_a], priority_v [B, N_v]) from the teacher, with the optional released bug."""
        if self.teacher is None:
            raise RuntimeError("this config has no teacher (use_teacher is False)")
        t_a, t_v, p_a, p_v = self.teacher(audio, frames, self.cfg.priority_direction)
        if self.cfg.teacher_shuffle_bug:
            # Released code ranks a randomly permuted sequence and applies the ranks to unpermuted patches:
            # equivalent to reading the priority of position perm[j] as the priority of position j.
            p_a = torch.gather(p_a, 1, random_order(p_a.shape[0], p_a.shape[1], p_a.device))
            p_v = torch.gather(p_v, 1, random_order(p_v.shape[0], p_v.shape[1], p_v.device))
        return t_a, t_v, p_a, p_v

    def forward(
        self,
        audio: torch.Tensor,
        frames: torch.Tensor,
        step: int | None = None,
        with_globals: bool = False,
        with_terms: bool = False,
    ) -> dict[str, torch.Tensor]:
        """audio: [B, T_seg, F], frames: [B, 3, H, W] -> {loss, rec_loss, mae_a_loss, mae_v_loss,
        contrastive_loss, dis_loss} (0-dim fp32 tensors; absent terms are 0). `step` is accepted and ignored (the
        model tests pass it); the loss does not depend on it (the EMA schedule is applied in `update_teacher`).
        with_globals: also return the detached global tokens the contrastive loss saw, `g_a`/`g_v` [B, D], and the
        teacher's `t_a`/`t_v` [B, D] when there is one (for the representation-health figures); with a teacher
        also its priorities `prio_a` [B, N_a] / `prio_v` [B, N_v] and the contrastive pass's kept positions
        `keep_a` [B, k_a] / `keep_v` [B, k_v] (absent when that pass keeps every token).
        with_terms: also return the weighted terms as they enter `loss`, still in the graph: `term_rec`,
        `term_contra`, `term_dis` (for per-term gradient norms)."""
        del step
        cfg, s = self.cfg, self.student
        zero = torch.zeros((), device=audio.device)
        dis = zero
        t_a = t_v = None
        extra: dict[str, torch.Tensor] = {}
        if not cfg.dual_pass:
            rec = s.forward_reconstruction(audio, frames, with_global=True)
            g_a, g_v = rec["g_a"], rec["g_v"]
        else:
            p_a = p_v = None
            if self.teacher is not None:
                t_a, t_v, p_a, p_v = self.teacher_outputs(audio, frames)
                extra.update(prio_a=p_a, prio_v=p_v)
                if cfg.masking == "random":
                    p_a = p_v = None
            rec = s.forward_reconstruction(audio, frames, with_global=False)
            b = audio.shape[0]
            ids_a = self._contrastive_keep_ids(cfg.num_patches_a, b, audio.device, p_a)
            ids_v = self._contrastive_keep_ids(cfg.num_patches_v, b, audio.device, p_v)
            extra.update({k: v for k, v in (("keep_a", ids_a), ("keep_v", ids_v)) if v is not None})
            g_a, g_v = s.forward_global(audio, frames, ids_a, ids_v)
            if self.teacher is not None:
                dis = distillation_loss(g_a, g_v, t_a, t_v, cfg.dis_reduction, cfg.dis_target)
        contra = contrastive_loss(
            g_a, g_v, cfg.contrastive_temperature, cfg.contrastive_symmetric, cfg.contrastive_gather
        )
        rec_loss = rec["mae_a_loss"] + rec["mae_v_loss"]
        terms = {"term_rec": cfg.lambda_rec * rec_loss, "term_contra": cfg.lambda_contra * contra}
        loss = terms["term_rec"] + terms["term_contra"]
        terms["term_dis"] = cfg.lambda_dis * dis
        if cfg.lambda_dis > 0:
            loss = loss + terms["term_dis"]
        out = {
            "loss": loss,
            "rec_loss": rec_loss.detach(),
            "mae_a_loss": rec["mae_a_loss"].detach(),
            "mae_v_loss": rec["mae_v_loss"].detach(),
            "contrastive_loss": contra.detach(),
            "dis_loss": dis.detach(),
        }
        if with_globals:
            out.update(g_a=g_a.detach(), g_v=g_v.detach(), **extra)
            if t_a is not None and t_v is not None:
                out.update(t_a=t_a.detach(), t_v=t_v.detach())
        if with_terms:
            out.update(terms)
        return out

    # ---------------------------------------------------------------- teacher
    def momentum(self, step: int, total_steps: int) -> float:
        cfg = self.cfg
        return momentum_at(
            step,
            total_steps,
            cfg.teacher_momentum,
            cfg.teacher_momentum_end,
            cfg.teacher_momentum_schedule,
            cfg.teacher_momentum_ref_steps,
        )

    @torch.no_grad()
    def update_teacher(self, step: int, total_steps: int) -> float | None:
        """θ_t ← m·θ_t + (1-m)·θ_s for every teacher tensor; returns m (None without a teacher)."""
        if self.teacher is None:
            return None
        m = self.momentum(step, total_steps)
        src = dict(self.student.named_parameters())
        t_params = [p for _, p in self.teacher.named_parameters()]
        s_params = [src[name].detach() for name, _ in self.teacher.named_parameters()]
        torch._foreach_lerp_(t_params, s_params, 1.0 - m)
        return m

    def reset_teacher(self) -> None:
        """Teacher := student (after loading a checkpoint into the student)."""
        if self.teacher is not None:
            self.teacher.copy_from(self.student)

    # ---------------------------------------------------------------- inference / housekeeping
    def encode(self, audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked, final-normed global tokens (g_a [B, D], g_v [B, D]) of the student (not L2-normalised)."""
        return self.student.forward_global(audio, frames)

    def encode_tokens(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """See `CavMaeSync.forward_tokens` (global, patch and pre-joint tokens, unmasked)."""
        return self.student.forward_tokens(audio, frames)

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this module) of token-like parameters to exclude from weight decay."""
        return {f"student.{n}" for n in self.student.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute student block activations in backward (memory for compute)."""
        self.student.grad_checkpointing = enable

    def flops_per_step(self, batch_size: int) -> dict[str, float]:
        """Analytic matmul FLOPs of one training step; see `tgdp.model.flops.step_flops`."""
        from tgdp.model.flops import step_flops

        return step_flops(self.cfg, batch_size)


def build_model(cfg: ModelConfig | str) -> TgdpModel:
    """Build a `TgdpModel` from a config or a preset name (`PRESETS`)."""
    if isinstance(cfg, str):
        from tgdp.model.presets import PRESETS

        if cfg not in PRESETS:
            raise KeyError(f"unknown model preset {cfg!r}; presets: {', '.join(sorted(PRESETS))}")
        cfg = PRESETS[cfg]
    return TgdpModel(cfg)
