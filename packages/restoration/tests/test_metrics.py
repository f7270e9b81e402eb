"""PSNR / SSIM on Y against scikit-image, numpy vs torch, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sa_restoration.metrics import (
    is_gray,
    psnr_y,
    psnr_y_torch,
    quantize_uint8,
    rgb_to_y,
    rgb_to_y_torch,
    ssim_y,
    ssim_y_torch,
)
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _pair(h: int = 40, w: int = 52, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx), np.cos(5 * yy), xx * yy], axis=-1) * 0.5 + 0.5
    gt = np.clip(base + 0.1 * rng.standard_normal((h, w, 3)), 0, 1)
    sr = gt + noise * rng.standard_normal((h, w, 3))  # leaves [0, 1] a little: clipping is exercised
    return sr.astype(np.float32), gt.astype(np.float32)


def _independent_y(img: np.ndarray) -> np.ndarray:
    """Y per MATLAB rgb2ycbcr(im2double(im2uint8(img))) written out directly."""
    u8 = np.floor(np.clip(img.astype(np.float64), 0, 1) * 255 + 0.5)
    return (65.481 * u8[..., 0] + 128.553 * u8[..., 1] + 24.966 * u8[..., 2]) / 255.0 + 16.0


def test_rgb_to_y_values() -> None:
    np.testing.assert_allclose(rgb_to_y(np.zeros((1, 1, 3))), 16.0)
    np.testing.assert_allclose(rgb_to_y(np.ones((1, 1, 3))), 235.0, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(np.array([[[1.0, 0, 0]]])), 16 + 65.481)
    np.testing.assert_allclose(rgb_to_y(np.array([[[255, 255, 255]]], np.uint8)), 235.0, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(np.full((2, 2), 0.5)), 127.5)  # gray: no BT.601 mapping
    t = torch.rand(2, 3, 5, 6)
    np.testing.assert_allclose(rgb_to_y_torch(t)[1].numpy(), rgb_to_y(t[1].permute(1, 2, 0).numpy()), atol=1e-9)


def test_quantize_half_up() -> None:
    x = np.array([0.5 / 255, 1.5 / 255, -1.0, 2.0, 254.5 / 255])
    assert quantize_uint8(x).tolist() == [1, 2, 0, 255, 255]


@pytest.mark.parametrize("crop", [0, 2, 4])
def test_psnr_matches_skimage(crop: int) -> None:
    sr, gt = _pair()
    ys, yg = _independent_y(sr), _independent_y(gt)
    if crop:
        ys, yg = ys[crop:-crop, crop:-crop], yg[crop:-crop, crop:-crop]
    ref = peak_signal_noise_ratio(yg, ys, data_range=255)
    assert psnr_y(sr, gt, crop) == pytest.approx(ref, abs=1e-9)


def test_crop_border_removes_border_errors() -> None:
    _, gt = _pair()
    bad = gt.copy()
    bad[0] = 1 - bad[0]  # error only in the first row
    assert psnr_y(bad, gt, 0) < 40
    assert psnr_y(bad, gt, 1) == math.inf


@pytest.mark.parametrize("crop", [0, 3])
def test_ssim_matches_skimage(crop: int) -> None:
    sr, gt = _pair(seed=3, noise=0.08)
    ys, yg = _independent_y(sr), _independent_y(gt)
    if crop:
        ys, yg = ys[crop:-crop, crop:-crop], yg[crop:-crop, crop:-crop]
    ref = structural_similarity(
        yg, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    ours = ssim_y(sr, gt, crop)
    assert 0.3 < ours < 0.99
    assert ours == pytest.approx(ref, abs=1e-7)


def test_identical_and_gray_conventions() -> None:
    _, gt = _pair()
    assert psnr_y(gt, gt, 4) == math.inf
    assert ssim_y(gt, gt, 4) == pytest.approx(1.0)
    # gray image: replicated RGB gets the 219/255 Y range, i.e. +20 log10(255/219) dB over the gray convention
    g = gt[..., 0]
    n = np.clip(g + 0.03 * np.random.default_rng(5).standard_normal(g.shape), 0, 1)
    rgb = psnr_y(np.repeat(n[..., None], 3, 2), np.repeat(g[..., None], 3, 2), 2)
    gray = psnr_y(n, g, 2)
    assert rgb - gray == pytest.approx(20 * math.log10(255 / 219), abs=0.02)
    assert gray == pytest.approx(peak_signal_noise_ratio(
        quantize_uint8(g)[2:-2, 2:-2].astype(float), quantize_uint8(n)[2:-2, 2:-2].astype(float), data_range=255))
    assert is_gray(g) and is_gray(np.repeat(g[..., None], 3, 2)) and not is_gray(gt)


def test_torch_agrees_with_numpy() -> None:
    pairs = [_pair(seed=s) for s in range(3)]
    sr = torch.stack([torch.from_numpy(p[0]).permute(2, 0, 1) for p in pairs])
    gt = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1) for p in pairs])
    for crop in (0, 4):
        pt = psnr_y_torch(sr, gt, crop)
        st = ssim_y_torch(sr, gt, crop)
        assert pt.shape == st.shape == (3,)
        for i, (s, g) in enumerate(pairs):
            assert pt[i].item() == pytest.approx(psnr_y(s, g, crop), abs=1e-9)
            assert st[i].item() == pytest.approx(ssim_y(s, g, crop), abs=1e-9)
    assert torch.isinf(psnr_y_torch(gt, gt, 2)).all()
    # quantisation: sub-level differences do not count, in both versions
    gq = torch.round(gt * 255) / 255
    assert torch.isinf(psnr_y_torch(gq + 0.3 / 255, gq, 0)).all()
    assert psnr_y(pairs[0][1] + 0.3 / 255, pairs[0][1], 0) < 100  # unquantised gt: not identical
    g0 = gq[0].permute(1, 2, 0).numpy()
    assert psnr_y(g0 + 0.3 / 255, g0, 0) == math.inf


def test_torch_no_grad_and_dtype() -> None:
    sr = torch.rand(1, 3, 20, 20, requires_grad=True)
    out = psnr_y_torch(sr, torch.rand(1, 3, 20, 20), 2)
    assert out.dtype == torch.float64 and not out.requires_grad


def test_bad_inputs() -> None:
    sr, gt = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(sr[:-1], gt)
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(sr, gt, 30)
    with pytest.raises(ValueError, match="HxWx3"):
        psnr_y(sr[..., :2], gt[..., :2])
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(sr[:14, :14], gt[:14, :14], 2)
    with pytest.raises(ValueError, match="Bx3xHxW"):
        psnr_y_torch(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
