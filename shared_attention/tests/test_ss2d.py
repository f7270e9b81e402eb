"""SS2D (VMamba / VM-UNet): cross-scan / merge against naive loops, the operator against a naive formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from shared_attention.ssm.selective_scan import selective_scan_ref
from shared_attention.ssm.ss2d import SS2D, VSSBlock, cross_merge, cross_scan


def naive_orders(H: int, W: int) -> list[list[tuple[int, int]]]:  # noqa: N803
    """The (h, w) visited at each step of the four scans, written as explicit loops."""
    rows = [(h, w) for h in range(H) for w in range(W)]
    cols = [(h, w) for w in range(W) for h in range(H)]
    return [rows, cols, rows[::-1], cols[::-1]]


@pytest.mark.parametrize("H,W", [(3, 5), (4, 4), (1, 6), (5, 2)])
def test_cross_scan_matches_naive_loop(H: int, W: int) -> None:
    x = torch.randn(2, 3, H, W)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, H * W)
    for k, order in enumerate(naive_orders(H, W)):
        for t, (h, w) in enumerate(order):
            torch.testing.assert_close(xs[:, k, :, t], x[:, :, h, w])


@pytest.mark.parametrize("H,W", [(3, 5), (5, 2)])
def test_cross_merge_matches_naive_loop(H: int, W: int) -> None:
    y = torch.randn(2, 4, 3, H * W)
    merged = cross_merge(y, H, W)
    expected = torch.zeros(2, 3, H, W)
    for k, order in enumerate(naive_orders(H, W)):
        for t, (h, w) in enumerate(order):
            expected[:, :, h, w] += y[:, k, :, t]
    torch.testing.assert_close(merged, expected.reshape(2, 3, H * W))


def test_cross_merge_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="H\\*W"):
        cross_merge(torch.randn(1, 4, 2, 10), 3, 3)


def naive_ss2d(m: SS2D, x: Tensor) -> Tensor:
    """SS2D written out direction by direction with index lists and the sequential reference scan."""
    B, H, W, _ = x.shape
    xz = x @ m.in_proj.weight.T
    xi, z = xz[..., : m.d_inner], xz[..., m.d_inner :]
    xi = F.silu(F.conv2d(xi.permute(0, 3, 1, 2), m.conv2d.weight, m.conv2d.bias, padding=1, groups=m.d_inner))
    out = torch.zeros(B, m.d_inner, H, W)
    D = m.d_inner
    for k, order in enumerate(naive_orders(H, W)):
        seq = torch.stack([xi[:, :, h, w] for h, w in order], dim=-1)  # (B, D, L)
        proj = torch.einsum("cd,bdl->bcl", m.x_proj_weight[k], seq)
        dt, Bk, Ck = proj[:, : m.dt_rank], proj[:, m.dt_rank : m.dt_rank + m.d_state], proj[:, m.dt_rank + m.d_state :]
        delta = torch.einsum("dr,brl->bdl", m.dt_projs_weight[k], dt)
        A = -torch.exp(m.A_logs[k * D : (k + 1) * D])
        y = selective_scan_ref(
            seq, delta, A, Bk, Ck, m.Ds[k * D : (k + 1) * D], delta_bias=m.dt_projs_bias[k], delta_softplus=True
        )
        for t, (h, w) in enumerate(order):
            out[:, :, h, w] += y[:, :, t]
    y = F.layer_norm(out.permute(0, 2, 3, 1), (D,), m.out_norm.weight, m.out_norm.bias) * F.silu(z)
    return y @ m.out_proj.weight.T


@pytest.mark.parametrize("H,W", [(3, 5), (4, 2)])
def test_ss2d_matches_naive_formula(H: int, W: int) -> None:
    torch.manual_seed(0)
    m = SS2D(8, d_state=4).eval()
    with torch.no_grad():
        m.out_norm.weight.normal_()
        m.dt_projs_bias.normal_(0, 0.5)
    x = torch.randn(2, H, W, 8)
    with torch.no_grad():
        expected = naive_ss2d(m, x)
        fast = m(x)
        m.scan_impl = "reference"
        ref = m(x)
    assert fast.shape == (2, H, W, 8)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ref, expected, atol=1e-5, rtol=1e-4)


def test_ss2d_official_parameter_shapes_and_grad() -> None:
    m = SS2D(96)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["x_proj_weight"] == (4, 38, 192)
    assert shapes["dt_projs_weight"] == (4, 192, 6)
    assert shapes["A_logs"] == (768, 16)
    assert shapes["Ds"] == (768,)
    assert "in_proj.bias" not in shapes
    small = VSSBlock(8, d_state=4)
    x = torch.randn(1, 4, 6, 8, requires_grad=True)
    small(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert small.self_attention.A_logs.grad is not None
