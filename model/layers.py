"""Building blocks: the CAV-MAE transformer block (shared attention/MLP, three norm sets), fixed 2-D sin-cos
positions, and patchify helpers. Attention and MLP are timm's; SDPA is used everywhere except
`Block.forward_global_with_attn`, the teacher's explicit fp32 attention.
"""

from __future__ import annotations

import torch
from timm.layers import Attention, Mlp
from torch import nn

__all__ = [
    "Block",
    "audio_to_image",
    "patchify",
    "sincos_pos_embed_1d",
    "sincos_pos_embed_2d",
]


class Block(nn.Module):
    """Pre-norm ViT block with three LayerNorm sets (fused `norm1/norm2`, audio `_a`, visual `_v`).

    Attention and MLP weights are shared between the streams; only the joint block ever uses the modality norms,
    but every block carries them so parameter names match the released state dict
    (`norm1, norm1_a, norm1_v, attn, norm2, norm2_a, norm2_v, mlp`, in that order).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm1_a = nn.LayerNorm(dim)
        self.norm1_v = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.attn.fused_attn = True  # SDPA regardless of TIMM_FUSED_ATTN
        self.norm2 = nn.LayerNorm(dim)
        self.norm2_a = nn.LayerNorm(dim)
        self.norm2_v = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def _norms(self, modality: str | None) -> tuple[nn.LayerNorm, nn.LayerNorm]:
        if modality is None:
            return self.norm1, self.norm2
        if modality == "a":
            return self.norm1_a, self.norm2_a
        if modality == "v":
            return self.norm1_v, self.norm2_v
        raise ValueError(f"modality must be None, 'a' or 'v', got {modality!r}")

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]; `modality` picks the norm set (None = fused)."""
        n1, n2 = self._norms(modality)
        x = x + self.attn(n1(x))
        return x + self.mlp(n2(x))

    def _qkv(self, x: torch.Tensor, modality: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, N, D] -> q, k, v: [B, H, N, hd] (normed input, q/k norms applied)."""
        n1, _ = self._norms(modality)
        b, n, c = x.shape
        h = self.attn.num_heads
        q, k, v = self.attn.qkv(n1(x)).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        return self.attn.q_norm(q), self.attn.k_norm(k), v

    def _global_out(self, x: torch.Tensor, out: torch.Tensor, modality: str | None) -> torch.Tensor:
        """Residual, projection and MLP for the global query only. out: [B, H, 1, hd] -> [B, D]."""
        _, n2 = self._norms(modality)
        b, _, c = x.shape
        g = x[:, :1] + self.attn.proj(self.attn.norm(out.to(x.dtype).transpose(1, 2).reshape(b, 1, c)))
        g = g + self.mlp(n2(g))
        return g[:, 0]

    def forward_global(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """The block evaluated for the global token only (SDPA). x: [B, 1+N, D] -> [B, D].

        Exact for the global token: keys and values still come from every token."""
        q, k, v = self._qkv(x, modality)
        return self._global_out(x, nn.functional.scaled_dot_product_attention(q[:, :, :1], k, v), modality)

    def forward_global_with_attn(
        self, x: torch.Tensor, modality: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher path. x: [B, 1+N, D] (global token first) -> (out_global [B, D], attn [B, H, 1+N, 1+N] fp32).

        The softmax attention is explicit and computed in fp32 even under autocast (the maps rank tokens, so
        bf16 ties matter). Only the global token's output is wanted, so attention-times-values, the projection
        and the MLP run for that one query instead of all 1+N.
        """
        q, k, v = self._qkv(x, modality)
        with torch.autocast(device_type=x.device.type, enabled=False):
            q32, k32, v32 = q.float(), k.float(), v.float()
            attn = torch.softmax((q32 * self.attn.scale) @ k32.transpose(-2, -1), dim=-1)  # [B, H, 1+N, 1+N]
            out = attn[:, :, :1] @ v32  # [B, H, 1, hd]
        return self._global_out(x, out, modality), attn


def sincos_pos_embed_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: [M] -> [M, dim] as cat(sin(pos·ω), cos(pos·ω)), ω_i = 10000^(-i/(dim/2)) (MAE layout)."""
    if dim % 2:
        raise ValueError(f"sin-cos dim must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table [grid_h·grid_w, dim] for a row-major (h, w) token grid.

    Layout as in MAE/CAV-MAE `get_2d_sincos_pos_embed`: dims [0, dim/2) encode the column (w) index, dims
    [dim/2, dim) the row (h) index. For audio the grid is (freq=h, time=w), so token k = f·W + t carries the time
    index in the first half and the frequency index in the second.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos dim must be a multiple of 4, got {dim}")
    hh, ww = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_w = sincos_pos_embed_1d(dim // 2, ww.reshape(-1))
    emb_h = sincos_pos_embed_1d(dim // 2, hh.reshape(-1))
    return torch.cat([emb_w, emb_h], dim=1).float()


def audio_to_image(audio: torch.Tensor) -> torch.Tensor:
    """audio: [B, T, F] fbank -> [B, 1, F, T] (frequency rows, time columns), as CAV-MAE feeds its conv."""
    if audio.dim() != 3:
        raise ValueError(f"audio must be [B, T, F], got shape {tuple(audio.shape)}")
    return audio.unsqueeze(1).transpose(2, 3)


def patchify(img: torch.Tensor, p: int) -> torch.Tensor:
    """img: [B, C, H, W] -> [B, (H/p)·(W/p), p·p·C], row-major patches, pixels ordered (p_row, p_col, C) (MAE)."""
    b, c, h, w = img.shape
    gh, gw = h // p, w // p
    x = img.reshape(b, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, gh * gw, p * p * c)
