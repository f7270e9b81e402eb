"""I2Correlation attention and RBF targets (FOD) against naive few-line formulas."""

from __future__ import annotations

import math

import pytest
import torch

from shared_attention.attention.correlation import (
    I2CorrelationAttention,
    neighbourhood_mask,
    rbf_sigma,
    rbf_targets,
    rbf_targets_naive,
    squared_distance_maps,
)


def _naive_target(sigma: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Loops over token pairs: T[b, k, i, j] = 1/(2 pi s1 s2) exp(-dy^2/(2 s1^2) - dx^2/(2 s2^2))."""
    b, heads, n, _ = sigma.shape
    out = torch.zeros(b, heads, n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            dy, dx = (i // w - j // w) ** 2, (i % w - j % w) ** 2
            s1, s2 = sigma[..., i, 0].double(), sigma[..., i, 1].double()
            out[:, :, i, j] = torch.exp(-dy / (2 * s1**2) - dx / (2 * s2**2)) / (2 * math.pi * s1 * s2)
    return out


def test_distance_maps_match_definition() -> None:
    dy, dx = squared_distance_maps(2, 3)
    # token 0 = (0, 0), token 5 = (1, 2)
    assert dy[0, 5] == 1 and dx[0, 5] == 4 and dy[1, 4] == 1 and dx[1, 4] == 0
    assert torch.equal(dy, dy.T) and dy.shape == (6, 6)


def test_sigma_range_and_formula() -> None:
    raw = torch.tensor([-10.0, 0.0, 10.0])
    s = rbf_sigma(raw)
    expected = torch.tensor([3 ** (1e-5 + 1 / (1 + math.exp(50))) - 1, 3**0.50001 - 1, 3 ** (1 + 1e-5) - 1])
    torch.testing.assert_close(s, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("grid", [(3, 3), (2, 4)])
def test_targets_fast_and_official_match_naive(grid: tuple[int, int]) -> None:
    h, w = grid
    torch.manual_seed(0)
    sigma = rbf_sigma(torch.randn(2, 3, h * w, 2) * 0.5)
    ref = _naive_target(sigma, h, w)
    fast = rbf_targets(sigma, grid, normalize=False).double()
    official = rbf_targets_naive(sigma, *squared_distance_maps(h, w)).double()
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(official, ref, rtol=1e-4, atol=1e-6)
    norm = rbf_targets(sigma, grid, normalize=True).double()
    torch.testing.assert_close(norm, ref / ref.sum(-1, keepdim=True), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(norm.sum(-1), torch.ones(2, 3, h * w, dtype=torch.float64))


def test_tiny_sigma_keeps_the_diagonal() -> None:
    sigma = torch.full((1, 1, 4, 2), 1.2e-5)
    t = rbf_targets(sigma, (2, 2), normalize=True)
    torch.testing.assert_close(t[0, 0], torch.eye(4))


def test_bf16_autocast_keeps_sharp_widths_positive() -> None:
    # in bfloat16 3 ** 1e-5 rounds to 1: the width of a sharp peak became 0 and its target 0 / 0 (NaN)
    raw = torch.full((1, 1, 4, 2), -10.0, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sigma = rbf_sigma(raw)
        t = rbf_targets(sigma, (2, 2), normalize=True)
    assert sigma.dtype == torch.float32 and bool((sigma > 1e-5).all())
    torch.testing.assert_close(t[0, 0], torch.eye(4))


def _naive_attention(m: I2CorrelationAttention, x: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    b, n, d = x.shape
    heads, hd = m.n_heads, d // m.n_heads
    q = m.query_projection(x).view(b, n, heads, hd)
    k = m.key_projection(ctx).view(ctx.shape[0], n, heads, hd).expand(b, -1, -1, -1)
    v = m.value_projection(ctx).view(ctx.shape[0], n, heads, hd).expand(b, -1, -1, -1)
    attn = torch.softmax(torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(hd), dim=-1)
    out = torch.einsum("bhls,bshd->blhd", attn, v).reshape(b, n, d)
    sig = rbf_sigma(m.sigma_projection(x).view(b, n, heads, 2)).permute(0, 2, 1, 3)
    return out, attn, sig


@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_naive(cross: bool) -> None:
    torch.manual_seed(1)
    m = I2CorrelationAttention(16, 4).eval()
    x = torch.randn(2, 12, 16)
    ctx = torch.randn(1, 12, 16) if cross else x
    res = m(x, ctx if cross else None, grid=(3, 4))
    out, attn, sig = _naive_attention(m, x, ctx)
    torch.testing.assert_close(res.out, out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.attn, attn, rtol=1e-5, atol=1e-6)
    target = _naive_target(sig, 3, 4)
    torch.testing.assert_close(res.target.double(), target / target.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)
    official = m(x, ctx if cross else None, grid=(3, 4), naive_target=True)  # the reference route agrees
    torch.testing.assert_close(official.attn, res.attn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(official.target, res.target, rtol=1e-4, atol=1e-6)
    # the fused path (no maps) gives the same output
    fused = m(x, ctx if cross else None, grid=(3, 4), need_maps=False)
    assert fused.attn is None and fused.target is None
    torch.testing.assert_close(fused.out, out, rtol=1e-5, atol=1e-5)


def test_out_projection_flag() -> None:
    torch.manual_seed(2)
    m = I2CorrelationAttention(8, 2)
    x = torch.randn(1, 4, 8)
    plain = m(x, grid=(2, 2)).out
    with torch.no_grad():
        m.out_projection.weight.mul_(3.0)
    torch.testing.assert_close(m(x, grid=(2, 2)).out, plain)  # official: projection discarded
    m.use_out_projection = True
    torch.testing.assert_close(m(x, grid=(2, 2)).out, m.out_projection(plain))


def test_gradients_reach_sigma_through_targets() -> None:
    m = I2CorrelationAttention(8, 2)
    res = m(torch.randn(1, 9, 8), grid=(3, 3))
    res.target.square().sum().backward()
    assert m.sigma_projection.weight.grad is not None and m.sigma_projection.weight.grad.abs().sum() > 0
    assert m.query_projection.weight.grad is None


def test_bad_shapes_raise() -> None:
    m = I2CorrelationAttention(8, 2)
    with pytest.raises(ValueError, match="square"):
        m(torch.randn(1, 6, 8))
    with pytest.raises(ValueError, match="same grid"):
        m(torch.randn(1, 4, 8), torch.randn(1, 9, 8), grid=(2, 2))
    with pytest.raises(ValueError, match="divisible"):
        I2CorrelationAttention(10, 3)


def test_neighbourhood_mask_matches_a_loop() -> None:
    h, w, r = 4, 5, 1
    mask = neighbourhood_mask(h, w, r)
    for i in range(h * w):
        for j in range(h * w):
            near = abs(i // w - j // w) <= r and abs(i % w - j % w) <= r
            assert bool(mask[i, j]) is (not near)
    assert not mask.diagonal().any()  # a token never sees itself
    assert neighbourhood_mask(3, 3, 0).equal(~torch.eye(9, dtype=torch.bool))
    with pytest.raises(ValueError, match="whole 3x3 grid"):
        neighbourhood_mask(3, 3, 1)
    with pytest.raises(ValueError, match=">= 0"):
        neighbourhood_mask(3, 3, -1)


@pytest.mark.parametrize("cross", [False, True])
def test_excluded_neighbourhood_matches_masked_naive_attention(cross: bool) -> None:
    torch.manual_seed(3)
    plain = I2CorrelationAttention(16, 4).eval()
    m = I2CorrelationAttention(16, 4, exclude_radius=1).eval()
    m.load_state_dict(plain.state_dict())  # no new parameters: the same state dict loads strictly
    x = torch.randn(2, 20, 16)
    ctx = torch.randn(1, 20, 16) if cross else None
    res = m(x, ctx, grid=(4, 5))
    if cross:  # the mask is for self-attention only: cross-attention is unchanged
        torch.testing.assert_close(res.out, plain(x, ctx, grid=(4, 5)).out)
        return
    q = m.query_projection(x).view(2, 20, 4, 4).transpose(1, 2)
    k = m.key_projection(x).view(2, 20, 4, 4).transpose(1, 2)
    v = m.value_projection(x).view(2, 20, 4, 4).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / 2.0
    allowed = neighbourhood_mask(4, 5, 1)
    weights = torch.where(allowed, scores.exp(), torch.zeros(()))
    attn = weights / weights.sum(-1, keepdim=True)
    out = (attn @ v).transpose(1, 2).reshape(2, 20, 16)
    torch.testing.assert_close(res.attn, attn, rtol=1e-5, atol=1e-6)
    assert res.attn[..., ~allowed].abs().max() == 0  # nothing flows from a token's own neighbourhood
    torch.testing.assert_close(res.out, out, rtol=1e-5, atol=1e-5)
    fused = m(x, None, grid=(4, 5), need_maps=False)  # SDPA with the boolean mask
    torch.testing.assert_close(fused.out, out, rtol=1e-5, atol=1e-5)
    naive = m(x, None, grid=(4, 5), naive_target=True)  # the core's explicit path
    torch.testing.assert_close(naive.out, out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain(x, None, grid=(4, 5)).out, out, atol=1e-3)
