"""Channel attention (squeeze-and-excitation).

Implements "Squeeze-and-Excitation Networks" (Hu et al., 2018), eq. 2-3::

    z_c = 1 / (H W) * sum_{i,j} u_c(i, j)                  (2, squeeze)
    s   = sigmoid(W_2 ReLU(W_1 z)),  x_c = s_c * u_c        (3, excitation, and eq. 4 scaling)

Two parameterisations with checkpoint-compatible names:

* :class:`ChannelAttention`: 1x1 convolutions, as in RCAN / HAT's channel attention block
  (``attention.0`` pool, ``attention.1`` conv, ``attention.2`` ReLU, ``attention.3`` conv,
  ``attention.4`` sigmoid);
* :class:`SqueezeExcitation`: linear layers, as in SENet (``fc.0`` Linear, ``fc.1`` ReLU,
  ``fc.2`` Linear, ``fc.3`` sigmoid).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ChannelAttention", "SqueezeExcitation"]


def _reduced(channels: int, factor: int) -> int:
    hidden = channels // factor
    if hidden < 1:
        raise ValueError(f"{channels} channels reduced by {factor} leaves no hidden channel")
    return hidden


class ChannelAttention(nn.Module):
    """Squeeze-excitation with 1x1 convolutions (RCAN / HAT ``ChannelAttention``).

    Args:
        num_feat: Number of channels ``C``.
        squeeze_factor: Reduction ratio ``r``; the hidden width is ``C // r``.
        bias: Bias in both convolutions.
    """

    def __init__(self, num_feat: int, squeeze_factor: int = 16, bias: bool = True) -> None:
        super().__init__()
        hidden = _reduced(num_feat, squeeze_factor)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, hidden, 1, padding=0, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_feat, 1, padding=0, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Rescale channels.

        Args:
            x: ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``: ``x * s`` with per-channel gates ``s`` in ``(0, 1)``.
        """
        s = self.attention(x)  # (B, C, 1, 1)
        return x * s  # (B, C, H, W)


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation with linear layers (SENet ``SELayer``).

    Args:
        channels: Number of channels ``C``.
        reduction: Reduction ratio ``r``; the hidden width is ``C // r``.
        bias: Bias in both linear layers (``False`` by default, as in SENet).
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Rescale channels.

        Args:
            x: ``(B, C, H, W)``.

        Returns:
            ``(B, C, H, W)``.
        """
        B, C = x.shape[:2]
        z = x.mean(dim=(2, 3))  # (B, C)
        s = self.fc(z).view(B, C, 1, 1)  # (B, C, 1, 1)
        return x * s  # (B, C, H, W)
