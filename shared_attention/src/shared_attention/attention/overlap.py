"""Overlapping cross-attention (OCA / OCAB) of HAT.

Implements the overlapping cross-attention block of "Activating More Pixels in Image
Super-Resolution Transformer" (HAT; Chen et al., CVPR 2023), sec. 3.3 ("Overlapping Cross-Attention
Block"). Queries come from non-overlapping ``M x M`` windows, keys and values from larger
overlapping ``Mo x Mo`` windows centred on the query windows, with

    Mo = (1 + gamma) * M   (code: ``int(M * overlap_ratio) + M``)

and attention per window as in the paper's OCA equation (same form as Swin eq. 4)::

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V,   Q: (M^2, d), K, V: (Mo^2, d), B: (M^2, Mo^2)

``B`` is gathered from a learned ``((M + Mo - 1)^2, heads)`` table by
:func:`~shared_attention.attention.window.relative_position_index` with a larger key window (that
function carries HAT's index convention, so official tables load unchanged).

The overlapping key/value windows are taken with ``unfold`` (kernel ``Mo``, stride ``M``, zero
padding ``(Mo - M) / 2``) on the ``[k | v]`` channels of a single ``qkv`` projection, exactly as the
official code does; there is no attention mask, and zero-padded keys take part in the softmax. When
``Mo - M`` is odd (official default window 7) the official unfold yields one window too few per axis
and fails; here the extra zero row/column goes to the bottom/right instead.

State-dict names match the official ``OCAB`` (``norm1``, ``qkv``, ``proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``, ``relative_position_bias_table``), plus the persistent long buffer
``relative_position_index`` ``(M^2, Mo^2)``. The official model keeps that index once at the top
level (``relative_position_index_OCA``) and passes it to every block as ``rpi``; :meth:`forward`
accepts it the same way, and a model that follows the official layout can make the per-block buffer
non-persistent (re-register it with ``persistent=False``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_attention.attention.multihead import biased_attention, scaled_dot_product
from shared_attention.attention.window import (
    _check_divisible,
    _gather_bias,
    _table_size,
    cached_bias,
    relative_position_index,
    window_partition,
    window_reverse,
)
from shared_attention.layers.mlp import Mlp

__all__ = ["OCAB", "OverlappingCrossAttention", "overlap_window_size"]


def overlap_window_size(window_size: int, overlap_ratio: float) -> int:
    """Key/value window of OCA: ``int(window_size * overlap_ratio) + window_size`` (official rounding).

    Args:
        window_size: Query window ``M``.
        overlap_ratio: Overlap ratio ``gamma >= 0`` (HAT uses 0.5: 16 -> 24).

    Returns:
        The overlapping window size ``Mo``.
    """
    if overlap_ratio < 0:
        raise ValueError(f"overlap_ratio must be >= 0, got {overlap_ratio}")
    return int(window_size * overlap_ratio) + window_size


class OverlappingCrossAttention(nn.Module):
    """HAT's overlapping cross-attention block (OCAB), Chen et al. 2023, sec. 3.3.

    ``x -> x + proj(OCA(norm1(x)))`` then ``x -> x + mlp(norm2(x))``, where OCA attends from each
    ``M x M`` query window to the ``Mo x Mo`` overlapping window around it (see module docstring).

    Attributes:
        relative_position_bias_table: Parameter ``((M + Mo - 1)^2, num_heads)``, trunc-normal std 0.02.
        relative_position_index: Persistent long buffer ``(M^2, Mo^2)``.

    With ``overlap_ratio`` giving ``Mo == M`` (e.g. 0) the index falls back to Swin's layout of the
    table (see :func:`~shared_attention.attention.window.relative_position_index`), a row permutation
    of what official HAT would use; HAT's published models all use ``Mo > M``.

    Args:
        dim: Channel width ``C``.
        window_size: Query window ``M`` (square, as in HAT).
        overlap_ratio: ``gamma``; keys/values come from windows of ``int(M * gamma) + M``.
        num_heads: Number of heads (``C`` must be divisible by it).
        qkv_bias: Bias in the ``qkv`` projection.
        qk_scale: Score scale; defaults to ``head_dim ** -0.5``.
        mlp_ratio: Hidden width of the MLP as a multiple of ``C`` (HAT: 2).
        norm_layer: Normalisation constructor called with ``C`` (``nn.LayerNorm``, eps 1e-5).
        act_layer: MLP activation (exact GELU as in HAT).
        use_sdpa: Attention through ``F.scaled_dot_product_attention`` (default) or, if ``False``, the
            explicit softmax path of :func:`~shared_attention.attention.multihead.scaled_dot_product`.

    Raises:
        ValueError: If ``dim`` is not divisible by ``num_heads``.
    """

    relative_position_index: Tensor

    def __init__(
        self,
        dim: int,
        window_size: int,
        overlap_ratio: float,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        mlp_ratio: float = 2.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.window_size = int(window_size)
        self.overlap_win_size = overlap_window_size(self.window_size, overlap_ratio)
        self.overlap_ratio = overlap_ratio
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.use_sdpa = use_sdpa
        ws, ows = self.window_size, self.overlap_win_size
        # zero padding of the key/value map: (Mo - M) / 2 on each side (official); when Mo - M is odd
        # (e.g. M = 7, gamma = 0.5, where the official unfold would give too few windows) the extra row
        # and column go to the bottom / right.
        self.padding = (ows - ws) // 2
        self.padding_hi = ows - ws - self.padding

        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        size = _table_size((ws, ws), (ows, ows))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(ws, ows), persistent=True)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, rpi: Tensor | None = None) -> Tensor:
        """Return the bias ``(num_heads, M^2, Mo^2)``.

        Args:
            rpi: Optional index ``(M^2, Mo^2)`` to use instead of the own buffer (official HAT passes
                its top-level ``relative_position_index_OCA``; negative entries wrap as in PyTorch
                indexing).
        """
        index = self.relative_position_index if rpi is None else rpi
        if not self.use_sdpa:  # the reference pattern gathers it every call, the official way
            return _gather_bias(self.relative_position_bias_table, index, reference=True)
        return cached_bias(self, self.relative_position_bias_table, index)  # reused in inference

    def attention(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor | None = None) -> Tensor:
        """The OCA branch alone: ``norm1``, ``qkv``, windowed cross-attention, window reverse (no ``proj``).

        Args:
            x: Tokens ``(B, H*W, C)`` in row-major order.
            x_size: ``(H, W)``, both multiples of the window size.
            rpi: Optional relative position index, see :meth:`relative_position_bias`.

        Returns:
            ``(B, H*W, C)`` attention output before the output projection.
        """
        H, W = x_size
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"got {L} tokens for x_size {x_size}")
        ws = self.window_size
        _check_divisible(H, W, (ws, ws))
        h, d = self.num_heads, self.head_dim

        qkv = self.qkv(self.norm1(x))  # (B, HW, 3C) laid out [q | k | v]
        q = qkv[..., :C].reshape(B, H, W, C)  # (B, H, W, C)
        q = window_partition(q, ws)  # (B*nW, M^2, C)
        Bw, Nq, _ = q.shape
        q = q.view(Bw, Nq, h, d).transpose(1, 2)  # (B*nW, h, M^2, d)

        if self.use_sdpa:
            k, v = self._strided_kv(qkv[..., C:], B, H, W, Bw)  # (B*nW, h, Mo^2, d)
            bias = self.relative_position_bias(rpi).to(q.dtype)  # (h, M^2, Mo^2), reused in inference
            out = biased_attention(q, k, v, bias, None, self.scale)  # (B*nW, h, M^2, d)
        else:  # the reference (official) pattern: unfold, bias gathered every call, explicit softmax
            k, v = self._unfold_kv(qkv[..., C:], B, H, W, Bw)  # (B*nW, h, Mo^2, d)
            bias = self.relative_position_bias(rpi).to(q.dtype)  # (h, M^2, Mo^2)
            out, _ = scaled_dot_product(
                q, k, v, attn_mask=bias.unsqueeze(0), scale=self.scale, need_weights=True, finite_mask=True
            )  # (B*nW, h, M^2, d)
        out = out.transpose(1, 2).reshape(Bw, Nq, C)  # (B*nW, M^2, C)
        return window_reverse(out, ws, H, W).reshape(B, H * W, C)  # (B, HW, C)

    def _strided_kv(self, kv_tokens: Tensor, B: int, H: int, W: int, Bw: int) -> tuple[Tensor, Tensor]:  # noqa: N803
        """Keys and values ``(B*nW, h, Mo^2, d)`` of every overlapping window, from ``(B, HW, 2C)`` tokens.

        Zero-pads the ``(B, H, W, 2C)`` map by ``(Mo - M) / 2`` (the official unfold padding; an odd extra row /
        column goes to the bottom / right), views every ``Mo x Mo`` window at stride ``M`` and lays them out
        head-major in one copy (fused SDPA kernels need ``head_dim`` innermost). Same values as
        :meth:`_unfold_kv` without its channels-first copy, ``im2col`` buffer and second rearranging copy.
        """
        ws, ows, h, d, C = self.window_size, self.overlap_win_size, self.num_heads, self.head_dim, self.dim
        lo, hi = self.padding, self.padding_hi
        kv = F.pad(kv_tokens.reshape(B, H, W, 2 * C), (0, 0, lo, hi, lo, hi))  # (B, Hp, Wp, 2C)
        n_h, n_w = (H + lo + hi - ows) // ws + 1, (W + lo + hi - ows) // ws + 1
        if B * n_h * n_w != Bw:
            raise ValueError(f"overlapping windows: {n_h * n_w} per image, window partition {Bw // B}")
        sb, sy, sx, _ = kv.stride()
        win = kv.as_strided(
            (B, n_h, n_w, ows, ows, 2, h, d), (sb, ws * sy, ws * sx, sy, sx, C, d, 1)
        )  # (B, nWh, nWw, Mo, Mo, 2, h, d)
        kv = win.permute(5, 0, 1, 2, 6, 3, 4, 7).reshape(2, Bw, h, ows * ows, d)  # (2, B*nW, h, Mo^2, d)
        return kv[0], kv[1]

    def _unfold_kv(self, kv_tokens: Tensor, B: int, H: int, W: int, Bw: int) -> tuple[Tensor, Tensor]:  # noqa: N803
        """:meth:`_strided_kv` the official way (``F.unfold`` on a channels-first copy, then a rearranging copy)."""
        ws, ows, h, d, C = self.window_size, self.overlap_win_size, self.num_heads, self.head_dim, self.dim
        kv = kv_tokens.transpose(1, 2).reshape(B, 2 * C, H, W)  # (B, 2C, H, W)
        lo, hi = self.padding, self.padding_hi
        if lo == hi:
            kv = F.unfold(kv, kernel_size=ows, stride=ws, padding=lo)  # (B, 2C*Mo^2, nW)
        else:
            kv = F.unfold(F.pad(kv, (lo, hi, lo, hi)), kernel_size=ows, stride=ws)  # (B, 2C*Mo^2, nW)
        nW = kv.shape[-1]
        if B * nW != Bw:
            raise ValueError(f"unfold gave {nW} windows per image, window partition {Bw // B}")
        kv = kv.view(B, 2, h, d, ows * ows, nW)  # (B, 2, h, d, Mo^2, nW)
        kv = kv.permute(1, 0, 5, 2, 4, 3).contiguous().view(2, Bw, h, ows * ows, d)  # (2, B*nW, h, Mo^2, d)
        return kv[0], kv[1]

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor | None = None) -> Tensor:
        """Apply the block.

        Args:
            x: Tokens ``(B, H*W, C)`` in row-major order.
            x_size: ``(H, W)``; both must be multiples of ``window_size`` (callers pad).
            rpi: Optional relative position index ``(M^2, Mo^2)`` replacing the own buffer (the
                official call convention ``ocab(x, x_size, rpi_oca)``); ``None`` uses the buffer.

        Returns:
            ``(B, H*W, C)``.
        """
        x = x + self.proj(self.attention(x, x_size, rpi))  # (B, HW, C)
        return x + self.mlp(self.norm2(x))  # (B, HW, C)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, window_size={self.window_size}, overlap_win_size={self.overlap_win_size}, "
            f"num_heads={self.num_heads}, use_sdpa={self.use_sdpa}"
        )


OCAB = OverlappingCrossAttention
"""Alias with the official class name."""
