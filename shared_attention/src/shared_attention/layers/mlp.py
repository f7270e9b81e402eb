"""Feed-forward and regularisation layers shared by the models: the transformer MLP (Vaswani et al. 2017,
eq. 2, with GELU as in ViT) and stochastic depth (Huang et al. 2016, "drop path")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Mlp", "DropPath", "drop_path"]


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout, on the last axis.

    Args:
        in_features: input width. hidden_features: hidden width (default: ``in_features``).
        out_features: output width (default: ``in_features``). act_layer: activation class (GELU).
        drop: dropout after the activation and after ``fc2``. bias: use biases.

    Parameters are named ``fc1`` and ``fc2`` (timm / Swin / HAT convention).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out_features or in_features, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))  # (..., hidden)
        return self.drop(self.fc2(x))  # (..., out)


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zeroes whole samples of a residual branch with probability ``p`` and rescales the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode).

    Args:
        p: drop probability.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
