"""The pre-norm transformer encoder layer (ViT; Dosovitskiy et al. 2021, eq. 2-3):
``x = x + DropPath(MSA(LN(x)))``, ``x = x + DropPath(MLP(LN(x)))``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..attention.multihead import MultiHeadAttention
from .mlp import DropPath, Mlp

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """Pre-norm multi-head self-attention + MLP block.

    Args:
        dim: token width. num_heads: attention heads. mlp_ratio: hidden width of the MLP / ``dim``.
        qkv_bias: bias in the q/k/v projection. drop: dropout after attention projection and in the MLP.
        attn_drop: dropout on attention probabilities. drop_path: stochastic depth probability.
        norm_layer: normalisation factory taking the width (LayerNorm).
        act_layer: MLP activation factory (GELU).

    Parameter names: ``norm1``, ``attn`` (``qkv``, ``proj``), ``norm2``, ``mlp`` (``fc1``, ``fc2``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, N, C)
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask=attn_mask))  # (B, N, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))  # (B, N, C)
