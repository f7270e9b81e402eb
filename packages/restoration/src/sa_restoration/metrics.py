"""PSNR / SSIM on the Y channel, the evaluation convention of the SR papers (HAT, SwinIR, RCAN, EDSR).

Conventions (identical in the numpy and the torch versions):

* Inputs are HxWx3 (numpy) or Bx3xHxW (torch) float RGB nominally in ``[0, 1]``. The numpy functions also
  take single-channel HxW (or HxWx1) gray images: as in the papers' MATLAB scripts (``if size(im, 3) == 1,
  use it as is``), a gray image is measured on its own 0-255 values, *without* the BT.601 ``16 + 219 v``
  mapping. Replicating a gray image to RGB and then taking Y compresses its range by 219/255 and raises
  its PSNR by ``20 log10(255 / 219) = 1.32`` dB; pass the gray channel (``img[..., 0]``) to follow the
  gray convention (see :func:`is_gray`).
* Both images are first quantised to 8 bits like a saved PNG: ``floor(clip(x, 0, 1) * 255 + 0.5)``
  (round half up, MATLAB's ``im2uint8``). Papers evaluate saved 8-bit results, so the model's sub-level
  precision is not credited.
* Y is ITU-R BT.601 with MATLAB's ``rgb2ycbcr`` convention, kept in float and on the 0-255 scale:
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B)`` with R, G, B in ``[0, 1]``, so Y lies in ``[16, 235]``.
  It is *not* rounded again (the ``rgb2ycbcr(im2double(...))`` path of the papers' MATLAB scripts and
  BasicSR's ``test_y_channel``). ``rgb_to_y`` returns this 0-255 scale.
* ``crop_border`` pixels are removed on every side before measuring (crop = scale in the papers).
* PSNR uses peak 255 on the float Y: ``10 log10(255^2 / MSE)``; identical images give ``inf``.
* SSIM is Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, local
  statistics with the population (biased) covariance, only windows fully inside the (cropped) image
  ("valid" filtering), mean over the SSIM map.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import correlate1d

if TYPE_CHECKING:  # torch is imported lazily so the numpy metrics (and the CLIs) start fast
    import torch

__all__ = [
    "gaussian_window",
    "is_gray",
    "psnr_y",
    "psnr_y_torch",
    "quantize_uint8",
    "rgb_to_y",
    "rgb_to_y_torch",
    "ssim_y",
    "ssim_y_torch",
]

_Y_COEFFS = (65.481, 128.553, 24.966)
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def quantize_uint8(img: np.ndarray) -> np.ndarray:
    """``floor(clip(img, 0, 1) * 255 + 0.5)`` as uint8 (round half up, like MATLAB's ``im2uint8``)."""
    x = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
    return np.floor(x * 255.0 + 0.5).astype(np.uint8)


def is_gray(img: np.ndarray) -> bool:
    """True for HxW / HxWx1 arrays and for HxWx3 arrays whose three channels are identical."""
    arr = np.asarray(img)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return True
    return bool(arr.ndim == 3 and arr.shape[2] == 3 and (arr[..., 0] == arr[..., 1]).all()
                and (arr[..., 0] == arr[..., 2]).all())


def _check_image(img: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{what} must be an HxWx3 RGB or HxW gray array, got shape {arr.shape}")
    return arr


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an HxWx3 RGB image in ``[0, 1]`` (float, or uint8 meaning /255), on the 0-255 scale.

    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``: values in ``[16, 235]`` (float64, not rounded). An HxW
    gray image is returned as ``255 * v`` (the gray convention, see the module docstring).
    """
    arr = _check_image(img, "image")
    x = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    if x.ndim == 2:
        return np.asarray(255.0 * x, dtype=np.float64)
    r, g, b = _Y_COEFFS
    return np.asarray(16.0 + r * x[..., 0] + g * x[..., 1] + b * x[..., 2], dtype=np.float64)


def _prepare_y(sr: np.ndarray, gt: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    sr = _check_image(sr, "sr")
    gt = _check_image(gt, "gt")
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt shapes differ: {sr.shape} vs {gt.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = gt.shape[:2]
    if h <= 2 * crop_border or w <= 2 * crop_border:
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")
    ys = rgb_to_y(sr if sr.dtype == np.uint8 else quantize_uint8(sr))
    yg = rgb_to_y(gt if gt.dtype == np.uint8 else quantize_uint8(gt))
    if crop_border:
        c = crop_border
        ys = ys[c:-c, c:-c]
        yg = yg[c:-c, c:-c]
    return ys, yg


def psnr_y(sr: np.ndarray, gt: np.ndarray, crop_border: int = 0) -> float:
    """PSNR (dB) on the Y channel after 8-bit quantisation and border crop (see the module docstring)."""
    ys, yg = _prepare_y(sr, gt, crop_border)
    mse = float(np.mean((ys - yg) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = _SSIM_SIZE, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps centred on the middle tap (float64)."""
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return np.asarray(g / g.sum(), dtype=np.float64)


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    r = (len(g) - 1) // 2
    y = correlate1d(x, g, axis=0, mode="constant")
    y = correlate1d(y, g, axis=1, mode="constant")
    return y[r:-r, r:-r]


def ssim_y(sr: np.ndarray, gt: np.ndarray, crop_border: int = 0) -> float:
    """SSIM (Wang et al. 2004) on the Y channel, 11x11 Gaussian sigma 1.5, valid windows only."""
    ys, yg = _prepare_y(sr, gt, crop_border)
    if min(ys.shape) < _SSIM_SIZE:
        raise ValueError(f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after cropping, got {ys.shape}")
    g = gaussian_window()
    mu_x = _filter_valid(ys, g)
    mu_y = _filter_valid(yg, g)
    sxx = _filter_valid(ys * ys, g) - mu_x**2
    syy = _filter_valid(yg * yg, g) - mu_y**2
    sxy = _filter_valid(ys * yg, g) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + _C1) * (2.0 * sxy + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (sxx + syy + _C2)
    return float(np.mean(num / den))


# ----------------------------------------------------------------------------------------------- torch


def _quantize_torch(x: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.floor(x.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5)


def rgb_to_y_torch(img: torch.Tensor) -> torch.Tensor:
    """Bx3xHxW RGB in ``[0, 1]`` -> BxHxW Y on the 0-255 scale (float64, no quantisation)."""
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected a Bx3xHxW tensor, got shape {tuple(img.shape)}")
    import torch

    x = img.to(torch.float64)
    r, g, b = _Y_COEFFS
    return 16.0 + r * x[:, 0] + g * x[:, 1] + b * x[:, 2]


def _prepare_y_torch(sr: torch.Tensor, gt: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantised, cropped float64 Y of both batches (no autograd)."""
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt shapes differ: {tuple(sr.shape)} vs {tuple(gt.shape)}")
    if sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"expected Bx3xHxW tensors, got shape {tuple(sr.shape)}")
    h, w = sr.shape[-2:]
    if crop_border < 0 or h <= 2 * crop_border or w <= 2 * crop_border:
        raise ValueError(f"crop_border {crop_border} is invalid for a {h}x{w} image")
    ys = rgb_to_y_torch(_quantize_torch(sr) / 255.0)
    yg = rgb_to_y_torch(_quantize_torch(gt.to(sr.device)) / 255.0)
    if crop_border:
        c = crop_border
        ys = ys[:, c:-c, c:-c]
        yg = yg[:, c:-c, c:-c]
    return ys, yg


def psnr_y_torch(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Per-image PSNR-Y (B,) float64 for Bx3xHxW batches, same numbers as :func:`psnr_y`."""
    import torch

    with torch.no_grad():
        ys, yg = _prepare_y_torch(sr, gt, crop_border)
        mse = ((ys - yg) ** 2).mean(dim=(1, 2))
        return 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> inf


def ssim_y_torch(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Per-image SSIM-Y (B,) float64 for Bx3xHxW batches, same numbers as :func:`ssim_y`."""
    import torch

    with torch.no_grad():
        return _ssim_torch(*_prepare_y_torch(sr, gt, crop_border))


def _ssim_torch(ys: torch.Tensor, yg: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    if min(ys.shape[-2:]) < _SSIM_SIZE:
        raise ValueError(f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after cropping")
    g1 = torch.from_numpy(gaussian_window()).to(ys.device)
    win = torch.outer(g1, g1)[None, None]
    x = ys[:, None]
    y = yg[:, None]

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    mu_x = filt(x)
    mu_y = filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + _C1) * (2.0 * sxy + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (sxx + syy + _C2)
    return (num / den).mean(dim=(1, 2, 3))
