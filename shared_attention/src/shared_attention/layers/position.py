"""Positional encodings: rotary, 1D/2D sinusoidal and scaled sinusoidal.

* Rotary position embedding, "RoFormer: Enhanced Transformer with Rotary Position Embedding"
  (Su et al., 2021), eq. 34: feature pairs ``(x_{2i}, x_{2i+1})`` at position ``m`` are rotated by
  the angle ``m * theta_i`` with ``theta_i = base^(-2i/d)``, so that ``<R_m q, R_n k>`` depends on
  ``m - n`` only.
* 1D sinusoidal encoding, "Attention Is All You Need" (Vaswani et al., 2017), sec. 3.5::

      PE(pos, 2i) = sin(pos / base^(2i/d)),  PE(pos, 2i+1) = cos(pos / base^(2i/d))

* 2D sin-cos encoding of MAE (He et al., 2022) / MoCo v3 (Chen et al., 2021): half of the
  channels encode the column (x), half the row (y), each with a 1D ``[sin | cos]`` encoding.
* Scaled sinusoidal embedding of FLASH, "Transformer Quality in Linear Time" (Hua et al., 2022),
  used by MossFormer: ``[sin | cos]`` encoding multiplied by a learned scalar initialised to
  ``d^-0.5``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "RotaryEmbedding",
    "ScaledSinusoidalEmbedding",
    "apply_rotary",
    "sinusoidal_1d",
    "sinusoidal_2d",
]


def _inverse_frequencies(dim: int, base: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``base^(-2i/dim)`` for ``i in [0, dim/2)``, shape ``(dim // 2,)``."""
    exponent = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return (1.0 / base**exponent).to(dtype)


def _sinusoid(positions: Tensor, inv_freq: Tensor, interleaved: bool) -> Tensor:
    """Sin/cos table of ``positions (L,)`` and ``inv_freq (F,)``.

    Returns ``(L, 2F)``: ``[sin_0, cos_0, sin_1, cos_1, ...]`` when ``interleaved`` else
    ``[sin_0..sin_{F-1}, cos_0..cos_{F-1}]``.
    """
    angles = positions[:, None] * inv_freq[None, :]  # (L, F)
    if interleaved:
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (L, 2F)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (L, 2F)


def sinusoidal_1d(
    length: int,
    dim: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    interleaved: bool = True,
) -> Tensor:
    """Fixed 1D sinusoidal positional encoding, Vaswani et al. (2017) sec. 3.5.

    ``PE[p, 2i] = sin(p * base^(-2i/dim))`` and ``PE[p, 2i+1] = cos(p * base^(-2i/dim))``.
    Angles are computed in float64 and cast to ``dtype``.

    Args:
        length: Number of positions ``L`` (positions ``0 .. L-1``).
        dim: Encoding width (even).
        base: Frequency base.
        device: Device of the result.
        dtype: Dtype of the result (default ``torch.get_default_dtype()``).
        interleaved: ``True``: sin at even, cos at odd indices (the paper). ``False``: all sines
            then all cosines (``[sin | cos]``, the FLASH / Transformer-XL layout).

    Returns:
        ``(L, dim)`` encoding.
    """
    if dim % 2 != 0:
        raise ValueError(f"dim must be even, got {dim}")
    positions = torch.arange(length, dtype=torch.float64, device=device)
    inv_freq = _inverse_frequencies(dim, base, torch.float64).to(device)
    pe = _sinusoid(positions, inv_freq, interleaved)  # (L, dim)
    return pe.to(dtype if dtype is not None else torch.get_default_dtype())


def sinusoidal_2d(
    h: int,
    w: int,
    dim: int,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Fixed 2D sin-cos positional encoding (MAE / MoCo v3 layout).

    Token ``n = y * w + x`` (row-major over an ``h x w`` grid) gets, with ``D = dim // 4`` and
    ``omega_k = temperature^(-k / D)`` for ``k in [0, D)``::

        [sin(x * omega) | cos(x * omega) | sin(y * omega) | cos(y * omega)]

    i.e. channels ``[0, D)`` are ``sin(x)``, ``[D, 2D)`` ``cos(x)``, ``[2D, 3D)`` ``sin(y)`` and
    ``[3D, 4D)`` ``cos(y)``. This equals MAE's ``get_2d_sincos_pos_embed`` (without the class
    token), whose first half encodes the column index.

    Args:
        h: Grid height (rows, ``y``).
        w: Grid width (columns, ``x``).
        dim: Encoding width, a multiple of 4.
        temperature: Frequency base.
        device: Device of the result.
        dtype: Dtype of the result (default ``torch.get_default_dtype()``).

    Returns:
        ``(h * w, dim)`` encoding.
    """
    if dim % 4 != 0:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** -(torch.arange(quarter, dtype=torch.float64, device=device) / quarter)  # (D,)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )  # (h, w) each
    emb_x = _sinusoid(xs.reshape(-1), omega, interleaved=False)  # (h*w, 2D)
    emb_y = _sinusoid(ys.reshape(-1), omega, interleaved=False)  # (h*w, 2D)
    pe = torch.cat((emb_x, emb_y), dim=-1)  # (h*w, dim)
    return pe.to(dtype if dtype is not None else torch.get_default_dtype())


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = True) -> Tensor:
    """Rotate feature pairs of ``x`` by precomputed angles (RoFormer eq. 34).

    The first ``rot_dim = 2 * cos.shape[-1]`` features of the last axis are rotated; the rest
    pass through unchanged (partial rotary). For pair ``(a, b)`` with angle ``t``::

        (a, b) -> (a cos t - b sin t,  b cos t + a sin t)

    Args:
        x: ``(..., L, D)`` with ``D >= rot_dim``.
        cos: ``cos`` of the per-pair angles, ``(..., L, rot_dim // 2)`` broadcastable against ``x``.
        sin: ``sin`` of the same angles, same shape as ``cos``.
        interleaved: Pairs are ``(0, 1), (2, 3), ...`` (RoFormer, rotary-embedding-torch) when
            ``True``; ``(i, i + rot_dim/2)`` (GPT-NeoX half split) when ``False``.

    Returns:
        Tensor like ``x`` (same shape and dtype).
    """
    half = cos.shape[-1]
    rot_dim = 2 * half
    if x.shape[-1] < rot_dim:
        raise ValueError(f"cannot rotate {rot_dim} features of a tensor with last dim {x.shape[-1]}")
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    if interleaved:
        pairs = x_rot.unflatten(-1, (half, 2))  # (..., L, rot_dim/2, 2)
        a, b = pairs[..., 0], pairs[..., 1]  # (..., L, rot_dim/2)
    else:
        a, b = x_rot[..., :half], x_rot[..., half:]  # (..., L, rot_dim/2)
    ra = a * cos - b * sin  # (..., L, rot_dim/2)
    rb = b * cos + a * sin  # (..., L, rot_dim/2)
    # (..., L, rot_dim)
    rotated = torch.stack((ra, rb), dim=-1).flatten(-2) if interleaved else torch.cat((ra, rb), dim=-1)
    return torch.cat((rotated.to(x.dtype), x_pass), dim=-1)  # (..., L, D)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, Su et al. (2021) eq. 34.

    Attributes:
        freqs: Persistent, non-trainable buffer ``(dim // 2,)`` with ``base^(-2i/dim)`` (same name
            and values as ``rotary-embedding-torch``'s ``freqs``, so such checkpoints load).

    Args:
        dim: Number of rotated features (even); features beyond ``dim`` are left untouched.
        base: Frequency base ``theta``.
        interleaved: Rotate pairs ``(0, 1), (2, 3), ...`` (``True``, RoFormer / lucidrains) or
            ``(i, i + dim/2)`` (``False``, GPT-NeoX).
    """

    freqs: Tensor

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = True) -> None:
        super().__init__()
        if dim <= 0 or dim % 2 != 0:
            raise ValueError(f"rotary dim must be a positive even number, got {dim}")
        self.dim = dim
        self.base = base
        self.interleaved = interleaved
        self.register_buffer("freqs", _inverse_frequencies(dim, base), persistent=True)

    def cos_sin(
        self, seq_len: int, offset: int = 0, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Float32 ``cos`` and ``sin`` of the angles of positions ``offset .. offset+seq_len-1``.

        Args:
            seq_len: Number of positions ``L``.
            offset: First position (e.g. the cache length during incremental decoding).
            device: Device of the result (default: that of ``freqs``).

        Returns:
            ``(cos, sin)``, each ``(L, dim // 2)``.
        """
        freqs = self.freqs.float()
        if device is not None:
            freqs = freqs.to(device)
        positions = torch.arange(offset, offset + seq_len, device=freqs.device, dtype=torch.float32)
        angles = positions[:, None] * freqs[None, :]  # (L, dim/2)
        return angles.cos(), angles.sin()

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate queries or keys.

        Args:
            x: ``(..., L, D)`` with ``D >= dim`` (e.g. ``(B, heads, L, head_dim)``).
            offset: Position of the first element along ``L``.

        Returns:
            Tensor like ``x`` with the first ``dim`` features rotated.
        """
        cos, sin = self.cos_sin(x.shape[-2], offset=offset, device=x.device)  # (L, dim/2)
        return apply_rotary(x, cos, sin, interleaved=self.interleaved)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Alias of :meth:`rotate`."""
        return self.rotate(x, offset=offset)


class ScaledSinusoidalEmbedding(nn.Module):
    """Sinusoidal positions times a learned scalar (FLASH / MossFormer ``ScaledSinuEmbedding``).

    ``emb[p] = scale * [sin(p * f) | cos(p * f)]`` with ``f = base^(-2i/dim)`` and ``scale``
    initialised to ``dim ** -0.5``.

    Attributes:
        scale: Learned scalar parameter ``(1,)``.
        inv_freq: Persistent buffer ``(dim // 2,)`` (name as in FLASH, so checkpoints load).

    Args:
        dim: Embedding width (even).
        base: Frequency base.
        interleaved: ``False`` (default, FLASH layout) gives ``[sin | cos]``; ``True`` interleaves
            sin/cos as in :func:`sinusoidal_1d`.
    """

    inv_freq: Tensor

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"dim must be even, got {dim}")
        self.dim = dim
        self.interleaved = interleaved
        self.scale = nn.Parameter(torch.full((1,), dim**-0.5))
        self.register_buffer("inv_freq", _inverse_frequencies(dim, base), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        """Positions for a sequence.

        Args:
            x: ``(B, L, D)``; only its length, device and dtype are used.

        Returns:
            ``(L, dim)`` embedding (dtype of ``x`` when floating), to be added to ``x``.
        """
        L = x.shape[1]
        positions = torch.arange(L, device=x.device, dtype=torch.float32)  # (L,)
        emb = _sinusoid(positions, self.inv_freq.float(), self.interleaved)  # (L, dim)
        emb = emb * self.scale  # (L, dim)
        return emb.to(x.dtype) if x.is_floating_point() else emb
