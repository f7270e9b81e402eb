"""Winograd F(2x2, 3x3) convolution for wide 3x3 layers on the CPU (Lavin & Gray 2016, "Fast Algorithms for
Convolutional Neural Networks").

A 3x3 convolution of stride 1 and padding 1 computes every 2x2 output tile from a 4x4 input tile with 16
element-wise products in the transformed domain instead of 36 multiplications: ``Y = A^T [(G g G^T) * (B^T d B)] A``.
Summed over input channels, the element-wise products become 16 matrix products ``(C_out, C_in) @ (C_in, tiles)``,
i.e. 2.25x fewer multiply-adds than the direct convolution. The transforms are small fixed matrices applied as
three thin matrix products, so the whole layer is differentiable with ordinary autograd (its backward runs in
the transformed domain too, with the same 2.25x saving, but see :class:`WinogradConv2d` on its accuracy).

Where it pays: wide layers (hundreds of channels), whose direct convolution already runs near the CPU's GEMM
peak, so fewer multiply-adds means less time (ParaTransCNN's decoder: 1344-1792 channels). Narrow layers are
memory-bound and keep oneDNN's direct kernel. oneDNN has Winograd kernels of its own, but PyTorch does not
expose them. Float32 / float64 on the CPU only; under autocast, in other dtypes or on other devices the layer
runs ``F.conv2d`` (cuDNN chooses Winograd itself). Results equal the direct convolution to float rounding
(tests: float64 to 1e-12, float32 to 1e-5 relative). The layer uses it for inference only.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_attention.derived import derived_tensor

__all__ = ["WinogradConv2d", "set_winograd", "winograd_conv3x3", "winograd_eligible", "winograd_filter"]

_BT = ((1.0, 0.0, -1.0, 0.0), (0.0, 1.0, 1.0, 0.0), (0.0, -1.0, 1.0, 0.0), (0.0, 1.0, 0.0, -1.0))
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_AT = ((1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, -1.0))


@lru_cache(maxsize=8)
def _transforms(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The 2D transforms as matrices on flattened tiles: ``(16, 16)`` input, ``(16, 9)`` filter, ``(4, 16)`` output.

    ``kron(M, M)`` applied to a row-major flattened tile ``t`` equals ``M t M^T`` flattened.
    """
    bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
    return tuple(torch.kron(m, m).to(dtype=dtype, device=device) for m in (bt, g, at))  # type: ignore[return-value]


def winograd_filter(weight: Tensor) -> Tensor:
    """The transformed filter ``G g G^T`` of a ``(C_out, C_in, 3, 3)`` weight, laid out ``(16, C_out, C_in)``."""
    co, c = weight.shape[:2]
    _, g, _ = _transforms(weight.dtype, weight.device)
    return torch.mm(g, weight.reshape(co * c, 9).t()).view(16, co, c)  # (16, C_out, C_in)


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None, filt: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding=1)`` for a 3x3 ``weight`` through Winograd F(2x2, 3x3).

    Args:
        x: ``(N, C_in, H, W)``; any ``H, W >= 1`` (odd sizes are padded to whole tiles and cropped).
        weight: ``(C_out, C_in, 3, 3)``.
        bias: ``(C_out,)`` or ``None``.
        filt: :func:`winograd_filter` of ``weight`` when already known (inference caches it); ``None``
            computes it.

    Returns:
        ``(N, C_out, H, W)``, contiguous unless ``H`` or ``W`` is odd (a crop of the whole tiles).
    """
    n, c, h, w = x.shape
    co = weight.shape[0]
    if weight.shape != (co, c, 3, 3):
        raise ValueError(f"winograd_conv3x3 needs a (C_out, {c}, 3, 3) weight, got {tuple(weight.shape)}")
    th, tw = (h + 1) // 2, (w + 1) // 2
    t = n * th * tw
    bt, _, at = _transforms(x.dtype, x.device)
    # zero padding 1 (plus one row / column where H / W is odd, so that the 2x2 output tiles cover the map)
    xp = F.pad(x, (1, 1 + 2 * tw - w, 1, 1 + 2 * th - h))  # (N, C, 2th+2, 2tw+2)
    tiles = xp.unfold(2, 4, 2).unfold(3, 4, 2)  # (N, C, th, tw, 4, 4): overlapping 4x4 input tiles, a view
    d = tiles.permute(4, 5, 1, 0, 2, 3).reshape(16, c * t)  # (16, C*T): tile element, channel, tile (n, i, j)
    v = torch.mm(bt, d).view(16, c, t)  # (16, C, T): B^T d B per tile and channel
    u = winograd_filter(weight) if filt is None else filt  # (16, C_out, C)
    m = torch.bmm(u, v)  # (16, C_out, T): the channel sums of the element-wise products
    y = torch.mm(at, m.view(16, co * t))  # (4, C_out*T): A^T m A
    y = y.view(2, 2, co, n, th, tw).permute(3, 2, 4, 0, 5, 1).reshape(n, co, 2 * th, 2 * tw)  # (N, C_out, 2th, 2tw)
    if 2 * th != h or 2 * tw != w:
        y = y[:, :, :h, :w]
    if bias is not None:
        y.add_(bias.view(1, co, 1, 1))  # y is a fresh tensor (the reshape above copies): no second full-size copy
    return y  # (N, C_out, H, W)


def winograd_eligible(conv: nn.Module, min_channels: int = 0) -> bool:
    """Whether ``conv`` is an ``nn.Conv2d`` that :func:`winograd_conv3x3` computes exactly: 3x3, stride 1, zero
    padding 1, no dilation, no groups, and at least ``min_channels`` input and output channels."""
    return (
        isinstance(conv, nn.Conv2d)  # (nn.ConvTranspose2d is not one)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters and state dict) computed by :func:`winograd_conv3x3` in inference (no
    gradient needed; float32 / float64 on the CPU, outside autocast) and by ``F.conv2d`` otherwise. Made by
    :func:`set_winograd` from eligible layers.

    The transformed filter is kept (``16 / 9`` of the weight's memory; :func:`shared_attention.derived.derived_tensor`)
    and recomputed when the weight changes (its version counter). Training keeps the direct kernel: the Winograd
    backward sums overlapping tiles, and behind a training-mode BatchNorm its float32 rounding grew to ~3e-3
    relative in the weight gradients (direct: ~1e-6; both against float64), while recomputing the filter every
    step ate most of the forward gain.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, H, W)``."""
        if (
            x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.float64)
            or self.weight.dtype != x.dtype
            or torch.is_autocast_enabled("cpu")
            or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            or torch.compiler.is_compiling()  # inductor picks its own convolution; the cache is eager-only state
        ):
            return super().forward(x)
        w = self.weight.detach()
        filt = derived_tensor(self, "_winograd_cache", (self.weight,), lambda: winograd_filter(w))  # (16, C_out, C_in)
        return winograd_conv3x3(x, w, None if self.bias is None else self.bias.detach(), filt=filt)


def set_winograd(model: nn.Module, enabled: bool = True, min_channels: int = 1024) -> int:
    """Switches every eligible 3x3 convolution of ``model`` to :class:`WinogradConv2d` (or back to ``nn.Conv2d``).

    Parameters, buffers and state-dict keys are untouched; only the class (the ``forward``) changes.

    Args:
        model: any module tree.
        enabled: ``True``: Winograd for eligible layers; ``False``: every :class:`WinogradConv2d` back to
            ``nn.Conv2d``.
        min_channels: narrower layers keep the direct kernel (measured on a 2-core AVX-512 CPU: 64-512 channels
            were 0.45-0.95x the direct convolution, 1344-1792 channels 1.5-2x in inference).

    Returns:
        The number of layers switched.
    """
    count = 0
    for m in model.modules():
        cls: type[nn.Module] = type(m)
        if enabled and cls is nn.Conv2d and winograd_eligible(m, min_channels):
            m.__class__ = WinogradConv2d
            count += 1
        elif not enabled and cls is WinogradConv2d:
            m.__class__ = nn.Conv2d  # a cached filter stays (keyed by the weight's version) for switching back
            count += 1
    return count
