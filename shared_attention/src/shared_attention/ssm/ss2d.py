"""SS2D: the 2D selective scan of VMamba / VM-UNet (four-direction cross-scan + merge).

Reference: Y. Liu et al., "VMamba: Visual State Space Model", 2024 (arXiv:2401.10166), sec. 3/4
("2D-Selective-Scan", fig. 2), as used by J. Ruan and S. Xiang, "VM-UNet: Vision Mamba UNet for
Medical Image Segmentation", 2024 (arXiv:2402.02491), eq. 1-3 (the VSS block).

A feature map ``x`` of shape (B, D, H, W) is unfolded into four 1D sequences of length ``L = H * W``
(the *cross-scan*)::

    k = 0: row-major        x[h, w] at index h * W + w
    k = 1: column-major     x[h, w] at index w * H + h
    k = 2: row-major, reversed
    k = 3: column-major, reversed

Each sequence goes through its own selective SSM (Mamba S6, eq. 2a/2b of Gu & Dao) with input-dependent
``delta = softplus(W_dt (W_x x)_dt + b_dt)``, ``B = (W_x x)_B`` and ``C = (W_x x)_C`` (one projection per
direction), and the four outputs are put back on the (H, W) grid and summed (the *cross-merge*)::

    y[h, w] = sum_k y_k[pos_k(h, w)]

:class:`SS2D` is the full operator (in_proj -> depthwise conv + SiLU -> cross-scan -> S6 -> cross-merge ->
LayerNorm -> * SiLU(z) -> out_proj) with the official VMamba (v0) parameter names (``x_proj_weight``,
``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``, ``in_proj``, ``conv2d``, ``out_norm``,
``out_proj``); :class:`VSSBlock` is ``x + DropPath(SS2D(LN(x)))``.

The scan goes through :func:`shared_attention.ssm.selective_scan.selective_scan_fn` (mamba-ssm's CUDA
kernel when present, the chunked PyTorch path otherwise); ``scan_impl="reference"`` selects the
sequential :func:`~shared_attention.ssm.selective_scan.selective_scan_ref` (tests, benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.mlp import DropPath
from .selective_scan import selective_scan_fn, selective_scan_ref

__all__ = ["SS2D", "VSSBlock", "cross_merge", "cross_scan"]

ScanImpl = Literal["fast", "reference"]


def cross_scan(x: Tensor) -> Tensor:
    """Unfolds a feature map into the four SS2D scan orders.

    Args:
        x: ``(B, D, H, W)``.

    Returns:
        ``(B, 4, D, H * W)``: row-major, column-major, and both reversed.
    """
    B, D, H, W = x.shape
    rows = x.reshape(B, D, H * W)  # (B, D, L) index h*W + w
    cols = x.transpose(2, 3).reshape(B, D, H * W)  # (B, D, L) index w*H + h
    fwd = torch.stack([rows, cols], dim=1)  # (B, 2, D, L)
    return torch.cat([fwd, fwd.flip(-1)], dim=1)  # (B, 4, D, L)


def cross_merge(y: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
    """Puts the four directional outputs back on the grid and sums them (inverse of :func:`cross_scan`).

    Args:
        y: ``(B, 4, D, H * W)`` in the scan orders of :func:`cross_scan`.
        H: grid height. W: grid width.

    Returns:
        ``(B, D, H * W)`` in row-major order.
    """
    B, K, D, L = y.shape
    if K != 4 or L != H * W:
        raise ValueError(f"cross_merge expects (B, 4, D, H*W) with H*W={H * W}, got {tuple(y.shape)}")
    y = y[:, :2] + y[:, 2:].flip(-1)  # (B, 2, D, L): undo the reversal
    cols = y[:, 1].reshape(B, D, W, H).transpose(2, 3).reshape(B, D, L)  # (B, D, L) back to row-major
    return y[:, 0] + cols


def _dt_bias_init(d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """Inverse-softplus of step sizes drawn log-uniformly in [dt_min, dt_max] (Mamba's init)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)


class SS2D(nn.Module):
    """The 2D selective-scan operator of VMamba (v0) / VM-UNet, channels-last.

    Args:
        d_model: input/output width ``C``.
        d_state: SSM state size ``N`` (16).
        d_conv: depthwise convolution kernel (3).
        expand: ``d_inner = expand * d_model`` (2).
        dt_rank: rank of the step-size projection; ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min / dt_max / dt_scale / dt_init_floor: Mamba's step-size initialisation.
        dropout: dropout after ``out_proj``.
        conv_bias: bias in the depthwise convolution. bias: bias in ``in_proj`` / ``out_proj``.
        scan_impl: ``"fast"`` (:func:`selective_scan_fn`) or ``"reference"`` (sequential loop).

    Parameter names follow the official checkpoints: ``in_proj``, ``conv2d``, ``x_proj_weight`` (4, R+2N,
    d_inner), ``dt_projs_weight`` (4, d_inner, R), ``dt_projs_bias`` (4, d_inner), ``A_logs`` (4 d_inner, N),
    ``Ds`` (4 d_inner), ``out_norm``, ``out_proj``.
    """

    K = 4  # scan directions

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: float = 2.0,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        dropout: float = 0.0,
        conv_bias: bool = True,
        bias: bool = False,
        scan_impl: ScanImpl = "fast",
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_impl: ScanImpl = scan_impl
        K = self.K
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        bound = d_inner**-0.5  # nn.Linear's default init of the x projections
        self.x_proj_weight = nn.Parameter(torch.empty(K, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        std = rank**-0.5 * dt_scale
        self.dt_projs_weight = nn.Parameter(torch.empty(K, d_inner, rank).uniform_(-std, std))
        self.dt_projs_bias = nn.Parameter(
            torch.stack([_dt_bias_init(d_inner, dt_min, dt_max, dt_init_floor) for _ in range(K)])
        )
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(K * d_inner, 1)  # (K*d_inner, N)
        self.A_logs = nn.Parameter(torch.log(A))
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()

    def scan(self, x: Tensor) -> Tensor:
        """The four-direction selective scan on a feature map.

        Args:
            x: ``(B, d_inner, H, W)`` (after the depthwise conv + SiLU).

        Returns:
            ``(B, d_inner, H * W)`` merged output, row-major.
        """
        B, D, H, W = x.shape
        K, N, R, L = self.K, self.d_state, self.dt_rank, H * W
        xs = cross_scan(x)  # (B, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)  # (B, K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)  # (B, K, R, L), (B, K, N, L) x2
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)  # (B, K, D, L)
        scan = selective_scan_fn if self.scan_impl == "fast" else selective_scan_ref
        y = scan(
            xs.reshape(B, K * D, L).float(),
            dts.reshape(B, K * D, L).float(),
            -torch.exp(self.A_logs.float()),  # (K*D, N)
            Bs.float().contiguous(),  # (B, K, N, L): group k drives channels k*D..(k+1)*D
            Cs.float().contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
        )  # (B, K*D, L)
        return cross_merge(y.reshape(B, K, D, L), H, W)  # (B, D, L)

    def forward(self, x: Tensor) -> Tensor:
        """Apply SS2D.

        Args:
            x: ``(B, H, W, C)`` channels-last.

        Returns:
            ``(B, H, W, C)``.
        """
        B, H, W, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d_inner) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, d_inner, H, W)
        y = self.scan(x)  # (B, d_inner, L)
        y = y.transpose(1, 2).reshape(B, H, W, self.d_inner).to(z.dtype)  # (B, H, W, d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))  # (B, H, W, C)


class VSSBlock(nn.Module):
    """Visual state-space block without MLP (VMamba v0 / VM-UNet): ``x + DropPath(SS2D(LN(x)))``.

    Args:
        hidden_dim: width ``C``. drop_path: stochastic depth probability.
        norm_layer: normalisation factory (LayerNorm, eps 1e-5 as in VM-UNet).
        attn_drop_rate: dropout inside SS2D. d_state: SSM state size.
        scan_impl: forwarded to :class:`SS2D`.

    Parameter names: ``ln_1``, ``self_attention`` (the :class:`SS2D`).
    """

    def __init__(
        self,
        hidden_dim: int,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        attn_drop_rate: float = 0.0,
        d_state: int = 16,
        scan_impl: ScanImpl = "fast",
    ) -> None:
        super().__init__()
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, dropout=attn_drop_rate, scan_impl=scan_impl)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, H, W, C)
        return x + self.drop_path(self.self_attention(self.ln_1(x)))  # (B, H, W, C)
