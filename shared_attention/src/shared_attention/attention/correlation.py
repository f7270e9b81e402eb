"""Correlation attention with learnable RBF (Gaussian) target correlations: FOD's I2Correlation.

Implements "Focus the Discrepancy: Intra- and Inter-Correlation Learning for Image Anomaly Detection"
(Yao et al., ICCV 2023), sec. 3.3-3.4. Tokens live on an ``h x w`` patch grid (row-major, token
``n = row * w + col``). Every query token ``i`` and head gets a learnable pair of widths from its own input
``x_i`` (eq. 4 of the paper; the official parameterisation)::

    (s_1, s_2) = 3 ** (sigmoid(5 * W_sigma x_i) + 1e-5) - 1

and a 2D Gaussian *target* correlation over the key positions ``j``::

    T[i, j] = 1 / (2 pi s_1 s_2) * exp(-(row_i - row_j)^2 / (2 s_1^2) - (col_i - col_j)^2 / (2 s_2^2))

(index 0 of the width pairs with row distances, index 1 with column distances). The *correlation* is the
ordinary attention ``P = softmax(Q K^T / sqrt(d_head))``; FOD trains ``P`` towards / away from the row-normalised
target ``T / sum_j T`` (intra: self-attention; inter: cross-attention against reference features).

The target is separable, ``T[i, (r, c)] = coef_i * e_y[i, r] * e_x[i, c]``, so :func:`rbf_targets` builds it
from ``(L, h)`` and ``(L, w)`` factors with a single ``L x L`` write, and its row sums are products of the
factor sums (no ``L x L`` reduction). :func:`rbf_targets_naive` is the official formulation (per-head repeated
``L x L`` squared-distance maps), kept for tests and benchmarks. Distances are computed here, never loaded.

The official ``Attention2D`` computes ``out_projection(out)`` and discards it; :class:`I2CorrelationAttention`
reproduces that by default (``use_out_projection=False``) so official checkpoints give official numbers; set
``use_out_projection=True`` to apply the projection as the paper's equations intend.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from shared_attention.attention.multihead import scaled_dot_product

__all__ = [
    "CorrelationOutput",
    "I2CorrelationAttention",
    "grid_coordinates",
    "neighbourhood_mask",
    "rbf_sigma",
    "rbf_targets",
    "rbf_targets_naive",
    "squared_distance_maps",
]


def grid_coordinates(h: int, w: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Row and column index of every token of a row-major ``h x w`` grid, each ``(h * w,)`` float32."""
    idx = torch.arange(h * w, device=device)
    return (idx // w).float(), (idx % w).float()


def neighbourhood_mask(h: int, w: int, radius: int, device: torch.device | str | None = None) -> Tensor:
    """``(L, L)`` boolean attention mask of a row-major ``h x w`` grid (``True`` = may attend) that hides from
    every query its own ``(2 radius + 1)^2`` neighbourhood: key ``j`` is masked for query ``i`` when
    ``max(|row_i - row_j|, |col_i - col_j|) <= radius`` (the query itself included).

    UniAD's "neighbour masked attention" (You et al., NeurIPS 2022, sec. 3.3): a token cannot copy itself or
    its close neighbours, so a reconstruction must be predicted from context. Raises ``ValueError`` when the
    mask would hide every key of some query (the grid is not larger than the neighbourhood).
    """
    if radius < 0:
        raise ValueError(f"neighbourhood radius must be >= 0, got {radius}")
    if h <= 2 * radius + 1 and w <= 2 * radius + 1:
        raise ValueError(f"a radius-{radius} neighbourhood covers the whole {h}x{w} grid: nothing left to attend")
    rows, cols = grid_coordinates(h, w, device)
    near = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)
    return ~near  # (L, L)


def squared_distance_maps(
    h: int, w: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(dist_y, dist_x)``, each ``(L, L)`` with ``L = h * w``: squared row / column differences of token pairs."""
    rows, cols = grid_coordinates(h, w, device)
    dist_y = (rows[:, None] - rows[None, :]).square().to(dtype)  # (L, L)
    dist_x = (cols[:, None] - cols[None, :]).square().to(dtype)  # (L, L)
    return dist_y, dist_x


def rbf_sigma(raw: Tensor) -> Tensor:
    """Maps raw width logits to the widths ``3 ** (sigmoid(5 * raw) + 1e-5) - 1`` (official parameterisation).

    The result lies in ``(~1.1e-5, ~2)``: a sharp peak on the token itself up to a broad neighbourhood. Always
    computed in float32 (also under autocast): in bfloat16 ``3 ** 1e-5`` rounds to 1, the width to 0 and the
    target to ``0 / 0``.
    """
    with torch.autocast(raw.device.type, enabled=False):
        return torch.pow(3.0, torch.sigmoid(5.0 * raw.float()) + 1e-5) - 1.0  # (..., 2) float32


def rbf_targets_naive(sigma: Tensor, dist_y: Tensor, dist_x: Tensor) -> Tensor:
    """The official target formula on repeated per-head ``L x S`` distance maps (reference path).

    Args:
        sigma: ``(B, H, L, 2)`` widths (after :func:`rbf_sigma`).
        dist_y / dist_x: ``(L, S)`` squared row / column distances.

    Returns:
        ``(B, H, L, S)`` un-normalised targets.
    """
    b, heads = sigma.shape[:2]
    dy = dist_y[None, None].repeat(b, heads, 1, 1)  # (B, H, L, S)
    dx = dist_x[None, None].repeat(b, heads, 1, 1)  # (B, H, L, S)
    s1 = sigma[..., 0:1]  # (B, H, L, 1)
    s2 = sigma[..., 1:2]
    return 1.0 / (2 * math.pi * s1 * s2) * torch.exp(-dy / (2 * s1**2) - dx / (2 * s2**2))


def rbf_targets(sigma: Tensor, grid: tuple[int, int], normalize: bool = True) -> Tensor:
    """Gaussian target correlations of every query token over the same ``h x w`` grid (separable fast path).

    Args:
        sigma: ``(B, H, L, 2)`` widths (after :func:`rbf_sigma`), ``L = h * w``.
        grid: ``(h, w)``.
        normalize: divide each row by its sum (the distribution the losses compare with); otherwise return
            the official un-normalised density ``1 / (2 pi s1 s2) * exp(...)``.

    Returns:
        ``(B, H, L, L)`` targets.
    """
    h, w = grid
    b, heads, n, _ = sigma.shape
    if n != h * w:
        raise ValueError(f"rbf_targets: {n} tokens do not fill a {h}x{w} grid")
    rows, cols = grid_coordinates(h, w, sigma.device)
    ar_h = torch.arange(h, device=sigma.device, dtype=torch.float32)
    ar_w = torch.arange(w, device=sigma.device, dtype=torch.float32)
    dy = (rows[:, None] - ar_h[None, :]).square()  # (L, h)
    dx = (cols[:, None] - ar_w[None, :]).square()  # (L, w)
    s1 = sigma[..., 0:1].float()  # (B, H, L, 1)
    s2 = sigma[..., 1:2].float()
    ey = torch.exp(-dy / (2 * s1**2))  # (B, H, L, h)
    ex = torch.exp(-dx / (2 * s2**2))  # (B, H, L, w)
    if normalize:
        ey = ey / ey.sum(-1, keepdim=True)  # the row sum of T factorises; the token itself keeps it > 0
        ex = ex / ex.sum(-1, keepdim=True)
    else:
        ey = ey / (2 * math.pi * s1 * s2)
    out = ey[..., :, None] * ex[..., None, :]  # (B, H, L, h, w)
    return out.reshape(b, heads, n, h * w).to(sigma.dtype)


class CorrelationOutput(NamedTuple):
    """What :class:`I2CorrelationAttention` returns.

    Attributes:
        out: ``(B, L, d_model)`` attention output.
        attn: ``(B, H, L, S)`` attention probabilities (the learned correlation), or ``None``.
        target: ``(B, H, L, S)`` RBF target correlation (row-normalised or official density), or ``None``.
    """

    out: Tensor
    attn: Tensor | None
    target: Tensor | None


class I2CorrelationAttention(nn.Module):
    """Multi-head (self or cross) attention that also returns per-token/per-head RBF target correlations.

    FOD's ``Attention2D`` (Yao et al. 2023, eq. 3-4): intra-correlation when ``context is None`` (keys/values
    from the queries' own tokens), inter-correlation with ``context`` = embedded reference tokens. The widths
    come from the *raw* query input through ``sigma_projection``; columns ``[2h, 2h+1]`` belong to head ``h``.

    Args:
        d_model: token width (divisible by ``n_heads``).
        n_heads: number of heads.
        use_out_projection: apply ``out_projection`` to the output. ``False`` (default) reproduces the
            official code, which computes the projection and discards it (the parameters still exist so
            official checkpoints load strictly).
        exclude_radius: in self-attention (no ``context``), hide from every query its own
            ``(2 r + 1)^2`` neighbourhood, itself included (:func:`neighbourhood_mask`; 0: off, the official
            behaviour). A training choice without parameters: the state dict is the same either way.

    Parameter names follow the official module: ``query_projection``, ``key_projection``, ``value_projection``,
    ``sigma_projection``, ``out_projection``.
    """

    def __init__(self, d_model: int, n_heads: int, use_out_projection: bool = False, exclude_radius: int = 0) -> None:
        super().__init__()
        if exclude_radius < 0:
            raise ValueError(f"exclude_radius must be >= 0, got {exclude_radius}")
        self.exclude_radius = exclude_radius
        self._masks: dict[tuple[int, int, str], Tensor] = {}
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.use_out_projection = use_out_projection
        self.query_projection = nn.Linear(d_model, d_model)
        self.key_projection = nn.Linear(d_model, d_model)
        self.value_projection = nn.Linear(d_model, d_model)
        self.sigma_projection = nn.Linear(d_model, 2 * n_heads)
        self.out_projection = nn.Linear(d_model, d_model)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, N, head_dim)

    def mask(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """The cached ``(L, L)`` :func:`neighbourhood_mask` of ``grid`` for :attr:`exclude_radius`."""
        key = (grid[0], grid[1], str(device))
        if key not in self._masks:
            self._masks[key] = neighbourhood_mask(grid[0], grid[1], self.exclude_radius, device)
        return self._masks[key]

    def sigma(self, x: Tensor) -> Tensor:
        """``(B, L, d_model)`` raw queries -> ``(B, H, L, 2)`` RBF widths."""
        b, n, _ = x.shape
        raw = self.sigma_projection(x).view(b, n, self.n_heads, 2).transpose(1, 2)  # (B, H, L, 2)
        return rbf_sigma(raw)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        grid: tuple[int, int] | None = None,
        need_maps: bool = True,
        normalize_target: bool = True,
        naive_target: bool = False,
    ) -> CorrelationOutput:
        """Attention of ``x`` over itself or over ``context``, with its RBF target.

        Args:
            x: ``(B, L, d_model)`` query tokens on the ``grid``.
            context: ``(B or 1, L, d_model)`` key/value tokens on the same grid (cross-attention); a batch of
                one is shared by every query (reference features), its projections computed once.
            grid: ``(h, w)`` with ``h * w = L`` (default: a square grid).
            need_maps: return attention probabilities and targets; ``False`` uses the fused attention kernel.
            normalize_target: row-normalise the target (otherwise the official un-normalised density).
            naive_target: the reference route (tests / benchmarks): the official repeated-distance-map target
                formula and the core's explicit attention path.

        Returns:
            :class:`CorrelationOutput`.
        """
        b, n, _ = x.shape
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} tokens are not a square grid: pass grid=(h, w)")
            grid = (side, side)
        src = x if context is None else context
        if src.shape[1] != n:
            raise ValueError(f"context has {src.shape[1]} tokens, queries {n}: both must cover the same grid")
        q = self._heads(self.query_projection(x))  # (B, H, L, hd)
        k = self._heads(self.key_projection(src))  # (Bc, H, L, hd)
        v = self._heads(self.value_projection(src))  # (Bc, H, L, hd)
        if k.shape[0] != b:
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        scale = 1.0 / math.sqrt(self.head_dim)
        allowed = self.mask(grid, x.device) if context is None and self.exclude_radius > 0 else None  # (L, L)
        attn: Tensor | None
        if need_maps and not naive_target:
            # maps needed: one fused softmax over the scaled scores, then attn @ v
            scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, L, L)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            attn = torch.softmax(scores, dim=-1)  # (B, H, L, L)
            out = attn @ v  # (B, H, L, hd)
        else:  # fused SDPA without maps; the core's explicit path on the naive (official-style) route
            out, attn = scaled_dot_product(
                q, k, v, attn_mask=allowed, scale=scale, need_weights=need_maps
            )  # (B, H, L, hd)
        out = out.transpose(1, 2).reshape(b, n, self.d_model)  # (B, L, d_model)
        if self.use_out_projection:
            out = self.out_projection(out)
        target = None
        if need_maps:
            sigma = self.sigma(x)  # (B, H, L, 2)
            if naive_target:
                dist_y, dist_x = squared_distance_maps(*grid, device=x.device)
                target = rbf_targets_naive(sigma, dist_y, dist_x)
                if normalize_target:
                    target = target / target.sum(-1, keepdim=True)
            else:
                target = rbf_targets(sigma, grid, normalize=normalize_target)
        return CorrelationOutput(out, attn, target)
