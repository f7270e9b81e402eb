"""Window attention with relative position bias and shifted windows.

Implements "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
(Liu et al., 2021), eq. 4::

    Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V

where ``B`` is gathered from a learned table ``B_hat`` of ``(2M-1) x (2M-1)`` entries per head by
the relative coordinates of query and key inside an ``M x M`` window (sec. 3.3), and the shifted
window partitioning of sec. 3.2 (cyclic shift by ``floor(M/2)`` with an attention mask that keeps
tokens from attending across the seams of the cyclic shift).

:class:`RelativePositionBias` also supports query windows attending to a larger key window, as in
HAT's overlapping cross-attention block (Chen et al., 2023, "Activating More Pixels in Image
Super-Resolution Transformer", sec. 3.3), where the table has ``(Mq + Mk - 1)^2`` entries per head.

State-dict names match the official Swin / HAT code: ``qkv``, ``proj``,
``relative_position_bias_table`` and the persistent long buffer ``relative_position_index``.

Spatial sizes must be multiples of the window size; callers pad (e.g. with ``F.pad`` on the
``(B, H, W, C)`` tensor) before :func:`window_partition` / :func:`shifted_window_attention` and
crop afterwards.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import torch
from torch import Tensor, nn

from shared_attention.attention.multihead import biased_attention, scaled_dot_product
from shared_attention.derived import derived_tensor, forget_derived

__all__ = [
    "RelativePositionBias",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_attention",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

Size2 = int | tuple[int, int]


def _pair(x: Size2) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


def _check_divisible(height: int, width: int, window: tuple[int, int]) -> None:
    if height % window[0] != 0 or width % window[1] != 0:
        raise ValueError(
            f"spatial size ({height}, {width}) is not a multiple of the window size {window}; "
            "pad the input first"
        )


def window_partition(x: Tensor, window_size: Size2) -> Tensor:
    """Split a feature map into non-overlapping windows.

    Windows are ordered batch-major, then window row, then window column; tokens inside a window
    are in row-major order.

    Args:
        x: Feature map ``(B, H, W, C)``.
        window_size: Window size ``ws`` or ``(wh, ww)``.

    Returns:
        Windows ``(B * nW, wh * ww, C)`` with ``nW = (H / wh) * (W / ww)``.

    Raises:
        ValueError: If ``H`` or ``W`` is not a multiple of the window size.
    """
    wh, ww = _pair(window_size)
    B, H, W, C = x.shape
    _check_divisible(H, W, (wh, ww))
    x = x.view(B, H // wh, wh, W // ww, ww, C)  # (B, nH, wh, nW_w, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nH, nW_w, wh, ww, C)
    return x.reshape(-1, wh * ww, C)  # (B*nW, wh*ww, C)


def window_reverse(windows: Tensor, window_size: Size2, H: int, W: int) -> Tensor:  # noqa: N803
    """Inverse of :func:`window_partition`.

    Args:
        windows: ``(B * nW, wh * ww, C)`` (or ``(B * nW, wh, ww, C)``).
        window_size: Window size ``ws`` or ``(wh, ww)``.
        H: Height of the feature map.
        W: Width of the feature map.

    Returns:
        Feature map ``(B, H, W, C)``.

    Raises:
        ValueError: If ``H`` or ``W`` is not a multiple of the window size, or the number of
            windows does not match.
    """
    wh, ww = _pair(window_size)
    _check_divisible(H, W, (wh, ww))
    n_h, n_w = H // wh, W // ww
    if windows.shape[0] % (n_h * n_w) != 0:
        raise ValueError(f"{windows.shape[0]} windows cannot tile a batch of ({H}, {W}) maps")
    B = windows.shape[0] // (n_h * n_w)
    C = windows.shape[-1]
    x = windows.reshape(B, n_h, n_w, wh, ww, C)  # (B, nH, nW_w, wh, ww, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nH, wh, nW_w, ww, C)
    return x.reshape(B, H, W, C)  # (B, H, W, C)


def relative_position_index(
    window_size: Size2, key_window_size: Size2 | None = None, device: torch.device | None = None
) -> Tensor:
    """Index of every (query, key) pair of a window into a relative position bias table.

    Equal windows (Swin, sec. 3.3): for query ``i`` at ``(yi, xi)`` and key ``j`` at ``(yj, xj)``
    in a ``(Wh, Ww)`` window::

        index[i, j] = (yi - yj + Wh - 1) * (2 * Ww - 1) + (xi - xj + Ww - 1)

    Larger key window ``(Kh, Kw)`` (HAT OCAB convention, so official checkpoints load)::

        index[i, j] = ((yj - yi + Wh - Kh + 1) * (Ww + Kw - 1) + (xj - xi + Ww - Kw + 1)) mod T

    with ``T = (Wh + Kh - 1) * (Ww + Kw - 1)`` the table size. HAT's raw formula yields negative
    entries that index its table from the end; taking them modulo ``T`` selects the same rows
    and keeps the index non-negative.

    Args:
        window_size: Query window ``M`` or ``(Wh, Ww)``.
        key_window_size: Key window ``(Kh, Kw)``; ``None`` means the query window.
        device: Device of the result.

    Returns:
        Long tensor ``(Wh * Ww, Kh * Kw)`` with entries in ``[0, T)``.
    """
    wh, ww = _pair(window_size)
    kh, kw = _pair(key_window_size) if key_window_size is not None else (wh, ww)
    qy, qx = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(kh, device=device), torch.arange(kw, device=device), indexing="ij")
    qy, qx = qy.reshape(-1, 1), qx.reshape(-1, 1)  # (Nq, 1)
    ky, kx = ky.reshape(1, -1), kx.reshape(1, -1)  # (1, Nk)
    if (kh, kw) == (wh, ww):
        return (qy - ky + wh - 1) * (2 * ww - 1) + (qx - kx + ww - 1)  # (Nq, Nk)
    table = (wh + kh - 1) * (ww + kw - 1)
    index = (ky - qy + wh - kh + 1) * (ww + kw - 1) + (kx - qx + ww - kw + 1)  # (Nq, Nk)
    return torch.remainder(index, table)


def _table_size(window_size: tuple[int, int], key_window_size: tuple[int, int]) -> int:
    return (window_size[0] + key_window_size[0] - 1) * (window_size[1] + key_window_size[1] - 1)


class _GatherBias(torch.autograd.Function):
    """``table[index]`` laid out ``(heads, Nq, Nk)``, with a scatter-add backward along the contiguous rows.

    The plain ``table[index].permute(2, 0, 1).contiguous()`` gathers rows of ``heads`` floats, copies them into
    head-major order, and its backward is an accumulating ``index_put_`` over a transposed gradient (5.7 ms per
    HAT-S block in a training step). Here the forward gathers from the ``(heads, T)`` transpose straight into
    head-major order and the backward is ``index_add_`` along each head's row (0.15-0.3 ms).
    """

    @staticmethod
    def forward(ctx: Any, table: Tensor, index: Tensor) -> Tensor:
        nq, nk = index.shape
        flat = index.reshape(-1)
        ctx.save_for_backward(flat)
        ctx.rows = table.shape[0]
        return table.t().contiguous().index_select(1, flat).view(table.shape[1], nq, nk)  # (heads, Nq, Nk)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None]:
        (flat,) = ctx.saved_tensors
        heads = grad.shape[0]
        g = grad.new_zeros(heads, ctx.rows).index_add_(1, flat, grad.reshape(heads, -1))  # (heads, T)
        return g.t().contiguous(), None


def _gather_bias(table: Tensor, index: Tensor, reference: bool = False) -> Tensor:
    """Gather ``(heads, Nq, Nk)`` bias from a ``(T, heads)`` table and an ``(Nq, Nk)`` index.

    Negative entries count from the end of the table (PyTorch indexing, official HAT's OCA index).
    ``reference=True``: the official code's pattern (advanced indexing, permute, copy; its backward an
    accumulating ``index_put_``), for the naive paths that stand in for it.
    """
    rows = table.shape[0]
    if reference:
        nq, nk = index.shape
        return table[index.reshape(-1)].view(nq, nk, -1).permute(2, 0, 1).contiguous()  # (heads, Nq, Nk)
    # no data-dependent branch (no host sync per call on a GPU, no graph break when compiled): entries below
    # -rows stay negative and index_select rejects them, as it rejects entries >= rows
    index = torch.where(index < 0, index + rows, index)
    return cast(Tensor, _GatherBias.apply(table, index))


def cached_bias(owner: nn.Module, table: Tensor, index: Tensor) -> Tensor:
    """``_gather_bias(table, index)`` ``(heads, Nq, Nk)``, kept on ``owner`` and reused while nothing changed.

    With gradients enabled on the table (training) it is gathered every call. Without (inference) it is kept by
    :func:`shared_attention.derived.derived_tensor` (refreshed when the table or index changes in place; after
    ``param.data`` writes call :func:`clear_bias_cache`; shared between calls, not to be modified in place).
    Saves the gather and its transposing copy on every call (3.5 MB for HAT's OCAB, 1.5 MB per window block).
    """
    if torch.is_grad_enabled() and table.requires_grad:
        return _gather_bias(table, index)
    return derived_tensor(owner, "_bias_cache", (table, index), lambda: _gather_bias(table.detach(), index))


def clear_bias_cache(module: nn.Module) -> None:
    """Forget every bias kept by :func:`cached_bias` in ``module`` and its children (after ``param.data`` writes)."""
    forget_derived(module, "_bias_cache")


class RelativePositionBias(nn.Module):
    """Learned relative position bias ``B`` of Swin eq. 4 (standalone module).

    Attributes:
        relative_position_bias_table: Parameter ``(T, num_heads)`` with
            ``T = (Wh + Kh - 1) * (Ww + Kw - 1)`` (``(2Wh-1)(2Ww-1)`` for equal windows), initialised
            with a truncated normal of std 0.02.
        relative_position_index: Persistent long buffer ``(Wh*Ww, Kh*Kw)``, see
            :func:`relative_position_index`.

    Args:
        window_size: Query window ``M`` or ``(Wh, Ww)``.
        num_heads: Number of heads.
        key_window_size: Key window ``(Kh, Kw)`` when keys come from a larger (overlapping)
            window, e.g. HAT's OCAB (query 16, key 24); ``None`` for the query window.
    """

    relative_position_index: Tensor

    def __init__(self, window_size: Size2, num_heads: int, key_window_size: Size2 | None = None) -> None:
        super().__init__()
        self.window_size = _pair(window_size)
        self.key_window_size = _pair(key_window_size) if key_window_size is not None else self.window_size
        self.num_heads = num_heads
        size = _table_size(self.window_size, self.key_window_size)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, num_heads))
        self.register_buffer(
            "relative_position_index",
            relative_position_index(self.window_size, self.key_window_size),
            persistent=True,
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self) -> Tensor:
        """Return the bias ``(num_heads, Wh*Ww, Kh*Kw)`` (reused without gradients, see :func:`cached_bias`)."""
        return cached_bias(self, self.relative_position_bias_table, self.relative_position_index)


@functools.lru_cache(maxsize=64)
def _shifted_window_mask_cached(
    H: int,  # noqa: N803
    W: int,  # noqa: N803
    window_size: tuple[int, int],
    shift_size: tuple[int, int],
    fill: float,
    device: torch.device,
) -> Tensor:
    wh, ww = window_size
    sh, sw = shift_size
    # Label every pixel of the (cyclically shifted) map by the region it came from: 3 bands per axis
    # (interior, last window minus shift, wrapped-around shift strip) -> up to 9 regions.
    row = torch.zeros(H, dtype=torch.long, device=device)
    col = torch.zeros(W, dtype=torch.long, device=device)
    if sh > 0:
        row[H - wh : H - sh] = 1
        row[H - sh :] = 2
    if sw > 0:
        col[W - ww : W - sw] = 1
        col[W - sw :] = 2
    labels = (row[:, None] * 3 + col[None, :]).view(1, H, W, 1)  # (1, H, W, 1)
    win = window_partition(labels, window_size).squeeze(-1)  # (nW, N)
    different = win[:, :, None] != win[:, None, :]  # (nW, N, N)
    mask = torch.zeros(different.shape, dtype=torch.float32, device=device)
    return mask.masked_fill_(different, fill)


def shifted_window_mask(
    H: int,  # noqa: N803 (Swin's H, W)
    W: int,  # noqa: N803
    window_size: Size2,
    shift_size: Size2,
    device: torch.device | str | None = None,
    fill: float = -100.0,
    cached: bool = True,
) -> Tensor:
    """Attention mask for shifted-window attention (Swin sec. 3.2, "efficient batch computation").

    After a cyclic shift by ``-shift_size`` a window can contain pixels from up to four regions
    that are not adjacent in the original map; pairs from different regions get ``fill``.

    The result is cached per ``(H, W, window_size, shift_size, fill, device)``: repeated calls
    return the same tensor object, which must therefore not be modified in place.

    Args:
        H: Height of the (padded) feature map, a multiple of the window height.
        W: Width of the (padded) feature map, a multiple of the window width.
        window_size: Window size ``ws`` or ``(wh, ww)``.
        shift_size: Shift ``s`` or ``(sh, sw)`` with ``0 <= s < ws``.
        device: Device of the mask (default CPU).
        fill: Additive value for cross-region pairs; ``-100.0`` as in the official Swin / HAT code
            (use ``float("-inf")`` for exact masking).
        cached: ``False`` builds a fresh tensor (benchmarks of the uncached path, callers that mutate it).

    Returns:
        Float32 mask ``(nW, wh*ww, wh*ww)`` with ``0`` for same-region pairs and ``fill`` otherwise.

    Raises:
        ValueError: If the size is not a multiple of the window or the shift is out of range.
    """
    ws = _pair(window_size)
    ss = _pair(shift_size)
    _check_divisible(H, W, ws)
    if not (0 <= ss[0] < ws[0] and 0 <= ss[1] < ws[1]):
        raise ValueError(f"shift_size {ss} must satisfy 0 <= shift < window_size {ws}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    build = _shifted_window_mask_cached if cached else _shifted_window_mask_cached.__wrapped__
    return build(H, W, ws, ss, float(fill), dev)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias, Swin eq. 4.

    State-dict names match the official Swin / HAT ``WindowAttention``: ``qkv``
    (``Linear(dim, 3*dim)``, output ``[q | k | v]`` head-major), ``proj``,
    ``relative_position_bias_table`` ``((2Wh-1)(2Ww-1), heads)`` and the persistent long buffer
    ``relative_position_index`` ``(Wh*Ww, Wh*Ww)``.

    Args:
        dim: Channel width ``C``.
        window_size: Window size ``M`` or ``(Wh, Ww)``.
        num_heads: Number of heads.
        qkv_bias: Bias in the ``qkv`` projection.
        qk_scale: Score scale; defaults to ``head_dim ** -0.5``.
        attn_drop: Dropout on the attention probabilities (training only).
        proj_drop: Dropout after ``proj``.
        use_sdpa: Use ``torch.nn.functional.scaled_dot_product_attention`` with the bias (+ mask)
            as an additive mask; ``False`` uses the explicit softmax path. Both give the same result.
    """

    relative_position_index: Tensor

    def __init__(
        self,
        dim: int,
        window_size: Size2,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.attn_drop_p = attn_drop
        self.use_sdpa = use_sdpa
        size = _table_size(self.window_size, self.window_size)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(size, num_heads))
        self.register_buffer(
            "relative_position_index", relative_position_index(self.window_size), persistent=True
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """Return the bias ``(num_heads, N, N)`` with ``N = Wh * Ww``.

        Without gradients (inference) the gathered bias is kept and reused until the table or index changes
        (in-place updates bump their version counters; ``load_state_dict`` copies in place), so a block that
        attends several window groups per call, or a model serving many requests, gathers it once. With
        ``use_sdpa=False`` (the reference pattern) it is gathered the official way on every call.
        """
        table, index = self.relative_position_bias_table, self.relative_position_index
        if not self.use_sdpa:  # the reference pattern gathers it every call, the official way
            return _gather_bias(table, index, reference=True)
        return cached_bias(self, table, index)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False, *, bias: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend within each window.

        Args:
            x: Windows ``(B * nW, N, C)`` with ``N = Wh * Ww`` (from :func:`window_partition`).
            mask: Optional additive mask ``(nW, N, N)`` (e.g. :func:`shifted_window_mask`);
                window ``i`` of the batch uses ``mask[i % nW]``. Entries may be ``-inf`` but no
                query may have all its keys masked (a token always sees itself in self-attention).
            need_weights: Also return the ``(B * nW, heads, N, N)`` attention probabilities.
            bias: This module's :meth:`relative_position_bias`, when the caller already has it (a block that
                attends several window groups in one call gathers it once).

        Returns:
            ``(B * nW, N, C)``, or ``(output, attn)`` when ``need_weights``.
        """
        B_, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B_, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B_, h, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B_, h, N, d)
        bias = (self.relative_position_bias() if bias is None else bias).to(q.dtype)  # (h, N, N)
        drop = self.attn_drop_p if self.training else 0.0
        if mask is not None and B_ % mask.shape[0] != 0:
            raise ValueError(f"batch of {B_} windows is not a multiple of nW={mask.shape[0]}")
        attn: Tensor | None = None
        if self.use_sdpa and not need_weights and drop == 0.0:
            out = biased_attention(q, k, v, bias, mask, self.scale)  # (B_, h, N, d); chunked in training
        else:
            if mask is None:
                attn_mask = bias.unsqueeze(0)  # (1, h, N, N)
            else:
                nW = mask.shape[0]
                # broadcast over a (B, nW, ...) view instead of materialising a (B_, h, N, N) mask
                attn_mask = bias.unsqueeze(0) + mask.to(q.dtype).unsqueeze(1)  # (nW, h, N, N)
                q, k, v = (t.reshape(B_ // nW, nW, h, N, d) for t in (q, k, v))  # (B, nW, h, N, d)
            out, attn = scaled_dot_product(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=drop,
                scale=self.scale,
                need_weights=need_weights or not self.use_sdpa,
                finite_mask=True,  # bias + Swin's -100 shift mask: no row is fully masked
            )  # (B_, h, N, d) or (B, nW, h, N, d)
        out = out.reshape(B_, h, N, d)
        if attn is not None:
            attn = attn.reshape(B_, h, N, N)
        out = out.transpose(1, 2).reshape(B_, N, C)  # (B_, N, C)
        out = self.proj_drop(self.proj(out))  # (B_, N, C)
        if need_weights:
            assert attn is not None
            return out, attn
        return out


@functools.lru_cache(maxsize=64)
def _shift_plan(
    batch: int, H: int, W: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device  # noqa: N803
) -> tuple[Tensor, Tensor, tuple[tuple[int, int, int], ...]]:
    """:func:`_build_shift_plan`, cached; built outside inference mode so that a plan first made during an
    ``inference_mode`` evaluation can be saved for backward by a later training step."""
    with torch.inference_mode(False), torch.no_grad():
        return _build_shift_plan(batch, H, W, window, shift, device)


def _build_shift_plan(
    batch: int, H: int, W: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device  # noqa: N803
) -> tuple[Tensor, Tensor, tuple[tuple[int, int, int], ...]]:
    """Cyclic shift, window partition and grouping by shift-mask pattern as one token permutation.

    Only the last window row and the last window column straddle the seams of the cyclic shift (the region labels
    of :func:`shifted_window_mask` are constant on every other window), so each window's mask is one of four:
    interior (all zeros), last column, last row, corner. The permutation puts the windows of the rolled map in
    that class order (batch inside a class, tokens row-major inside a window), so each class is one contiguous
    slice of windows sharing one ``(N, N)`` mask.

    Returns:
        ``gather`` ``(B H W,)``: slot ``t`` of the permuted windows takes token ``gather[t]`` of the ``(B H W, C)``
        map; ``scatter`` ``(B H W,)``: its inverse; per non-empty class ``(first window, end window,
        representative window of the mask or -1 for the interior)``.
    """
    wh, ww = window
    sh, sw = shift
    n_h, n_w = H // wh, W // ww
    i = torch.arange(n_h).repeat_interleave(n_w)  # (nW,) window row
    j = torch.arange(n_w).repeat(n_h)  # (nW,) window column
    cls = (i == n_h - 1).long() * 2 + (j == n_w - 1).long()  # (nW,) 0 interior, 1 last column, 2 last row, 3 corner
    order = torch.argsort(cls, stable=True)  # (nW,) windows in class order
    a = torch.arange(wh).view(1, wh, 1)
    c = torch.arange(ww).view(1, 1, ww)
    rows = (i[order].view(-1, 1, 1) * wh + a + sh) % H  # (nW, wh, 1) source row of each slot (rolled by -shift)
    cols = (j[order].view(-1, 1, 1) * ww + c + sw) % W  # (nW, 1, ww)
    src = (rows * W + cols).view(-1, wh * ww)  # (nW, N) position in one image, windows in class order
    groups, slots, start = [], [], 0
    for k in range(4):
        in_class = cls[order] == k  # (nW,)
        if not bool(in_class.any()):
            continue
        pos = src[in_class].reshape(-1)  # (n_k N,)
        slots += [pos + bi * H * W for bi in range(batch)]  # class k of image 0, of image 1, ...
        n = int(in_class.sum()) * batch
        groups.append((start, start + n, -1 if k == 0 else int(order[in_class][0])))
        start += n
    gather = torch.cat(slots)  # (B H W,)
    scatter = torch.empty_like(gather)
    scatter[gather] = torch.arange(gather.numel())
    return gather.to(device), scatter.to(device), tuple(groups)


def _grouped_shifted_attention(
    x: Tensor, attn: WindowAttention, mask: Tensor, shift: tuple[int, int]
) -> Tensor:
    """Shifted-window attention of ``(B, H, W, C)`` one mask class at a time (see :func:`_shift_plan`).

    One gather does the cyclic shift, the window partition and the class ordering (instead of two rolls, a
    partition copy and a per-class gather), one gather undoes them. Each class shares one ``(N, N)`` mask (none
    for the interior), so the fused kernel gets a mask broadcast over its windows instead of a per-window
    ``(B nW, heads, N, N)`` sum of bias and mask built on every call (25 MB per HAT-S block on a 64 x 64 map).
    Same numbers as the roll / partition / ``attn(windows, mask)`` / reverse / roll sequence.
    """
    B, H, W, C = x.shape
    ws = attn.window_size
    n = ws[0] * ws[1]
    gather, scatter, groups = _shift_plan(B, H, W, ws, shift, x.device)
    windows = x.reshape(B * H * W, C).index_select(0, gather).view(-1, n, C)  # (B nW, N, C) class-major
    bias = attn.relative_position_bias()  # (h, N, N) once for every class
    outs = [
        cast(Tensor, attn(windows[s:e], mask=None if rep < 0 else mask[rep : rep + 1], bias=bias))  # (n_k, N, C)
        for s, e, rep in groups
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)  # (B nW, N, C)
    return out.view(B * H * W, C).index_select(0, scatter).view(B, H, W, C)  # (B, H, W, C)


def shifted_window_attention(
    x: Tensor,
    attn: WindowAttention,
    window_size: Size2 | None = None,
    shift_size: Size2 = 0,
    fill: float = -100.0,
    mask: Tensor | None = None,
) -> Tensor:
    """(Shifted) window attention on a feature map, Swin sec. 3.2.

    Cyclic shift by ``-shift_size`` (``torch.roll``), window partition, window attention with the
    cached :func:`shifted_window_mask`, window reverse and roll back. With ``shift_size == 0`` this
    is plain W-MSA (no mask).

    ``H`` and ``W`` must be multiples of the window size: callers pad the map (and crop the
    result), as in the official Swin / HAT blocks.

    Args:
        x: Feature map ``(B, H, W, C)``.
        attn: The :class:`WindowAttention` to apply (its window size is used).
        window_size: Optional check: must equal ``attn.window_size`` when given.
        shift_size: Shift ``s`` or ``(sh, sw)``, ``0 <= s < window``; Swin uses ``window // 2`` on
            every other block.
        fill: Mask value for cross-region pairs (official code: ``-100.0``).
        mask: A precomputed shift mask ``(nW, N, N)`` to use instead of the cached one (ignored when
            not shifted), e.g. one mask shared by all blocks of a model or a freshly built one.

    Returns:
        ``(B, H, W, C)``.

    Raises:
        ValueError: If the sizes are not multiples of the window or ``window_size`` disagrees.
    """
    ws = attn.window_size
    if window_size is not None and _pair(window_size) != ws:
        raise ValueError(f"window_size {window_size} differs from attn.window_size {ws}")
    sh, sw = _pair(shift_size)
    B, H, W, C = x.shape
    _check_divisible(H, W, ws)
    shifted = sh > 0 or sw > 0
    if shifted:
        own = None
        if mask is None or (0 <= sh < ws[0] and 0 <= sw < ws[1]):  # a caller's mask may go with any shift
            own = shifted_window_mask(H, W, ws, (sh, sw), device=x.device, fill=fill)
        if attn.use_sdpa and own is not None and (mask is None or mask is own):
            # the core's own mask: its window classes are known
            return _grouped_shifted_attention(x, attn, own, (sh, sw))  # (B, H, W, C)
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))  # (B, H, W, C)
        mask = own if mask is None else mask
    else:
        mask = None
    windows = window_partition(x, ws)  # (B*nW, N, C)
    out = attn(windows, mask=mask)  # (B*nW, N, C)
    y = window_reverse(out, ws, H, W)  # (B, H, W, C)
    if shifted:
        y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))  # (B, H, W, C)
    return y
