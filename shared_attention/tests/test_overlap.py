"""Tests for shared_attention.attention.overlap (HAT OCAB) against a naive loop implementation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from shared_attention.attention import OCAB, OverlappingCrossAttention, overlap_window_size
from shared_attention.attention.overlap import overlap_window_size as ows_direct

DT = torch.float64
TOL: dict[str, Any] = {"atol": 1e-10, "rtol": 1e-8}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def naive_ocab(m: OverlappingCrossAttention, x: Tensor, H: int, W: int) -> Tensor:
    """OCAB written with python loops over windows, explicit zero-padded key gathering and explicit
    per-pair bias lookup from coordinate differences (HAT's flattened-table convention)."""
    B, L, C = x.shape
    ws, ows = m.window_size, m.overlap_win_size
    nh = m.num_heads
    d = C // nh
    pad = (ows - ws) // 2
    L_tab = ws + ows - 1
    T = L_tab * L_tab
    table = m.relative_position_bias_table  # (T, nh)

    xn = m.norm1(x)
    qkv = xn @ m.qkv.weight.T + m.qkv.bias  # (B, L, 3C)
    q_map = qkv[..., :C].reshape(B, H, W, C)
    k_map = qkv[..., C : 2 * C].reshape(B, H, W, C)
    v_map = qkv[..., 2 * C :].reshape(B, H, W, C)
    zeros = torch.zeros(B, H + 2 * ows, W + 2 * ows, C, dtype=x.dtype)
    k_pad = zeros.clone()
    v_pad = zeros.clone()
    off = ows  # generous zero border; index (y + off) is pixel y, anything outside the map reads zero
    k_pad[:, off : off + H, off : off + W] = k_map
    v_pad[:, off : off + H, off : off + W] = v_map

    # explicit bias matrix (nh, ws*ws, ows*ows) by coordinate differences
    bias = torch.zeros(nh, ws * ws, ows * ows, dtype=x.dtype)
    for qy in range(ws):
        for qx in range(ws):
            for ky in range(ows):
                for kx in range(ows):
                    dy, dx = ky - qy, kx - qx
                    row = ((dy + ws - ows + 1) * L_tab + (dx + ws - ows + 1)) % T
                    bias[:, qy * ws + qx, ky * ows + kx] = table[row]

    rows = []
    for b in range(B):
        out_map: list[list[Tensor]] = [[torch.empty(0)] * W for _ in range(H)]
        for wy in range(H // ws):
            for wx in range(W // ws):
                y0, x0 = wy * ws, wx * ws
                q = q_map[b, y0 : y0 + ws, x0 : x0 + ws].reshape(ws * ws, C)
                ky0, kx0 = y0 - pad + off, x0 - pad + off
                k = k_pad[b, ky0 : ky0 + ows, kx0 : kx0 + ows].reshape(ows * ows, C)
                v = v_pad[b, ky0 : ky0 + ows, kx0 : kx0 + ows].reshape(ows * ows, C)
                heads = []
                for hh in range(nh):
                    qh, kh, vh = (t[:, hh * d : (hh + 1) * d] for t in (q, k, v))
                    s = (qh * m.scale) @ kh.T + bias[hh]
                    heads.append(torch.softmax(s, dim=-1) @ vh)
                o = torch.cat(heads, dim=-1)  # (ws*ws, C)
                for i in range(ws):
                    for j in range(ws):
                        out_map[y0 + i][x0 + j] = o[i * ws + j]
        rows.append(torch.stack([torch.stack(r) for r in out_map]).reshape(H * W, C))
    attn = torch.stack(rows)  # (B, HW, C)
    y = x + attn @ m.proj.weight.T + m.proj.bias
    hidden = torch.nn.functional.gelu(m.norm2(y) @ m.mlp.fc1.weight.T + m.mlp.fc1.bias)
    return y + hidden @ m.mlp.fc2.weight.T + m.mlp.fc2.bias


def _module(use_sdpa: bool = True, ws: int = 4, ratio: float = 0.5, dim: int = 8, heads: int = 2) -> OCAB:
    m = OverlappingCrossAttention(dim, ws, ratio, heads, use_sdpa=use_sdpa).to(DT)
    with torch.no_grad():  # non-trivial biases and norms
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def test_overlap_window_size() -> None:
    assert overlap_window_size(16, 0.5) == 24
    assert ows_direct(8, 0.5) == 12
    assert overlap_window_size(4, 0.5) == 6
    with pytest.raises(ValueError):
        overlap_window_size(4, -1.0)


def test_names_and_shapes_match_official_layout() -> None:
    m = OCAB(144, 16, 0.5, 6)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["relative_position_bias_table"] == (1521, 6)
    assert shapes["relative_position_index"] == (256, 576)
    assert shapes["qkv.weight"] == (432, 144)
    assert shapes["mlp.fc1.weight"] == (288, 144)
    official = {
        "relative_position_bias_table", "norm1.weight", "norm1.bias", "qkv.weight", "qkv.bias", "proj.weight",
        "proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
        "mlp.fc2.bias",
    }  # fmt: skip
    assert set(shapes) - {"relative_position_index"} == official
    assert int(m.relative_position_index.min()) >= 0 and int(m.relative_position_index.max()) < 1521


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize(
    ("ws", "ratio", "H", "W"),
    [(4, 0.5, 8, 8), (4, 0.5, 4, 12), (4, 1.0, 8, 4), (2, 1.0, 4, 2), (4, 0.25, 8, 8)],  # 0.25: odd Mo - M
)
def test_matches_naive_values_and_grads(use_sdpa: bool, ws: int, ratio: float, H: int, W: int) -> None:
    m = _module(use_sdpa, ws=ws, ratio=ratio)
    x = torch.randn(2, H * W, 8, dtype=DT, requires_grad=True)
    y = m(x, (H, W))
    y_ref = naive_ocab(m, x, H, W)
    torch.testing.assert_close(y, y_ref, **TOL)
    g = torch.randn_like(y)
    params = [x, *m.parameters()]
    grads = torch.autograd.grad(y, params, g)
    grads_ref = torch.autograd.grad(y_ref, params, g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_sdpa_and_explicit_paths_agree() -> None:
    m = _module(True)
    x = torch.randn(3, 64, 8, dtype=DT)
    y_fast = m(x, (8, 8))
    m.use_sdpa = False
    y_slow = m(x, (8, 8))
    torch.testing.assert_close(y_fast, y_slow, **TOL)
    # float32 too, the dtype models run in
    m32 = _module(True).float()
    x32 = x.float()
    a = m32(x32, (8, 8))
    m32.use_sdpa = False
    torch.testing.assert_close(a, m32(x32, (8, 8)), atol=1e-5, rtol=1e-5)


def test_rpi_argument_official_convention() -> None:
    """Passing the official (un-wrapped, partly negative) index gives the same result as the buffer."""
    m = _module()
    ws, ows = m.window_size, m.overlap_win_size
    qy, qx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")
    dy = ky.reshape(1, -1) - qy.reshape(-1, 1)
    dx = kx.reshape(1, -1) - qx.reshape(-1, 1)
    raw = (dy + ws - ows + 1) * (ws + ows - 1) + (dx + ws - ows + 1)
    assert int(raw.min()) < 0  # the official index really has negative entries
    x = torch.randn(1, 64, 8, dtype=DT)
    torch.testing.assert_close(m(x, (8, 8), rpi=raw), m(x, (8, 8)), **TOL)


def test_rejects_bad_sizes() -> None:
    m = _module()
    with pytest.raises(ValueError):
        m(torch.randn(1, 6 * 8, 8, dtype=DT), (6, 8))
    with pytest.raises(ValueError):
        m(torch.randn(1, 60, 8, dtype=DT), (8, 8))
    with pytest.raises(ValueError):
        OCAB(10, 4, 0.5, 3)


def test_hat_default_geometry_runs() -> None:
    m = OCAB(12, 16, 0.5, 2)
    x = torch.randn(1, 32 * 48, 12)
    assert m(x, (32, 48)).shape == (1, 32 * 48, 12)
