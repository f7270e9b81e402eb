"""Scaled dot-product and multi-head attention.

Implements "Attention Is All You Need" (Vaswani et al., 2017), eq. 1::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

and the multi-head form of sec. 3.2.2::

    MultiHead(X, C) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(X W_i^Q, C W_i^K, C W_i^V)

:func:`scaled_dot_product` is the single attention kernel of this package: every attention
module (window, spatial-reduction, multi-head) calls it, so masking conventions, the fused
``torch.nn.functional.scaled_dot_product_attention`` path and the explicit softmax path live in
one place.

Mask convention (same as ``torch.nn.functional.scaled_dot_product_attention``):

* boolean mask: ``True`` means "may attend", ``False`` means "masked out";
* floating mask: added to the scaled scores before the softmax (use ``-inf`` or a large negative
  number to mask out).

A query row whose keys are all masked out returns zeros (and zero attention probabilities), with
finite gradients, on both paths.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "biased_attention", "scaled_dot_product"]


def _masked_softmax(scores: Tensor, has_mask: bool) -> Tensor:
    """Softmax over the last axis (in at least float32) that maps fully masked rows to zeros.

    Args:
        scores: Scores ``(..., Nq, Nk)``; masked entries are ``-inf``.
        has_mask: Whether a mask was applied (rows can only be fully ``-inf`` then).

    Returns:
        Probabilities of the same shape, in ``promote_types(scores.dtype, float32)``.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if not has_mask:
        return torch.softmax(scores, dim=-1)
    # Safe softmax: a row that is entirely -inf gives exp(-inf - 0) = 0 everywhere and denominator 0,
    # which we replace by 1, so the row is all zeros and no NaN reaches the backward pass.
    row_max = scores.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max)
    denom = exp.sum(dim=-1, keepdim=True)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return exp / denom


#: Longest query / key sequence sent to :class:`_SmallAttention` on the CPU (measured, ``bench/attention.py``).
SMALL_ATTENTION_MAX_LEN = 64


def _small_cpu(q: Tensor, k: Tensor, v: Tensor) -> bool:
    dev = q.device.type
    return (
        dev == "cpu"
        and q.ndim >= 3
        and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]  # no broadcast batch dimensions
        and q.shape[-2] <= SMALL_ATTENTION_MAX_LEN
        and k.shape[-2] <= SMALL_ATTENTION_MAX_LEN
        and q.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled(dev)
    )


class _SmallAttention(torch.autograd.Function):
    """``softmax(q k^T * scale) v`` for short sequences on the CPU: batched products and a hand-written backward.

    The CPU flash kernel works one (batch, head) at a time with blocking made for long sequences; for thousands
    of tiny problems (Hiformer: 2000 of 11 tokens x 8 dims) its per-problem overhead dominates (forward + backward
    6.4 ms against 3.6 ms here; 12 vs 6 ms at 32 tokens; it wins again from about 128 tokens). The probabilities
    (``Nq x Nk`` per problem, small by construction) are kept for the backward:
    ``dv = p^T g``, ``dp = g v^T``, ``ds = p (dp - rowsum(dp p))``, ``dq = ds k scale``, ``dk = ds^T q scale``.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        lead = q.shape[:-2]
        nq, nk, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
        q3, k3, v3 = q.reshape(-1, nq, d), k.reshape(-1, nk, d), v.reshape(-1, nk, dv)  # (n, N, d)
        p = torch.bmm(q3, k3.transpose(1, 2))  # (n, Nq, Nk) scores
        p.mul_(scale)
        p.sub_(p.amax(-1, keepdim=True))
        p.exp_()
        p.div_(p.sum(-1, keepdim=True))  # probabilities (a softmax over a handful of keys: elementwise is faster)
        out = torch.bmm(p, v3)  # (n, Nq, dv)
        ctx.save_for_backward(q3, k3, v3, p)
        ctx.scale = scale
        ctx.shapes = (q.shape, k.shape, v.shape)
        return out.view(*lead, nq, dv)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q3, k3, v3, p = ctx.saved_tensors
        q_shape, k_shape, v_shape = ctx.shapes
        g = grad.reshape(p.shape[0], p.shape[1], -1)  # (n, Nq, dv)
        need = ctx.needs_input_grad
        dv = torch.bmm(p.transpose(1, 2), g).view(v_shape) if need[2] else None  # (n, Nk, dv)
        ds = torch.bmm(g, v3.transpose(1, 2))  # (n, Nq, Nk) dp
        ds.sub_((ds * p).sum(-1, keepdim=True)).mul_(p).mul_(ctx.scale)  # softmax backward, scaled
        dq = torch.bmm(ds, k3).view(q_shape) if need[0] else None
        dk = torch.bmm(ds.transpose(1, 2), q3).view(k_shape) if need[1] else None
        return dq, dk, dv, None


def scaled_dot_product(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    finite_mask: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention, Vaswani et al. (2017) eq. 1.

    Two numerically equivalent paths:

    * ``need_weights=False``: ``torch.nn.functional.scaled_dot_product_attention`` (fused
      flash / memory-efficient / math kernel chosen by PyTorch); no probabilities are returned.
      On the CPU, without a mask or dropout and with at most :data:`SMALL_ATTENTION_MAX_LEN` queries and keys,
      :class:`_SmallAttention` instead (batched products, hand-written backward; faster for short sequences).
    * ``need_weights=True``: explicit ``softmax(q k^T * scale + mask) v``; the attention
      probabilities (before dropout) are returned.

    On the CPU, a floating mask that requires grad (a learned relative position bias during
    training) sends PyTorch's fused function to its unfused math kernel, which also scans the mask
    for ``-inf`` rows; the explicit path is then used instead (faster in float32, about 3x faster
    fwd+bwd under bfloat16 autocast on window shapes, see ``bench/attention.py``).

    Leading dimensions are arbitrary; the canonical layout is ``(B, heads, N, head_dim)``.

    Args:
        q: Queries ``(B, h, Nq, d)``.
        k: Keys ``(B, h, Nk, d)``.
        v: Values ``(B, h, Nk, dv)``.
        attn_mask: Optional mask broadcastable to ``(B, h, Nq, Nk)``. Boolean (``True`` =
            attend) or floating (added to the scaled scores). Floating masks are cast to the
            dtype of ``q``.
        dropout_p: Dropout probability on the attention probabilities. The function is
            stateless: pass ``0.0`` at evaluation time (modules do this via ``self.training``).
        scale: Score scale; defaults to ``1 / sqrt(d)``.
        need_weights: Return the attention probabilities (explicit path).
        finite_mask: The caller guarantees a floating mask without ``-inf`` (e.g. a bias plus
            Swin's ``-100`` shift mask), so no row can be fully masked and the explicit path
            uses a plain softmax instead of the safe one.

    Returns:
        ``(out, attn)`` where ``out`` is ``(B, h, Nq, dv)`` and ``attn`` is the
        ``(B, h, Nq, Nk)`` probability tensor when ``need_weights`` else ``None``.
    """
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.to(q.dtype)
    grad_mask = (
        attn_mask is not None
        and attn_mask.dtype != torch.bool
        and attn_mask.requires_grad
        and torch.is_grad_enabled()
        and q.device.type == "cpu"
    )
    if not need_weights and attn_mask is None and dropout_p == 0.0 and _small_cpu(q, k, v):
        scale_ = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        return cast(Tensor, _SmallAttention.apply(q, k, v, scale_)), None  # (B, h, Nq, dv)
    if not need_weights and not grad_mask:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
        )  # (B, h, Nq, dv)
        return out, None

    scale_ = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q * scale_) @ k.transpose(-2, -1)  # (B, h, Nq, Nk)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    safe = attn_mask is not None and not finite_mask
    attn = _masked_softmax(scores, safe).to(q.dtype)  # (B, h, Nq, Nk)
    probs = F.dropout(attn, p=dropout_p, training=True) if dropout_p > 0.0 else attn
    out = probs @ v  # (B, h, Nq, dv)
    return out, (attn if need_weights else None)


#: Bytes of one chunk's score tensor in :func:`biased_attention` (a few windows: stays in the CPU's L2 cache).
BIASED_CHUNK_BYTES = 2 << 20


def _chunks(batch: int, per_item: int) -> list[tuple[int, int]]:
    step = max(1, BIASED_CHUNK_BYTES // max(per_item, 1))
    return [(s, min(batch, s + step)) for s in range(0, batch, step)]


class _BiasedAttention(torch.autograd.Function):
    """``softmax(q k^T * scale + bias + mask[i % nW]) v`` a few windows at a time, probabilities kept per chunk.

    The explicit path writes, re-reads and reduces whole ``(B nW, h, N, N)`` score tensors (tens of MB per layer)
    several times in the backward; here every score chunk is produced, normalised and consumed while it is in
    cache, the backward reuses the saved probabilities chunk by chunk and sums the bias gradient as it goes.
    """

    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None, scale: float
    ) -> Tensor:
        bw, h, nq, _ = q.shape
        nk = k.shape[-2]
        out = q.new_empty(bw, h, nq, v.shape[-1])  # (B nW, h, Nq, dv)
        probs = []
        for s, e in _chunks(bw, h * nq * nk * q.element_size()):
            scores = torch.matmul(q[s:e] * scale, k[s:e].transpose(-2, -1))  # (c, h, Nq, Nk)
            scores += bias
            if mask is not None:
                idx = torch.arange(s, e, device=mask.device) % mask.shape[0]
                scores += mask.index_select(0, idx).unsqueeze(1)  # (c, 1, Nq, Nk)
            p = torch.softmax(scores, dim=-1)  # (c, h, Nq, Nk)
            torch.matmul(p, v[s:e], out=out[s:e])
            probs.append(p)
        ctx.scale = scale
        ctx.n_probs = len(probs)
        ctx.save_for_backward(q, k, v, *probs)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, *probs = ctx.saved_tensors
        scale = ctx.scale
        bw, h, nq, _ = q.shape
        nk = k.shape[-2]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbias = q.new_zeros(h, nq, nk, dtype=torch.promote_types(q.dtype, torch.float32))
        grad = grad.contiguous()
        for (s, e), p in zip(_chunks(bw, h * nq * nk * q.element_size()), probs, strict=True):
            g = grad[s:e]  # (c, h, Nq, dv)
            torch.matmul(p.transpose(-2, -1), g, out=dv[s:e])
            dp = torch.matmul(g, v[s:e].transpose(-2, -1))  # (c, h, Nq, Nk)
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)  # (c, h, Nq, Nk)
            dbias += ds.sum(0)
            ds *= scale
            torch.matmul(ds, k[s:e], out=dq[s:e])
            torch.matmul(ds.transpose(-2, -1), q[s:e], out=dk[s:e])
        need = ctx.needs_input_grad
        return (
            dq if need[0] else None,
            dk if need[1] else None,
            dv if need[2] else None,
            dbias.to(q.dtype) if need[3] else None,
            None,
            None,
        )


def biased_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """Window attention with a learned additive bias (Swin / HAT relative position bias), for training.

    Computes ``softmax(q k^T * scale + bias + mask[i % nW]) v`` like :func:`scaled_dot_product` with
    ``attn_mask = bias (+ mask)``, but a few windows at a time (:class:`_BiasedAttention`): on the CPU the fused
    SDPA kernels cannot take a mask that needs a gradient and the explicit path is memory bound on whole-layer
    score tensors (HAT-S training step, ``bench/speed.py``). Without gradients it is the fused SDPA call; under
    autocast or off the CPU, :func:`scaled_dot_product` with the summed mask (same numbers).

    Args:
        q: Queries ``(B nW, h, Nq, d)``. k / v: keys and values ``(B nW, h, Nk, d)`` / ``(B nW, h, Nk, dv)``.
        bias: Additive bias ``(h, Nq, Nk)`` shared by every window (gradient returned for it).
        mask: Optional constant additive mask ``(nW, Nq, Nk)``; window ``i`` uses ``mask[i % nW]`` (finite values:
            no row may be fully masked, Swin's ``-100`` shift mask).
        scale: Score scale; defaults to ``1 / sqrt(d)``.

    Returns:
        ``(B nW, h, Nq, dv)``.
    """
    if q.ndim != 4 or bias.shape != (q.shape[1], q.shape[2], k.shape[2]):
        raise ValueError(f"expected q (B, h, Nq, d) and bias (h, Nq, Nk), got {tuple(q.shape)} / {tuple(bias.shape)}")
    scale_ = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if mask is not None:
        if mask.dtype == torch.bool or q.shape[0] % mask.shape[0]:
            raise ValueError(f"mask must be additive (nW, Nq, Nk) with nW dividing {q.shape[0]} windows")
        mask = mask.to(q.dtype)
    bias = bias.to(q.dtype)
    dev = q.device.type
    chunked = (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in (q, k, v, bias))
        and dev == "cpu"
        and not torch.is_autocast_enabled(dev)
        and q.dtype in (torch.float32, torch.float64)
    )
    if not chunked:  # the fused kernel, or (autocast / another device with gradients) the core's generic path
        if mask is None:
            attn_mask = bias.unsqueeze(0)  # (1, h, Nq, Nk)
            return scaled_dot_product(q, k, v, attn_mask=attn_mask, scale=scale_, finite_mask=True)[0]
        nw, h = mask.shape[0], q.shape[1]
        b = q.shape[0] // nw
        # windows x heads as one "head" axis: 4-D operands with the (nW h, Nq, Nk) mask broadcast over the batch,
        # so the fused CPU kernel takes them (5-D operands send SDPA to its unfused math path, 2x slower)
        attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, nw * h, *bias.shape[1:])  # (1, nW h, Nq, Nk)
        q4, k4, v4 = (t.reshape(b, nw * h, *t.shape[2:]) for t in (q, k, v))  # (B, nW h, N, d)
        out = scaled_dot_product(q4, k4, v4, attn_mask=attn_mask, scale=scale_, finite_mask=True)[0]
        return out.reshape(q.shape[0], h, *out.shape[2:])  # (B nW, h, Nq, dv)
    return cast(Tensor, _BiasedAttention.apply(q, k, v, bias, mask, scale_))


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention, Vaswani et al. (2017) sec. 3.2.2.

    Parameter names (stable, for checkpoint mapping):

    * self-attention mode (``kv_dim is None``): ``qkv`` = ``Linear(dim, 3 * inner)`` whose output
      is laid out ``[q | k | v]``, each ``(heads, head_dim)`` head-major (timm / Swin layout);
    * cross-attention mode (``kv_dim`` given): ``q`` = ``Linear(dim, inner)`` and
      ``kv`` = ``Linear(kv_dim, 2 * inner)`` laid out ``[k | v]`` (PVT layout);
    * ``proj`` = ``Linear(inner, dim)`` output projection;

    with ``inner = num_heads * head_dim``.

    In self-attention mode a ``context`` of width ``dim`` may still be passed: queries then use
    the ``q`` rows of ``qkv`` on ``x`` and keys/values use its ``k``/``v`` rows on ``context``.

    Args:
        dim: Input (query) width ``C`` and output width.
        num_heads: Number of heads ``h``.
        qkv_bias: Bias in the q/k/v projections.
        attn_drop: Dropout on attention probabilities (training only).
        proj_drop: Dropout after the output projection.
        kv_dim: Width ``Ckv`` of the context for cross attention; selects cross-attention mode.
        head_dim: Per-head width; defaults to ``dim // num_heads`` (``dim`` must then be divisible
            by ``num_heads``).

    Attribute ``explicit`` (default ``False``): always take the step-by-step softmax path of
    :func:`scaled_dot_product` (the research codes' pattern; tests and ``bench/speed.py``). Same result.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kv_dim: int | None = None,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads != 0:
                raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; pass head_dim")
            head_dim = dim // num_heads
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.inner_dim = num_heads * head_dim
        self.kv_dim = kv_dim
        self.scale = head_dim**-0.5
        self.attn_drop_p = attn_drop
        self.explicit = False
        self.qkv: nn.Linear | None
        self.q: nn.Linear | None
        self.kv: nn.Linear | None
        if kv_dim is None:
            self.qkv = nn.Linear(dim, 3 * self.inner_dim, bias=qkv_bias)
            self.q = None
            self.kv = None
        else:
            self.qkv = None
            self.q = nn.Linear(dim, self.inner_dim, bias=qkv_bias)
            self.kv = nn.Linear(kv_dim, 2 * self.inner_dim, bias=qkv_bias)
        self.proj = nn.Linear(self.inner_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def is_cross(self) -> bool:
        """Whether the module was built for cross attention (separate ``q``/``kv``)."""
        return self.kv_dim is not None

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = x.shape
        h, d = self.num_heads, self.head_dim
        if self.qkv is not None:
            if context is None:
                qkv = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
                return qkv[0], qkv[1], qkv[2]
            w_q, w_kv = self.qkv.weight.split([self.inner_dim, 2 * self.inner_dim], dim=0)
            b_q: Tensor | None = None
            b_kv: Tensor | None = None
            if self.qkv.bias is not None:
                b_q, b_kv = self.qkv.bias.split([self.inner_dim, 2 * self.inner_dim], dim=0)
            q = F.linear(x, w_q, b_q)  # (B, N, h*d)
            kv = F.linear(context, w_kv, b_kv)  # (B, M, 2*h*d)
        else:
            if context is None:
                raise ValueError("cross-attention MultiHeadAttention (kv_dim set) needs a context")
            assert self.q is not None and self.kv is not None
            q = self.q(x)  # (B, N, h*d)
            kv = self.kv(context)  # (B, M, 2*h*d)
        M = kv.shape[1]
        q = q.reshape(B, N, h, d).transpose(1, 2)  # (B, h, N, d)
        kv = kv.reshape(B, M, 2, h, d).permute(2, 0, 3, 1, 4)  # (2, B, h, M, d)
        return q, kv[0], kv[1]

    @overload
    def forward(
        self,
        x: Tensor,
        context: Tensor | None = ...,
        attn_mask: Tensor | None = ...,
        need_weights: Literal[False] = ...,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        x: Tensor,
        context: Tensor | None = ...,
        attn_mask: Tensor | None = ...,
        *,
        need_weights: Literal[True],
    ) -> tuple[Tensor, Tensor]: ...

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from ``x`` to itself or to ``context``.

        Args:
            x: Queries ``(B, N, C)``.
            context: Keys/values source ``(B, M, Ckv)``; ``None`` for self-attention.
            attn_mask: Mask broadcastable to ``(B, heads, N, M)`` (bool ``True`` = attend, or
                additive float). A key-padding mask ``(B, M)`` must be given as ``(B, 1, 1, M)``.
            need_weights: Also return the ``(B, heads, N, M)`` attention probabilities.

        Returns:
            ``(B, N, C)`` output, or ``(output, attn)`` when ``need_weights``.
        """
        B, N, _ = x.shape
        q, k, v = self._project(x, context)  # (B, h, N, d), (B, h, M, d), (B, h, M, d)
        out, attn = scaled_dot_product(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop_p if self.training else 0.0,
            scale=self.scale,
            need_weights=need_weights or self.explicit,
        )  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, self.inner_dim)  # (B, N, h*d)
        out = self.proj_drop(self.proj(out))  # (B, N, C)
        if need_weights:
            assert attn is not None
            return out, attn
        return out
