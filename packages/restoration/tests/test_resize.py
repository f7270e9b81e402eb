"""MATLAB-compatible bicubic imresize: reference loop, invariants, distance to OpenCV, published baselines."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
from sa_restoration.metrics import psnr_y, quantize_uint8
from sa_restoration.resize import _weight_matrix, bicubic_upscale, cubic, imresize, resize_weights


def _keys(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t < 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _mirror(j: int, n: int) -> int:
    while j < 0 or j >= n:
        j = -j - 1 if j < 0 else 2 * n - 1 - j
    return j


def loop_resize_axis(x: np.ndarray, scale: float) -> np.ndarray:
    """Straightforward MATLAB algorithm along axis 0, one output pixel at a time (0-based coordinates)."""
    n = x.shape[0]
    out_n = math.ceil(n * scale - 1e-9)
    k = min(scale, 1.0)  # kernel stretch when downscaling (antialias)
    radius = 2.0 / k
    out = np.zeros((out_n,) + x.shape[1:])
    for i in range(out_n):
        centre = (i + 0.5) / scale - 0.5
        acc = np.zeros(x.shape[1:])
        total = 0.0
        for j in range(math.floor(centre - radius) - 1, math.ceil(centre + radius) + 2):
            w = k * _keys(k * (centre - j))
            acc = acc + w * x[_mirror(j, n)]
            total += w
        out[i] = acc / total
    return out


def loop_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    y = loop_resize_axis(img.astype(np.float64), scale)
    return np.swapaxes(loop_resize_axis(np.swapaxes(y, 0, 1), scale), 0, 1)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.6, 1.5, 2, 3, 4])
def test_matches_reference_loop(scale: float) -> None:
    img = np.random.default_rng(1).random((13, 17, 2))
    ours = imresize(img, scale)
    ref = loop_imresize(img, scale)
    assert ours.shape == ref.shape == (math.ceil(13 * scale - 1e-9), math.ceil(17 * scale - 1e-9), 2)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_tiny_images_mirror_repeatedly() -> None:
    # Kernel support (16 px at x1/4) much wider than the image: the symmetric padding must wrap repeatedly.
    img = np.random.default_rng(2).random((3, 5))
    np.testing.assert_allclose(imresize(img, 0.25), loop_imresize(img[..., None], 0.25)[..., 0], atol=1e-12)
    np.testing.assert_allclose(imresize(img, 4.0), loop_imresize(img[..., None], 4.0)[..., 0], atol=1e-12)


def test_weights_rows_sum_to_one_and_kernel() -> None:
    for n, s in [(10, 0.5), (7, 3.0), (9, 1 / 3)]:
        w = resize_weights(n, s)
        assert w.shape == (math.ceil(n * s - 1e-9), n)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(cubic(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0])


def test_constant_stays_constant() -> None:
    img = np.full((37, 50, 3), 0.3, dtype=np.float32)
    for s in (0.5, 0.25, 1 / 3, 2.0, 4.0):
        out = imresize(img, s)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, 0.3, atol=1e-6)
    assert imresize(img, 0.5).shape == (19, 25, 3)  # ceil, like MATLAB


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0, 3.0])
def test_linear_ramp_preserved_in_interior(scale: float) -> None:
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 0.01 * xx - 0.02 * yy + 0.7
    out = imresize(img, scale)
    oh, ow = out.shape
    cy = (np.arange(oh) + 0.5) / scale - 0.5  # output pixel centres in input coordinates
    cx = (np.arange(ow) + 0.5) / scale - 0.5
    expect = 0.01 * cx[None, :] - 0.02 * cy[:, None] + 0.7
    m = math.ceil(2 / min(scale, 1) * scale) + 1  # output pixels whose kernel reaches the border
    np.testing.assert_allclose(out[m:-m, m:-m], expect[m:-m, m:-m], atol=1e-10)
    assert np.abs(out - expect).max() > 1e-4  # borders differ (mirror padding), so the test is not vacuous


def test_differs_from_opencv() -> None:
    import skimage.data

    g = skimage.data.astronaut().astype(np.float64) / 255.0

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))

    down = imresize(g, 0.25)
    cv_cubic = cv2.resize(g, (128, 128), interpolation=cv2.INTER_CUBIC)  # a = -0.75, no antialias
    cv_area = cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA)  # box filter
    # Measured: ~27.2 dB apart from INTER_CUBIC (aliasing), ~39.9 dB from INTER_AREA.
    assert 25 < psnr(down, cv_cubic) < 30
    assert 37 < psnr(down, cv_area) < 43
    # Antialiasing: white noise keeps far less variance after our x1/2 than after INTER_CUBIC.
    noise = np.random.default_rng(0).random((64, 64))
    assert imresize(noise, 0.5).std() < 0.7 * cv2.resize(noise, (32, 32), interpolation=cv2.INTER_CUBIC).std()
    # Upscaling: only the kernel differs (a = -0.5 vs -0.75), ~43-45 dB apart.
    up = imresize(down, 4)
    cv_up = cv2.resize(down, (512, 512), interpolation=cv2.INTER_CUBIC)
    assert 40 < psnr(up, cv_up) < 48


@pytest.mark.parametrize("scale", [0.5, 0.25, 2.0])
def test_cost_is_linear_in_pixels_and_weights_are_cached(scale: float) -> None:
    """The cost, stated without a clock: each axis is one sparse product with at most the kernel's taps per
    output pixel (no dense n x m operator, no per-pixel Python), built once per (size, scale)."""
    n = 509  # not a size other tests use, so the cache starts cold for it
    out_n = math.ceil(n * scale - 1e-9)
    taps = math.ceil(4.0 / min(scale, 1.0)) + 2  # support of the (stretched) cubic kernel, plus MATLAB's 2 extra
    _weight_matrix.cache_clear()
    img = np.random.default_rng(0).random((n, n, 3)).astype(np.float32)
    out = imresize(img, scale)
    assert out.shape == (out_n, out_n, 3)
    info = _weight_matrix.cache_info()
    assert info.misses == 1 and info.hits == 1  # square image: one operator serves both axes
    m = _weight_matrix(n, out_n, float(scale), True)
    assert sp.issparse(m) and m.shape == (out_n, n)
    assert m.nnz <= out_n * taps  # work per axis: O(output pixels x taps), not O(output x input)
    imresize(img[:, :-1], scale)  # a new width only: the row operator is reused
    assert _weight_matrix.cache_info().misses == 2


def test_speed_512() -> None:
    """Wall-clock sanity bound only (the cost itself is asserted above without a clock): ~3 ms per call on
    one core today; the bound is generous enough for a 20x slower or heavily loaded machine."""
    img = np.random.default_rng(0).random((512, 512, 3)).astype(np.float32)
    imresize(img, 0.25)  # warm the weight cache
    t = time.perf_counter()
    for s in (0.5, 0.25):
        imresize(img[:-1, :-3], s)  # uncached sizes
    assert (time.perf_counter() - t) / 2 < 2.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match="HxW"):
        imresize(np.zeros(4), 2)
    with pytest.raises(ValueError, match="scale >= 1"):
        bicubic_upscale(np.zeros((4, 4)), 0.5)
    np.testing.assert_array_equal(bicubic_upscale(np.ones((2, 3)), 2), np.ones((4, 6)))


TEST_SET = ("astronaut", "camera", "coffee", "chelsea", "rocket")


def test_bicubic_baseline_matches_published_numbers() -> None:
    """LR = imresize(modcrop(GT), 1/s) rounded to 8 bits, SR = imresize(LR, s), PSNR-Y with crop = s.

    Reference (MATLAB-style bicubic): x2 31.95 dB, x4 28.35 dB. Measured: 31.953 / 28.355 with the gray
    camera on its gray values (MATLAB-script convention); 32.22 / 28.62 with camera replicated to RGB.
    """
    import skimage.data

    for s, ref, ref_rgb in ((2, 31.95, 32.22), (4, 28.35, 28.62)):
        gray_conv, rgb_conv = [], []
        for name in TEST_SET:
            gt = getattr(skimage.data, name)().astype(np.float64) / 255.0
            gt = gt[: gt.shape[0] - gt.shape[0] % s, : gt.shape[1] - gt.shape[1] % s]
            lr = quantize_uint8(imresize(gt, 1 / s)) / 255.0
            sr = bicubic_upscale(lr, s)
            gt3, sr3 = (np.repeat(x[..., None], 3, 2) for x in (gt, sr)) if gt.ndim == 2 else (gt, sr)
            gray_conv.append(psnr_y(sr, gt, s))
            rgb_conv.append(psnr_y(sr3, gt3, s))
        assert abs(np.mean(gray_conv) - ref) < 0.01, (s, gray_conv)
        assert abs(np.mean(rgb_conv) - ref_rgb) < 0.01, (s, rgb_conv)
