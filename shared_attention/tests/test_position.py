"""Tests for shared_attention.layers.position against python-math reference loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from shared_attention.layers import (
    RotaryEmbedding,
    ScaledSinusoidalEmbedding,
    apply_rotary,
    sinusoidal_1d,
    sinusoidal_2d,
)

DT = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-8}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_sinusoidal_1d_vs_math_loop(base: float) -> None:
    L, D = 7, 10
    pe = sinusoidal_1d(L, D, base=base, dtype=DT)
    assert pe.shape == (L, D) and pe.dtype == DT
    ref = torch.zeros(L, D, dtype=DT)
    for p in range(L):
        for i in range(D // 2):
            ref[p, 2 * i] = math.sin(p / base ** (2 * i / D))
            ref[p, 2 * i + 1] = math.cos(p / base ** (2 * i / D))
    torch.testing.assert_close(pe, ref, **TOL)


def test_sinusoidal_1d_concat_layout_and_default_dtype() -> None:
    L, D = 5, 6
    pe = sinusoidal_1d(L, D, interleaved=False, dtype=DT)
    for p in range(L):
        for i in range(D // 2):
            assert pe[p, i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / D)), abs=1e-12)
            assert pe[p, D // 2 + i].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / D)), abs=1e-12)
    assert sinusoidal_1d(3, 4).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError):
        sinusoidal_1d(3, 5)


def test_sinusoidal_2d_exact_layout_vs_math_loop() -> None:
    h, w, D = 3, 5, 12
    pe = sinusoidal_2d(h, w, D, dtype=DT)
    assert pe.shape == (h * w, D)
    q = D // 4
    ref = torch.zeros(h * w, D, dtype=DT)
    for y in range(h):
        for x in range(w):
            n = y * w + x
            for k in range(q):
                omega = 1.0 / 10000.0 ** (k / q)
                ref[n, k] = math.sin(x * omega)
                ref[n, q + k] = math.cos(x * omega)
                ref[n, 2 * q + k] = math.sin(y * omega)
                ref[n, 3 * q + k] = math.cos(y * omega)
    torch.testing.assert_close(pe, ref, **TOL)
    with pytest.raises(ValueError):
        sinusoidal_2d(2, 2, 10)


def test_scaled_sinusoidal_embedding() -> None:
    D, L = 8, 6
    m = ScaledSinusoidalEmbedding(D)
    assert m.scale.shape == (1,) and m.scale.requires_grad
    assert m.scale.item() == pytest.approx(D**-0.5)
    assert set(m.state_dict()) == {"scale", "inv_freq"}
    x = torch.randn(3, L, D)
    emb = m(x)
    assert emb.shape == (L, D) and emb.dtype == x.dtype
    ref = torch.zeros(L, D)
    for p in range(L):
        for i in range(D // 2):
            ang = p / 10000 ** (2 * i / D)
            ref[p, i] = math.sin(ang) * D**-0.5
            ref[p, D // 2 + i] = math.cos(ang) * D**-0.5
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-5)
    (g,) = torch.autograd.grad(emb.sum(), [m.scale])
    torch.testing.assert_close(g, (ref / D**-0.5).sum().reshape(1), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        m.scale.fill_(2.0)
    torch.testing.assert_close(m(x), ref / D**-0.5 * 2.0, atol=1e-5, rtol=1e-5)
    assert m(x.half()).dtype == torch.float16


# ----------------------------------------------------------------------------- rotary


def naive_rotary(x: Tensor, dim: int, base: float, interleaved: bool, offset: int = 0) -> Tensor:
    """Per-pair 2x2 rotation with python math: pair i at position m rotated by m * base^(-2i/dim)."""
    out = x.clone()
    L = x.shape[-2]
    flat = x.reshape(-1, L, x.shape[-1])
    res = out.view(-1, L, x.shape[-1])
    for b in range(flat.shape[0]):
        for m in range(L):
            for i in range(dim // 2):
                theta = (m + offset) * base ** (-2 * i / dim)
                c, s = math.cos(theta), math.sin(theta)
                ia, ib = (2 * i, 2 * i + 1) if interleaved else (i, i + dim // 2)
                a, bb = flat[b, m, ia].item(), flat[b, m, ib].item()
                res[b, m, ia] = c * a - s * bb
                res[b, m, ib] = s * a + c * bb
    return out


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("dim,D", [(8, 8), (4, 10)])
def test_rotary_vs_naive_pair_rotation(interleaved: bool, dim: int, D: int) -> None:  # noqa: N803
    rope = RotaryEmbedding(dim, base=100.0, interleaved=interleaved)
    x = torch.randn(2, 3, 5, D, dtype=DT)
    y = rope.rotate(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, naive_rotary(x, dim, 100.0, interleaved), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        rope(x, offset=3), naive_rotary(x, dim, 100.0, interleaved, offset=3), atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("interleaved", [True, False])
def test_rotary_partial_leaves_tail_untouched(interleaved: bool) -> None:
    rope = RotaryEmbedding(4, interleaved=interleaved)
    x = torch.randn(2, 6, 10)
    y = rope.rotate(x)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert not torch.allclose(y[..., 1:, :4], x[..., 1:, :4])
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])  # position 0 is the identity
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # rotations preserve norms


@pytest.mark.parametrize("interleaved", [True, False])
def test_rotary_relative_property(interleaved: bool) -> None:
    """<R_m q, R_n k> depends only on m - n: the score matrix of repeated q / k is Toeplitz."""
    L, D = 9, 8
    rope = RotaryEmbedding(6, interleaved=interleaved)
    q = torch.randn(D, dtype=DT).expand(L, D)
    k = torch.randn(D, dtype=DT).expand(L, D)
    scores = rope.rotate(q) @ rope.rotate(k).T  # (L, L)
    for m in range(1, L):
        for n in range(1, L):
            torch.testing.assert_close(scores[m, n], scores[m - 1, n - 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores[0, 0], scores[0, 3])
    # offsets shift both: same scores
    torch.testing.assert_close(
        rope.rotate(q, offset=4) @ rope.rotate(k, offset=4).T, scores, atol=1e-5, rtol=1e-5
    )


def test_rotary_interleaved_and_half_split_are_permutations_of_each_other() -> None:
    dim = 8
    x = torch.randn(3, 5, dim)
    perm = torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])  # interleaved -> halves
    inv = torch.argsort(perm)
    y_int = RotaryEmbedding(dim, interleaved=True).rotate(x)
    y_half = RotaryEmbedding(dim, interleaved=False).rotate(x[..., perm])
    torch.testing.assert_close(y_half[..., inv], y_int)


def test_rotary_buffer_and_functional() -> None:
    rope = RotaryEmbedding(6, base=50.0)
    assert rope.freqs.shape == (3,) and not rope.freqs.requires_grad
    assert list(rope.parameters()) == [] and "freqs" in rope.state_dict()
    torch.testing.assert_close(rope.freqs, torch.tensor([50.0 ** (-2 * i / 6) for i in range(3)]))
    cos, sin = rope.cos_sin(4, offset=2)
    assert cos.shape == sin.shape == (4, 3)
    x = torch.randn(4, 7)
    torch.testing.assert_close(apply_rotary(x, cos, sin), rope.rotate(x, offset=2))
    xb = x.bfloat16()
    assert apply_rotary(xb, cos, sin).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        RotaryEmbedding(5)
    with pytest.raises(ValueError):
        apply_rotary(torch.randn(4, 4), cos, sin)


def test_rotary_gradients_match_naive_matrix_form() -> None:
    """Backward through rotate equals backward through an explicit block-diagonal rotation matrix."""
    dim, L = 4, 5
    rope = RotaryEmbedding(dim, base=10.0)
    x = torch.randn(L, dim, dtype=DT, requires_grad=True)
    mats = []
    for m in range(L):
        R = torch.zeros(dim, dim, dtype=DT)
        for i in range(dim // 2):
            t = m * 10.0 ** (-2 * i / dim)
            R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
                [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=DT
            )
        mats.append(R)
    ref = torch.stack([mats[m] @ x[m] for m in range(L)])
    out = rope.rotate(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    g = torch.randn_like(ref)
    (ga,) = torch.autograd.grad((out * g).sum(), [x])
    (gb,) = torch.autograd.grad((ref * g).sum(), [x])
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)
