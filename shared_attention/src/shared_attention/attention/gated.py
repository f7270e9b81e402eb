"""Gated attention unit with joint local (quadratic) and global (linear) attention: MossFormer.

"MossFormer: Pushing the Performance Limit of Monaural Speech Separation using Gated Single-Head
Transformer with Convolution-Augmented Joint Self-Attentions" (Zhao & Ma, ICASSP 2023), sec. 3, built on
FLASH, "Transformer Quality in Linear Time" (Hua et al., 2022), sec. 2-3. For a sequence ``X`` (n x d):

* token shift: the first ``d/2`` channels are delayed by one frame (``X'``);
* conv-augmented feed-forward modules ``F(.) = dropout(h + DWConv_17(h)), h = SiLU(W ScaleNorm(.) + b)``:
  ``[V | U] = F_hidden(X')`` (each ``e`` wide), ``Z = F_qk(X')`` (``s`` wide, shared by queries and keys);
* per-use offset-scale (FLASH eq. 4): ``Q_quad, Q_lin, K_quad, K_lin = Z * gamma_h + beta_h``;
* rotary position embedding (RoFormer eq. 34) on the first ``rot_dim`` features of each;
* joint attention (MossFormer eq. 5-7) with groups of ``g`` frames (the sequence is zero-padded to a
  multiple of ``g``), for ``T`` in ``{V, U}``::

      A_quad = relu(Q_quad K_quad^T / g)^2              (inside each group, eq. 6)
      Att(T) = A_quad T + Q_lin (K_lin^T T) / n         (linear attention over all groups, eq. 7)

* attentive gating (eq. 8): ``O = (Att(U) * V) * sigmoid(Att(V) * U)``, ``X + F_out(O)``.

:class:`GatedAttentionUnit` has a fast path (``to_hidden`` and ``to_qk`` as one normalised GEMM + SiLU +
depthwise conv, one matmul for ``[V | U]`` in both attentions, one padding and one rotary call for the
query/key streams; at inference also in-place relu-square and gating and channels-last depthwise
convolutions) and a naive path (``naive=True``) that writes the equations one by one;
:func:`joint_attention` and :func:`joint_attention_naive` are the two kernels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_attention.layers.position import RotaryEmbedding

__all__ = [
    "ScaleNorm",
    "ConvModule",
    "ConvFFN",
    "OffsetScale",
    "GatedAttentionUnit",
    "joint_attention",
    "joint_attention_naive",
    "token_shift",
    "depthwise_conv_time",
]


def token_shift(x: Tensor) -> Tensor:
    """Delays the first half of the channels by one step (zeros enter at step 0).

    Args:
        x: ``(B, N, D)``.

    Returns:
        ``(B, N, D)``: ``out[:, t, :D//2] = x[:, t-1, :D//2]``, ``out[:, t, D//2:] = x[:, t, D//2:]``.
    """
    half = (x.shape[-1] + 1) // 2  # torch.chunk puts the larger part first
    shifted = F.pad(x[..., :half], (0, 0, 1, -1))  # (B, N, half)
    return torch.cat((shifted, x[..., half:]), dim=-1)  # (B, N, D)


class ScaleNorm(nn.Module):
    """``g * x / max(||x||_2 * dim^-0.5, eps)`` over the last axis with one learned scalar ``g``
    (Nguyen & Salazar 2019; FLASH's and MossFormer's norm).

    Args:
        dim: feature width (sets the ``dim^-0.5`` factor).
        eps: lower bound of the scaled norm.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale  # (..., 1)
        return x / norm.clamp(min=self.eps) * self.g


def _conv_time_cl(x: Tensor, weight: Tensor, padding: int) -> Tensor:
    """``(B, n, C)`` -> ``(B, n, C)``: depthwise 'same' convolution on the ``(B, C, 1, n)`` channels-last view."""
    wi = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (C, 1, 1, k)
    xi = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, n) with channels-last strides: no copy
    return F.conv2d(xi, wi, padding=(0, padding), groups=weight.shape[0]).squeeze(2).transpose(1, 2)


class _DepthwiseTimeCL(torch.autograd.Function):
    """Channels-last depthwise convolution along time with a backward of two convolutions.

    oneDNN's channels-last depthwise kernel is fast forward but its own backward is not (slower than the
    ``conv1d`` one). Here the input gradient is the same fast forward kernel with the time-reversed filter, and the
    weight gradient (a per-channel cross-correlation of the input with the output gradient at ``k`` lags) is one
    grouped ``conv1d`` whose filters are the output gradients: 2-4x faster fwd + bwd than ``conv1d`` on MossFormer's
    shapes (``bench/speed.py``; gradients equal within float rounding, ``tests/test_gated_attention.py``).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, padding: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return _conv_time_cl(x, weight, padding)  # (B, n, C)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        pad = ctx.padding
        grad = grad.contiguous()  # (B, n, C); bfloat16 when the forward ran under autocast
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _conv_time_cl(grad, weight.flip(-1).to(grad.dtype), pad).to(x.dtype)  # (B, n, C)
        if ctx.needs_input_grad[1]:
            b, n, c = x.shape
            k = weight.shape[-1]
            xc = grad.new_zeros(1, b * c, n + 2 * pad)  # channels-first, padded: (1, B C, n + 2 pad)
            xc.view(b, c, -1)[..., pad : pad + n].copy_(x.transpose(1, 2))
            gc = grad.transpose(1, 2).contiguous().view(b * c, 1, n)  # one filter per (b, c)
            per_item = F.conv1d(xc, gc, groups=b * c).view(b, c, k)  # (B, C, k)
            gw = per_item.sum(0, dtype=torch.promote_types(per_item.dtype, torch.float32))  # (C, k)
            gw = gw.unsqueeze(1).to(weight.dtype)  # (C, 1, k)
        return gx, gw, None


def depthwise_conv_time(x: Tensor, weight: Tensor, padding: int, channels_last: bool = False) -> Tensor:
    """Depthwise convolution along time of a ``(B, n, C)`` sequence with ``weight (C, 1, k)`` ('same' padding).

    ``channels_last=True`` runs it as a 2D convolution on the ``(B, C, 1, n)`` channels-last view of ``x`` (no
    transposed copy; oneDNN's vectorised depthwise kernel on CPU, several times faster than the ``(B, C, n)``
    path), with the convolution backward of :class:`_DepthwiseTimeCL` when gradients are needed; the default
    transposes to ``(B, C, n)`` for ``conv1d`` (the reference pattern). Both compute the same sums.
    """
    if channels_last:
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            if 2 * padding + 1 != weight.shape[-1]:
                k = weight.shape[-1]
                raise ValueError(f"'same' padding needs an odd kernel and padding k // 2, got k={k}, padding={padding}")
            return _DepthwiseTimeCL.apply(x, weight, padding)  # (B, n, C)
        return _conv_time_cl(x, weight, padding)  # (B, n, C)
    return F.conv1d(x.transpose(1, 2), weight, padding=padding, groups=weight.shape[0]).transpose(1, 2)


class ConvModule(nn.Module):
    """Residual depthwise convolution along time: ``x + DWConv_k(x)`` (no bias, 'same' padding).

    Args:
        dim: channels. kernel_size: odd kernel (MossFormer: 17).
    """

    def __init__(self, dim: int, kernel_size: int = 17) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)

    def forward(self, x: Tensor, fast: bool = False) -> Tensor:
        # x: (B, N, D); fast: channels-last kernel (with its own backward in training)
        pad = self.conv.kernel_size[0] // 2
        return x + depthwise_conv_time(x, self.conv.weight, pad, channels_last=fast)  # (B, N, D)


class ConvFFN(nn.Module):
    """MossFormer's convolution-augmented feed-forward module (``FFConvM``):
    ScaleNorm -> Linear -> SiLU -> residual depthwise conv -> dropout.

    Args:
        dim_in / dim_out: widths. kernel_size: depthwise kernel. dropout: output dropout.
    """

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int = 17, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = ScaleNorm(dim_in)
        self.proj = nn.Linear(dim_in, dim_out)
        self.conv = ConvModule(dim_out, kernel_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, fast: bool = False) -> Tensor:
        # x: (B, N, dim_in)
        h = F.silu(self.proj(self.norm(x)))  # (B, N, dim_out)
        return self.dropout(self.conv(h, fast=fast))  # (B, N, dim_out)


class OffsetScale(nn.Module):
    """Per-use offset and scale of a shared vector (FLASH eq. 4): ``out_h = x * gamma_h + beta_h``.

    Args:
        dim: feature width. heads: number of outputs (MossFormer: 4 = quad_q, lin_q, quad_k, lin_k).
    """

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(heads, dim))
        self.beta = nn.Parameter(torch.zeros(heads, dim))
        nn.init.normal_(self.gamma, std=0.02)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        # x: (..., D) -> heads x (..., D)
        out = x.unsqueeze(-2) * self.gamma + self.beta  # (..., heads, D)
        return out.unbind(dim=-2)


def joint_attention_naive(
    quad_q: Tensor,
    quad_k: Tensor,
    lin_q: Tensor,
    lin_k: Tensor,
    values: tuple[Tensor, ...],
    group_size: int,
    attn_dropout: nn.Module | None = None,
) -> tuple[Tensor, ...]:
    """Quadratic attention inside groups plus linear global attention, written one equation at a time.

    Args:
        quad_q, quad_k, lin_q, lin_k: ``(B, n, s)`` (rotary already applied).
        values: tensors ``(B, n, e)`` to attend over (MossFormer: ``(V, U)``).
        group_size: ``g``; the sequence is zero-padded to a multiple of it.
        attn_dropout: optional dropout on the quadratic attention weights.

    Returns:
        One ``(B, n, e)`` tensor per value: ``relu(QK^T/g)^2 T + Q_lin (K_lin^T T) / n``.
    """
    b, n, _ = quad_q.shape
    g = group_size
    pad = (-n) % g
    padded = [F.pad(t, (0, 0, 0, pad)) for t in (quad_q, quad_k, lin_q, lin_k, *values)]
    grouped = [t.reshape(b, -1, g, t.shape[-1]) for t in padded]  # (B, G, g, .)
    qq, qk, lq, lk = grouped[:4]
    sim = torch.einsum("bgid,bgjd->bgij", qq, qk) / g  # (B, G, g, g)
    attn = torch.pow(F.relu(sim), 2)  # (B, G, g, g)
    if attn_dropout is not None:
        attn = attn_dropout(attn)
    outs = []
    for t in grouped[4:]:
        quad = torch.einsum("bgij,bgjd->bgid", attn, t)  # (B, G, g, e)
        kv = torch.einsum("bgnd,bgne->bde", lk, t) / n  # (B, s, e)
        lin = torch.einsum("bgnd,bde->bgne", lq, kv)  # (B, G, g, e)
        outs.append((quad + lin).reshape(b, -1, t.shape[-1])[:, :n])  # (B, n, e)
    return tuple(outs)


def joint_attention(
    quad_q: Tensor,
    quad_k: Tensor,
    lin_q: Tensor,
    lin_k: Tensor,
    values: Tensor,
    group_size: int,
    attn_dropout: nn.Module | None = None,
) -> Tensor:
    """Fast kernel of :func:`joint_attention_naive` for one concatenated value tensor.

    Quadratic and linear parts are computed by one batched matmul each over ``[V | U]`` (instead of one per
    value), the relu-square runs in place, and the quadratic product is accumulated into the linear one.

    Args:
        quad_q, quad_k, lin_q, lin_k: ``(B, n, s)``.
        values: ``(B, n, E)`` (MossFormer: ``[V | U]``, ``E = 2e``).
        group_size: ``g``.
        attn_dropout: optional dropout on the quadratic weights.

    Returns:
        ``(B, n, E)``.
    """
    b, n, s = quad_q.shape
    e = values.shape[-1]
    g = group_size
    pad = (-n) % g
    if pad:
        # one padded buffer for the four query/key streams, one for the values
        qk = F.pad(torch.stack((quad_q, quad_k, lin_q, lin_k)), (0, 0, 0, pad))  # (4, B, n+pad, s)
        quad_q, quad_k, lin_q, lin_k = qk.unbind(0)
        values = F.pad(values, (0, 0, 0, pad))  # (B, n+pad, E)
    G = (n + pad) // g  # noqa: N806
    qq = quad_q.reshape(b * G, g, s)
    kk = quad_k.reshape(b * G, g, s)
    vv = values.reshape(b * G, g, e)
    attn = torch.bmm(qq, kk.transpose(1, 2)).mul_(1.0 / g)  # (B*G, g, g)
    inplace = not (torch.is_grad_enabled() and attn.requires_grad)
    attn = F.relu_(attn).square_() if inplace else F.relu(attn).square()  # (B*G, g, g)
    if attn_dropout is not None:
        attn = attn_dropout(attn)
    kv = torch.bmm(lin_k.transpose(1, 2), values).div_(n)  # (B, s, E)
    out = torch.bmm(lin_q, kv)  # (B, n+pad, E)
    out = out.reshape(b * G, g, e).baddbmm_(attn, vv)  # (B*G, g, E)
    return out.reshape(b, G * g, e)[:, :n]  # (B, n, E)


class GatedAttentionUnit(nn.Module):
    """MossFormer block (``FLASH_ShareA_FFConvM``): token shift, conv-augmented FFNs, shared query/key
    with offset-scale, partial rotary, joint quadratic-in-group + linear global attention, attentive gating.

    Args:
        dim: model width ``d``.
        group_size: ``g`` (256 in MossFormer).
        query_key_dim: shared query/key width ``s`` (128).
        expansion_factor: ``to_hidden`` makes ``dim * expansion_factor`` features, split into ``V`` and ``U``.
        dropout: dropout of the FFN modules and of the quadratic attention weights.
        rotary: a (possibly shared) :class:`~shared_attention.layers.position.RotaryEmbedding`; ``None``: no
            positions.
        kernel_size: depthwise kernel of the FFN modules (17).
        shift_tokens: apply the token shift.
        naive: use :func:`joint_attention_naive` and unfused steps (for tests and benchmarks).
    """

    def __init__(
        self,
        dim: int,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        dropout: float = 0.1,
        rotary: RotaryEmbedding | None = None,
        kernel_size: int = 17,
        shift_tokens: bool = True,
        naive: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(dim * expansion_factor)
        if hidden % 2:
            raise ValueError(f"dim * expansion_factor must be even, got {hidden}")
        self.group_size = group_size
        self.shift_tokens = shift_tokens
        self.naive = naive
        self.rotary_pos_emb = rotary
        self.attn_dropout = nn.Dropout(dropout)
        self.to_hidden = ConvFFN(dim, hidden, kernel_size, dropout)
        self.to_qk = ConvFFN(dim, query_key_dim, kernel_size, dropout)
        self.qk_offset_scale = OffsetScale(query_key_dim, heads=4)
        self.to_out = ConvFFN(hidden // 2, dim, kernel_size, dropout)

    def _rotate(self, *ts: Tensor) -> tuple[Tensor, ...]:
        if self.rotary_pos_emb is None:
            return ts
        return tuple(self.rotary_pos_emb.rotate(t) for t in ts)

    def _hidden_qk(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``to_hidden(h)`` and ``to_qk(h)`` as one module: both ScaleNorms see the same input and differ only in
        their scalar gain, so the input is normalised once and one GEMM, one SiLU and one depthwise conv run
        over the concatenated ``2e + s`` features."""
        a, b = self.to_hidden, self.to_qk
        if a.conv.conv.kernel_size != b.conv.conv.kernel_size or a.norm.eps != b.norm.eps:
            return a(h), b(h)
        norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True) * a.norm.scale  # (B, n, 1)
        hn = h / norm.clamp(min=a.norm.eps)  # (B, n, d)
        weight = torch.cat((a.proj.weight * a.norm.g, b.proj.weight * b.norm.g))  # (2e+s, d)
        bias = torch.cat((a.proj.bias, b.proj.bias))  # (2e+s,)
        y = F.silu(F.linear(hn, weight, bias))  # (B, n, 2e+s)
        conv_w = torch.cat((a.conv.conv.weight, b.conv.conv.weight))  # (2e+s, 1, k)
        pad = a.conv.conv.kernel_size[0] // 2
        y = y + depthwise_conv_time(y, conv_w, pad, channels_last=True)  # (B, n, 2e+s)
        y = a.dropout(y)
        e2 = a.proj.out_features
        return y[..., :e2], y[..., e2:]

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, n, d)
        h = token_shift(x) if self.shift_tokens else x  # (B, n, d)
        drop = self.attn_dropout if self.training else None
        if self.naive:
            vu = self.to_hidden(h)  # (B, n, 2e)
            qk = self.to_qk(h)  # (B, n, s)
        else:
            vu, qk = self._hidden_qk(h)  # (B, n, 2e), (B, n, s)
        if self.naive:
            v, u = vu.chunk(2, dim=-1)  # (B, n, e) each
            quad_q, lin_q, quad_k, lin_k = self._rotate(*self.qk_offset_scale(qk))  # (B, n, s) each
            att_v, att_u = joint_attention_naive(quad_q, quad_k, lin_q, lin_k, (v, u), self.group_size, drop)
            out = (att_u * v) * torch.sigmoid(att_v * u)  # (B, n, e)
        else:
            os_ = self.qk_offset_scale
            # the four offset-scaled streams at once, rotated in one call: (4, B, n, s)
            streams = torch.addcmul(os_.beta[:, None, None, :], qk.unsqueeze(0), os_.gamma[:, None, None, :])
            if self.rotary_pos_emb is not None:
                streams = self.rotary_pos_emb.rotate(streams)
            quad_q, lin_q, quad_k, lin_k = streams.unbind(0)
            att = joint_attention(quad_q, quad_k, lin_q, lin_k, vu, self.group_size, drop)  # (B, n, 2e)
            att_v, att_u = att.chunk(2, dim=-1)  # (B, n, e) each
            v, u = vu.chunk(2, dim=-1)
            gate = torch.sigmoid(att_v * u)  # (B, n, e)
            out = gate.mul_(att_u * v) if not torch.is_grad_enabled() else gate * (att_u * v)  # (B, n, e)
        return x + self.to_out(out, fast=not self.naive)  # (B, n, d)
