"""Spatial-reduction attention (SRA).

Implements "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions" (Wang et al., 2021), eq. 2-3::

    SRA(Q, K, V) = Concat(head_0, ..., head_{N_i}) W^O                               (2)
    head_j       = Attention(Q W_j^Q, SR(K) W_j^K, SR(V) W_j^V)
    SR(x)        = Norm(Reshape(x, R_i) W^S)                                        (3)

``SR`` reduces the key/value sequence of an ``H x W`` map by ``R_i^2`` with a strided
``R_i x R_i`` convolution followed by LayerNorm. Parameter names follow the official PVT code:
``q``, ``kv`` (output ``[k | v]`` head-major), ``proj``, and for ``sr_ratio > 1`` ``sr`` and
``norm``.
"""

from __future__ import annotations

from torch import Tensor, nn

from shared_attention.attention.multihead import scaled_dot_product

__all__ = ["SpatialReductionAttention"]


class SpatialReductionAttention(nn.Module):
    """PVT spatial-reduction multi-head attention.

    Args:
        dim: Channel width ``C``.
        num_heads: Number of heads (must divide ``dim``).
        sr_ratio: Reduction ratio ``R``; keys/values come from an ``(H/R) x (W/R)`` map.
        qkv_bias: Bias in the ``q`` and ``kv`` projections.
        qk_scale: Score scale; defaults to ``head_dim ** -0.5``.
        attn_drop: Dropout on attention probabilities (training only).
        proj_drop: Dropout after ``proj``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        sr_ratio: int = 1,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if sr_ratio < 1:
            raise ValueError(f"sr_ratio must be >= 1, got {sr_ratio}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.sr_ratio = sr_ratio
        self.attn_drop_p = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr: nn.Conv2d | None = None
        self.norm: nn.LayerNorm | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803 (PVT signature)
        """Attend from every token to the spatially reduced sequence.

        Args:
            x: Tokens ``(B, N, C)`` of an ``H x W`` map in row-major order (``N = H * W``).
            H: Map height.
            W: Map width.

        Returns:
            ``(B, N, C)``.
        """
        B, N, C = x.shape
        if N != H * W:
            raise ValueError(f"sequence length {N} != H * W = {H} * {W}")
        h, d = self.num_heads, self.head_dim
        q = self.q(x).reshape(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        if self.sr is not None and self.norm is not None:
            feat = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
            feat = self.sr(feat).flatten(2).transpose(1, 2)  # (B, M, C), M = (H/R)*(W/R)
            kv_in = self.norm(feat)  # (B, M, C)
        else:
            kv_in = x  # (B, N, C)
        M = kv_in.shape[1]
        kv = self.kv(kv_in).reshape(B, M, 2, h, d).permute(2, 0, 3, 1, 4)  # (2, B, h, M, d)
        out, _ = scaled_dot_product(
            q,
            kv[0],
            kv[1],
            dropout_p=self.attn_drop_p if self.training else 0.0,
            scale=self.scale,
        )  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(out))  # (B, N, C)
