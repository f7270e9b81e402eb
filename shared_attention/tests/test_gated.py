"""MossFormer's gated attention unit against few-line formulas on small shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shared_attention.attention.gated import (
    ConvFFN,
    GatedAttentionUnit,
    OffsetScale,
    ScaleNorm,
    depthwise_conv_time,
    joint_attention,
    joint_attention_naive,
    token_shift,
)
from shared_attention.layers.position import RotaryEmbedding


def _reference_joint(qq, qk, lq, lk, t, g):
    """Block-diagonal full-sequence formula: relu(q_i.k_j / g)^2 for same-group pairs + linear part."""
    n = qq.shape[1]
    group = torch.arange(n) // g
    same = group[:, None] == group[None, :]  # (n, n)
    sim = qq @ qk.transpose(1, 2) / g  # (B, n, n)
    attn = torch.where(same, F.relu(sim) ** 2, torch.zeros_like(sim))
    lin = lq @ (lk.transpose(1, 2) @ t) / n
    return attn @ t + lin


def _rope_reference(x, dim, base=10000.0):
    """Rotates interleaved pairs (2i, 2i+1) of the first ``dim`` features by angle m * base^(-2i/dim)."""
    out = x.clone()
    n = x.shape[-2]
    for m in range(n):
        for i in range(dim // 2):
            theta = m * base ** (-2 * i / dim)
            a, b = x[..., m, 2 * i], x[..., m, 2 * i + 1]
            out[..., m, 2 * i] = a * math.cos(theta) - b * math.sin(theta)
            out[..., m, 2 * i + 1] = b * math.cos(theta) + a * math.sin(theta)
    return out


@pytest.mark.parametrize("n", [8, 13, 24])
def test_joint_attention_matches_block_diagonal_formula(n):
    torch.manual_seed(0)
    b, s, e, g = 2, 6, 5, 8
    qq, qk, lq, lk = (torch.randn(b, n, s, dtype=torch.float64) for _ in range(4))
    v, u = torch.randn(b, n, e, dtype=torch.float64), torch.randn(b, n, e, dtype=torch.float64)
    ref_v, ref_u = _reference_joint(qq, qk, lq, lk, v, g), _reference_joint(qq, qk, lq, lk, u, g)
    nv, nu = joint_attention_naive(qq, qk, lq, lk, (v, u), g)
    torch.testing.assert_close(nv, ref_v)
    torch.testing.assert_close(nu, ref_u)
    fast = joint_attention(qq, qk, lq, lk, torch.cat((v, u), -1), g)
    torch.testing.assert_close(fast, torch.cat((ref_v, ref_u), -1))


def test_token_shift_scale_norm_offset_scale():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    y = token_shift(x)
    assert torch.equal(y[:, 0, :3], torch.zeros(2, 3))
    assert torch.equal(y[:, 1:, :3], x[:, :-1, :3])
    assert torch.equal(y[:, :, 3:], x[:, :, 3:])

    norm = ScaleNorm(6)
    norm.g.data.fill_(2.0)
    xr = torch.randn(3, 6)
    expected = 2.0 * xr / (xr.pow(2).sum(-1, keepdim=True).sqrt() / math.sqrt(6))
    torch.testing.assert_close(norm(xr), expected)
    assert torch.equal(norm(torch.zeros(1, 6)), torch.zeros(1, 6))  # eps keeps zeros finite

    os_ = OffsetScale(6, heads=4)
    os_.beta.data.normal_()
    outs = os_(xr)
    assert len(outs) == 4
    for h in range(4):
        torch.testing.assert_close(outs[h], xr * os_.gamma[h] + os_.beta[h])


def test_conv_ffn_formula():
    torch.manual_seed(1)
    ffn = ConvFFN(6, 10, kernel_size=5, dropout=0.0).eval()
    x = torch.randn(2, 9, 6)
    h = F.silu(ffn.proj(ffn.norm(x)))  # (2, 9, 10)
    w = ffn.conv.conv.weight[:, 0]  # (10, 5)
    hp = F.pad(h, (0, 0, 2, 2))
    conv = torch.stack([(hp[:, t : t + 5, :] * w.T).sum(1) for t in range(9)], dim=1)
    torch.testing.assert_close(ffn(x), h + conv)


def test_partial_rotary_matches_pairwise_rotation():
    rope = RotaryEmbedding(4)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(rope.rotate(x), _rope_reference(x, 4))


def _unit_reference(unit: GatedAttentionUnit, x):
    """The whole block from the formulas of the module docstring."""
    d = x.shape[-1]
    xs = torch.cat((F.pad(x[..., : d // 2], (0, 0, 1, -1)), x[..., d // 2 :]), -1)
    v, u = unit.to_hidden(xs).chunk(2, -1)
    z = unit.to_qk(xs)
    gamma, beta = unit.qk_offset_scale.gamma, unit.qk_offset_scale.beta
    qq, lq, qk, lk = (_rope_reference(z * gamma[h] + beta[h], unit.rotary_pos_emb.dim) for h in range(4))
    att_v = _reference_joint(qq, qk, lq, lk, v, unit.group_size)
    att_u = _reference_joint(qq, qk, lq, lk, u, unit.group_size)
    return x + unit.to_out((att_u * v) * torch.sigmoid(att_v * u))


@pytest.mark.parametrize("naive", [False, True])
def test_gated_attention_unit_matches_reference(naive):
    torch.manual_seed(2)
    rope = RotaryEmbedding(4)
    unit = (
        GatedAttentionUnit(
            8, group_size=4, query_key_dim=6, expansion_factor=2.0, dropout=0.1, rotary=rope, kernel_size=3, naive=naive
        )
        .double()
        .eval()
    )
    unit.qk_offset_scale.gamma.data.normal_()
    unit.qk_offset_scale.beta.data.normal_()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    out = unit(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _unit_reference(unit, x))


def test_fast_and_naive_units_agree_and_backprop():
    torch.manual_seed(3)
    fast = GatedAttentionUnit(16, group_size=8, query_key_dim=8, rotary=RotaryEmbedding(4), kernel_size=5)
    naive = GatedAttentionUnit(16, group_size=8, query_key_dim=8, rotary=RotaryEmbedding(4), kernel_size=5, naive=True)
    naive.load_state_dict(fast.state_dict())
    fast.eval()
    naive.eval()
    x = torch.randn(3, 21, 16, requires_grad=True)
    torch.testing.assert_close(fast(x), naive(x), rtol=1e-5, atol=1e-5)
    fast.train()
    fast(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in fast.parameters())


def test_depthwise_conv_layouts_agree_with_loop():
    torch.manual_seed(4)
    x, w = torch.randn(2, 11, 5), torch.randn(5, 1, 3)
    xp = F.pad(x, (0, 0, 1, 1))
    loop = torch.stack([(xp[:, t : t + 3, :] * w[:, 0].T).sum(1) for t in range(11)], dim=1)
    torch.testing.assert_close(depthwise_conv_time(x, w, 1), loop)
    with torch.no_grad():
        torch.testing.assert_close(depthwise_conv_time(x, w, 1, channels_last=True), loop)


@pytest.mark.parametrize("shape,k", [((2, 11, 5), 3), ((1, 40, 7), 17), ((3, 9, 4), 1)])
def test_channels_last_depthwise_backward_matches_conv1d(shape, k):
    """The channels-last kernel's own backward (time-reversed filter for the input, a grouped conv for the
    weight) gives conv1d's gradients, for a batch > 1 (the weight gradient sums over it) and for k = 1."""
    torch.manual_seed(5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[-1], 1, k, dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape, dtype=torch.float64)
    grads = []
    for cl in (False, True):
        y = depthwise_conv_time(x, w, k // 2, channels_last=cl)
        (gx, gw) = torch.autograd.grad(y, (x, w), g)
        grads.append((y.detach(), gx, gw))
    for ref, got in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    assert grads[1][2].abs().sum() > 0
    # only one of the two needs a gradient
    xs = x.detach().requires_grad_()
    (gx_only,) = torch.autograd.grad(depthwise_conv_time(xs, w.detach(), k // 2, channels_last=True), (xs,), g)
    torch.testing.assert_close(gx_only, grads[0][1])


def test_channels_last_depthwise_under_bf16_autocast():
    """Under bf16 autocast the gradients come back in each input's own dtype and close to float32's."""
    torch.manual_seed(6)
    x = torch.randn(2, 64, 24, requires_grad=True)
    w = torch.randn(24, 1, 17, requires_grad=True)
    g = torch.randn(2, 64, 24)
    gx32, gw32 = torch.autograd.grad(depthwise_conv_time(x, w, 8), (x, w), g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv_time(x, w, 8, channels_last=True)
    assert y.dtype == torch.bfloat16
    gx, gw = torch.autograd.grad(y, (x, w), g.to(y.dtype))
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32
    torch.testing.assert_close(gx, gx32, rtol=0.05, atol=0.1)
    torch.testing.assert_close(gw, gw32, rtol=0.05, atol=0.5)


def test_channels_last_depthwise_rejects_non_same_padding():
    x = torch.randn(1, 8, 3, requires_grad=True)
    with pytest.raises(ValueError, match="padding"):
        depthwise_conv_time(x, torch.randn(3, 1, 4), 2, channels_last=True)
