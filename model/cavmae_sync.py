"""CAV-MAE Sync student (`CavMaeSync`, parameter names = the released state dict) and the EMA teacher encoder.

Token flow (docs/MODEL.md, "One step"): patch embed + fixed sin-cos position + learned modality embedding → (masking) →
prepend the global token, append R registers → modality blocks → drop registers → joint block(s), run three ways:
fused visible patches (no global tokens, shared norms) → `norm` → joint decoder; audio stream (audio norms) and
visual stream (visual norms) → `norm_a(ca[:, 0])`, `norm_v(cv[:, 0])` = the global tokens g_a, g_v.

Only the global tokens of the audio/visual joint passes are consumed by the losses, so the LAST joint block runs
for the global query only (`Block` output for token 0 attends to all tokens; identical values, less compute).
Registers use the released layout: one `register_tokens` [2R, D], the first R audio, the last R visual.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import PatchEmbed
from torch import nn
from torch.utils.checkpoint import checkpoint

from tgdp.model.config import ModelConfig, keep_count
from tgdp.model.layers import Block, audio_to_image, patchify, sincos_pos_embed_2d
from tgdp.model.losses import mae_loss
from tgdp.model.masking import gather_visible, random_order

__all__ = ["TEACHER_PARTS", "CavMaeSync", "EncoderMixin", "TeacherEncoder", "take_tokens"]

# Student attributes the EMA teacher copies (no decoder, no fused `norm`, no mask token).
TEACHER_PARTS = (
    "modality_a",
    "modality_v",
    "pos_embed_a",
    "pos_embed_v",
    "register_tokens",
    "cls_token_a",
    "cls_token_v",
    "patch_embed_a",
    "patch_embed_v",
    "blocks_a",
    "blocks_v",
    "blocks_u",
    "norm_a",
    "norm_v",
)


def take_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: [B, N, D], ids: [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class EncoderMixin:
    """Encoder computations shared by the student and the teacher (both hold the `TEACHER_PARTS` attributes)."""

    num_register_tokens: int
    grad_checkpointing: bool

    def embed_a(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: [B, T_seg, F] -> patch tokens [B, N_a, D] (freq-major, k = f·W_t + t) with position+modality."""
        return self.patch_embed_a(audio_to_image(audio)) + self.pos_embed_a + self.modality_a

    def embed_v(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: [B, 3, H, W] -> patch tokens [B, N_v, D] with position+modality."""
        return self.patch_embed_v(frames) + self.pos_embed_v + self.modality_v

    def _blocks(self, blocks: nn.Sequential | nn.ModuleList, x: torch.Tensor, modality: str | None) -> torch.Tensor:
        for blk in blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, modality, use_reentrant=False)
            else:
                x = blk(x, modality)
        return x

    def unimodal(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """x: [B, n, D] visible patch tokens -> [B, 1+n, D] after the modality blocks (registers dropped)."""
        b = x.shape[0]
        r = self.num_register_tokens
        if modality == "a":
            cls, regs, blocks = self.cls_token_a, self.register_tokens[:r], self.blocks_a
        else:
            cls, regs, blocks = self.cls_token_v, self.register_tokens[r:], self.blocks_v
        x = torch.cat([cls.expand(b, -1, -1), x, regs.unsqueeze(0).expand(b, -1, -1)], dim=1)
        x = self._blocks(blocks, x, None)
        return x[:, : x.shape[1] - r] if r else x

    def joint_global(self, u: torch.Tensor, modality: str) -> torch.Tensor:
        """u: [B, 1+n, D] unimodal output -> final-normed global token [B, D] (joint blocks, modality norms)."""
        u = self._blocks(self.blocks_u[:-1], u, modality)
        g = self.blocks_u[-1].forward_global(u, modality)
        return self.norm_a(g) if modality == "a" else self.norm_v(g)


class CavMaeSync(EncoderMixin, nn.Module):
    """The CAV-MAE Sync model. `state_dict()` keys equal the released checkpoint's keys (without `module.`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, dd, r = cfg.embed_dim, cfg.decoder_embed_dim, cfg.num_register_tokens
        na, nv = cfg.num_patches_a, cfg.num_patches_v
        self.num_register_tokens = r
        self.grad_checkpointing = cfg.grad_checkpointing
        # attribute order follows the released state dict
        self.modality_a = nn.Parameter(torch.zeros(1, 1, d))
        self.modality_v = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed_a = nn.Parameter(torch.zeros(1, na, d), requires_grad=False)
        self.pos_embed_v = nn.Parameter(torch.zeros(1, nv, d), requires_grad=False)
        self.register_tokens = nn.Parameter(torch.randn(2 * r, d))  # std 1, never re-initialised (as released)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed_a = nn.Parameter(torch.zeros(1, na, dd), requires_grad=False)
        self.decoder_pos_embed_v = nn.Parameter(torch.zeros(1, nv, dd), requires_grad=False)
        self.cls_token_a = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token_v = nn.Parameter(torch.zeros(1, 1, d))
        p = cfg.patch_size
        self.patch_embed_a = PatchEmbed((cfg.num_mel_bins, cfg.audio_length), p, in_chans=1, embed_dim=d)
        self.patch_embed_v = PatchEmbed(cfg.img_size, p, in_chans=3, embed_dim=d)
        self.blocks_a = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.modality_depth))
        self.blocks_v = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.modality_depth))
        self.blocks_u = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.joint_depth))
        self.norm_a = nn.LayerNorm(d)
        self.norm_v = nn.LayerNorm(d)
        self.norm = nn.LayerNorm(d)
        self.decoder_embed = nn.Linear(d, dd)
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd)
        self.decoder_pred_a = nn.Linear(dd, p * p * 1)
        self.decoder_pred_v = nn.Linear(dd, p * p * 3)
        self.initialize_weights()
        # The modality norm sets of blocks_a/blocks_v/decoder_blocks exist only for name compatibility and never
        # see data: freezing them keeps DDP usable without find_unused_parameters.
        for name, param in self.named_parameters():
            if name.split(".")[0] in ("blocks_a", "blocks_v", "decoder_blocks") and (
                ".norm1_" in name or ".norm2_" in name
            ):
                param.requires_grad_(False)

    # ---------------------------------------------------------------- init
    @torch.no_grad()
    def initialize_weights(self) -> None:
        """CAV-MAE `initialize_weights`: sin-cos positions, xavier patch/linear weights, N(0, .02) tokens."""
        cfg = self.cfg
        fa, ta = cfg.audio_grid
        hv, wv = cfg.visual_grid
        self.pos_embed_a.copy_(sincos_pos_embed_2d(cfg.embed_dim, fa, ta)[None])
        self.pos_embed_v.copy_(sincos_pos_embed_2d(cfg.embed_dim, hv, wv)[None])
        self.decoder_pos_embed_a.copy_(sincos_pos_embed_2d(cfg.decoder_embed_dim, fa, ta)[None])
        self.decoder_pos_embed_v.copy_(sincos_pos_embed_2d(cfg.decoder_embed_dim, hv, wv)[None])
        for pe in (self.patch_embed_a, self.patch_embed_v):
            w = pe.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for t in (self.cls_token_a, self.cls_token_v, self.modality_a, self.modality_v, self.mask_token):
            nn.init.normal_(t, std=0.02)
        for t in (self.decoder_modality_a, self.decoder_modality_v):
            nn.init.normal_(t, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Token-like parameters excluded from weight decay (timm convention)."""
        return {
            "cls_token_a",
            "cls_token_v",
            "register_tokens",
            "modality_a",
            "modality_v",
            "mask_token",
            "decoder_modality_a",
            "decoder_modality_v",
            "pos_embed_a",
            "pos_embed_v",
            "decoder_pos_embed_a",
            "decoder_pos_embed_v",
        }

    # ---------------------------------------------------------------- decoder + losses
    def forward_decoder(
        self, latent: torch.Tensor, ids_restore_a: torch.Tensor, ids_restore_v: torch.Tensor, n_vis_a: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latent: [B, n_a+n_v, D] (normed fused output) -> (pred_a [B, N_a, p²], pred_v [B, N_v, 3p²])."""
        x = self.decoder_embed(latent)
        b, _, dd = x.shape
        na, nv = ids_restore_a.shape[1], ids_restore_v.shape[1]
        xa, xv = x[:, :n_vis_a], x[:, n_vis_a:]
        xa = torch.cat([xa, self.mask_token.expand(b, na - xa.shape[1], dd)], dim=1)
        xv = torch.cat([xv, self.mask_token.expand(b, nv - xv.shape[1], dd)], dim=1)
        xa = take_tokens(xa, ids_restore_a) + self.decoder_pos_embed_a + self.decoder_modality_a
        xv = take_tokens(xv, ids_restore_v) + self.decoder_pos_embed_v + self.decoder_modality_v
        x = self._blocks(self.decoder_blocks, torch.cat([xa, xv], dim=1), None)
        x = self.decoder_norm(x)
        return self.decoder_pred_a(x[:, :na]), self.decoder_pred_v(x[:, na:])

    def forward_reconstruction(
        self, audio: torch.Tensor, frames: torch.Tensor, with_global: bool = True
    ) -> dict[str, torch.Tensor]:
        """Random-masked pass (ratios mask_ratio_a/v; audio noise drawn before visual noise).

        Returns `mae_a_loss`, `mae_v_loss`, `mask_a` [B, N_a], `mask_v` [B, N_v] and, with `with_global`,
        the global tokens `g_a`, `g_v` [B, D] of the same masked pass (CAV-MAE Sync single pass).
        """
        cfg = self.cfg
        xa, xv = self.embed_a(audio), self.embed_v(frames)
        b = xa.shape[0]
        ka = keep_count(xa.shape[1], cfg.mask_ratio_a, cfg.keep_rounding)
        kv = keep_count(xv.shape[1], cfg.mask_ratio_v, cfg.keep_rounding)
        order_a = random_order(b, xa.shape[1], xa.device)
        order_v = random_order(b, xv.shape[1], xv.device)
        xa, mask_a, restore_a = gather_visible(xa, order_a, ka)
        xv, mask_v, restore_v = gather_visible(xv, order_v, kv)
        ua, uv = self.unimodal(xa, "a"), self.unimodal(xv, "v")
        fused = self._blocks(self.blocks_u, torch.cat([ua[:, 1:], uv[:, 1:]], dim=1), None)
        pred_a, pred_v = self.forward_decoder(self.norm(fused), restore_a, restore_v, ka)
        target_a = patchify(audio_to_image(audio), cfg.patch_size)
        target_v = patchify(frames, cfg.patch_size)
        out = {
            "mae_a_loss": mae_loss(pred_a, target_a, mask_a, cfg.norm_pix_loss),
            "mae_v_loss": mae_loss(pred_v, target_v, mask_v, cfg.norm_pix_loss),
            "mask_a": mask_a,
            "mask_v": mask_v,
        }
        if with_global:
            out["g_a"] = self.joint_global(ua, "a")
            out["g_v"] = self.joint_global(uv, "v")
        return out

    def forward_global(
        self,
        audio: torch.Tensor,
        frames: torch.Tensor,
        keep_ids_a: torch.Tensor | None = None,
        keep_ids_v: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contrastive / encode pass: only the patches at keep_ids_* ([B, k], original positions; None = all).

        Returns final-normed global tokens (g_a [B, D], g_v [B, D]); no fused pass, no decoder.
        """
        xa, xv = self.embed_a(audio), self.embed_v(frames)
        if keep_ids_a is not None:
            xa = take_tokens(xa, keep_ids_a)
        if keep_ids_v is not None:
            xv = take_tokens(xv, keep_ids_v)
        return self.joint_global(self.unimodal(xa, "a"), "a"), self.joint_global(self.unimodal(xv, "v"), "v")

    def forward_tokens(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unmasked features for evaluation: `g_a`, `g_v` [B, D]; `patch_a` [B, N_a, D], `patch_v` [B, N_v, D]
        (joint-block patch outputs after norm_a/norm_v); `pre_joint_a`, `pre_joint_v` [B, D] (global tokens after
        the modality blocks, un-normed: the CAV-MAE Sync probe input)."""
        ua, uv = self.unimodal(self.embed_a(audio), "a"), self.unimodal(self.embed_v(frames), "v")
        ca, cv = self._blocks(self.blocks_u, ua, "a"), self._blocks(self.blocks_u, uv, "v")
        ca, cv = self.norm_a(ca), self.norm_v(cv)
        return {
            "g_a": ca[:, 0],
            "g_v": cv[:, 0],
            "patch_a": ca[:, 1:],
            "patch_v": cv[:, 1:],
            "pre_joint_a": ua[:, 0],
            "pre_joint_v": uv[:, 0],
        }

    def forward(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """The single CAV-MAE Sync pass (MAE + global tokens on the same 75 % masks); see `forward_reconstruction`."""
        return self.forward_reconstruction(audio, frames, with_global=True)


class TeacherEncoder(EncoderMixin, nn.Module):
    """EMA teacher: a frozen copy of the student's encoder parts (`TEACHER_PARTS`, same names as the student).

    It sees the full unmasked input in original patch order, runs no fused pass and no decoder, and computes
    the last joint block's attention explicitly in fp32 to rank patches.
    """

    def __init__(self, student: CavMaeSync) -> None:
        super().__init__()
        self.num_register_tokens = student.num_register_tokens
        self.grad_checkpointing = False
        for name in TEACHER_PARTS:
            setattr(self, name, copy.deepcopy(getattr(student, name)))
        self.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, student: CavMaeSync) -> None:
        """Reset every teacher tensor to the student's value."""
        src = dict(student.named_parameters())
        for name, param in self.named_parameters():
            param.copy_(src[name])

    @torch.no_grad()
    def forward(
        self, audio: torch.Tensor, frames: torch.Tensor, direction: str = "patch_to_global"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (ĝ_a [B, D], ĝ_v [B, D], priority_a [B, N_a], priority_v [B, N_v]); priorities are fp32, averaged
        over heads, normalised to sum 1 over patches, indexed by original patch position."""
        outs = []
        for modality, x in (("a", self.embed_a(audio)), ("v", self.embed_v(frames))):
            u = self._blocks(self.blocks_u[:-1], self.unimodal(x, modality), modality)
            g, attn = self.blocks_u[-1].forward_global_with_attn(u, modality)
            if direction == "patch_to_global":
                score = attn[:, :, 1:, 0]
            elif direction == "global_to_patch":
                score = attn[:, :, 0, 1:]
            else:
                raise ValueError(f"unknown priority_direction {direction!r}")
            score = score.mean(dim=1)
            prio = score / score.sum(dim=1, keepdim=True)
            outs.append((self.norm_a(g) if modality == "a" else self.norm_v(g), prio))
        (g_a, p_a), (g_v, p_v) = outs
        return g_a, g_v, p_a, p_v
