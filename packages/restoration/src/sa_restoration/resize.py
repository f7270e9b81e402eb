"""MATLAB-compatible bicubic resize (``imresize(img, scale)`` with the default ``'bicubic'`` method).

The super-resolution benchmarks (Set5, Set14, BSD100, Urban100, Manga109, DIV2K ``LR_bicubic``) were made
with MATLAB's ``imresize``, which differs from ``cv2.resize``/PIL in two ways that matter for PSNR:

* when downscaling it *antialiases*: the cubic kernel is stretched by ``1/scale`` (``h(x) = s * k(s * x)``,
  support ``4 / s`` input pixels), so every input pixel under the footprint contributes;
* outside the image it mirrors the data (*symmetric* padding, the edge pixel repeated: ``... 2 1 | 1 2 3``).

Algorithm implemented here (MATLAB's ``contributions``), for each axis with input length ``n`` and scale
``s`` (output length ``ceil(n * s)``), in 1-based coordinates:

* output pixel ``u`` maps to ``x = u / s + 0.5 * (1 - 1 / s)``;
* the taps are ``left + 0 .. P - 1`` with ``left = floor(x - width / 2)``, ``width = 4 / s`` when
  downscaling (``4`` when upscaling) and ``P = ceil(width) + 2``;
* weight ``h(x - j)`` with Keys' cubic kernel, ``a = -0.5``, (stretched as above when downscaling), then
  normalised so the weights of each output pixel sum to one;
* tap indices outside ``1 .. n`` are mirrored symmetrically.

The two axes are resized one after the other (rows first, as MATLAB does for equal scales). Each axis is a
sparse ``(out, in)`` matrix (mirrored taps summed into their in-range columns) applied with one sparse
matrix product, in float64; a 512x512x3 image is degraded x1/4 in a few milliseconds.

How close to MATLAB this is (there is no MATLAB here, so this is inferred from properties, see the tests):

* it equals, to ~1e-12, an independent per-output-pixel loop implementation of the algorithm above;
* constants stay constant, linear ramps are reproduced exactly away from the borders (the normalised cubic
  kernel reproduces degree-1 polynomials);
* it differs from ``cv2.resize(INTER_CUBIC)`` (``a = -0.75``, no antialias: aliased, ~several dB apart on
  textured images) and from ``INTER_AREA`` (box filter);
* the bicubic baselines on the ``sr-sample`` test set (astronaut, camera, coffee, chelsea, rocket; PSNR-Y,
  crop = scale, LR rounded to 8-bit like the stored PNGs) give 31.953 dB (x2) and 28.355 dB (x4) against
  the reference numbers 31.95 / 28.35 measured with MATLAB-style bicubic (the gray camera measured on its
  gray values, the MATLAB-script convention; replicated to RGB it would add 1.32 dB to that image and
  give means of 32.22 / 28.62). Per-image differences of a wrong kernel or no antialiasing are 0.3-1.5 dB
  (no antialias: 32.61 / 27.81; OpenCV INTER_CUBIC both ways: 32.53 / 27.42, gray-as-RGB means).

Known deviation: MATLAB's ``imresize`` on a ``uint8`` image rounds to ``uint8`` after *each* axis; here the
computation is float64 throughout and callers round once (the BasicSR ``imresize`` convention). The
difference is below one grey level and changes the PSNR of the benchmarks by ~0.01 dB or less.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

__all__ = ["bicubic_upscale", "cubic", "imresize", "resize_weights"]


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), support ``[-2, 2]``."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return np.asarray(near + far, dtype=np.float64)


def _output_length(in_len: int, scale: float) -> int:
    # MATLAB: ceil(scale * in); guard against 0.5 * 4 = 1.9999999 style float noise.
    return max(1, math.ceil(in_len * scale - 1e-9))


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: tap indices (0-based, already mirrored into range) and normalised weights."""
    width = 4.0
    if scale < 1.0 and antialias:
        width = 4.0 / scale
    u = np.arange(1, out_len + 1, dtype=np.float64)
    x = u / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(x - width / 2.0)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    dist = x[:, None] - idx
    if scale < 1.0 and antialias:
        w = scale * cubic(scale * dist)
    else:
        w = cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated.
    period = 2 * in_len
    j = np.mod(idx.astype(np.int64) - 1, period)
    j = np.where(j < in_len, j, period - 1 - j)
    return j, w


@lru_cache(maxsize=64)
def _weight_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> sp.csr_matrix:
    j, w = _contributions(in_len, out_len, scale, antialias)
    rows = np.repeat(np.arange(out_len), j.shape[1])
    # csr construction sums duplicate (row, col) entries: mirrored taps fold onto their source pixel.
    m = sp.csr_matrix((w.ravel(), (rows, j.ravel())), shape=(out_len, in_len), dtype=np.float64)
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def resize_weights(in_len: int, scale: float, *, antialias: bool = True) -> np.ndarray:
    """Dense ``(ceil(in_len * scale), in_len)`` resampling matrix of one axis (for inspection and tests)."""
    out_len = _output_length(in_len, scale)
    return np.asarray(_weight_matrix(in_len, out_len, float(scale), antialias).toarray())


def _resize_axis(img: np.ndarray, axis: int, scale: float, antialias: bool) -> np.ndarray:
    in_len = img.shape[axis]
    out_len = _output_length(in_len, scale)
    m = _weight_matrix(in_len, out_len, float(scale), antialias)
    moved = np.moveaxis(img, axis, 0)
    flat = moved.reshape(in_len, -1)
    out = np.asarray(m @ flat).reshape((out_len,) + moved.shape[1:])
    return np.moveaxis(out, 0, axis)


def imresize(img: np.ndarray, scale: float, *, antialias: bool = True) -> np.ndarray:
    """Resizes ``img`` (HxW or HxWxC) by ``scale`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    Output size is ``ceil(H * scale) x ceil(W * scale)``. Float input keeps its dtype (float32 in, float32
    out; computed in float64) and is *not* clipped: bicubic overshoots slightly outside the input range.
    Integer input is converted to float64 without rescaling and the float64 result is returned (round it
    yourself). ``antialias=False`` gives MATLAB's ``'Antialiasing', false``.
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC array, got shape {arr.shape}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"cannot resize an empty image of shape {arr.shape}")
    out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    x = arr.astype(np.float64, copy=False)
    if scale != 1.0:
        x = _resize_axis(x, 0, scale, antialias)
        x = _resize_axis(x, 1, scale, antialias)
    return np.ascontiguousarray(x, dtype=out_dtype)


def bicubic_upscale(img: np.ndarray, scale: float) -> np.ndarray:
    """The bicubic super-resolution baseline: ``imresize(img, scale)`` with ``scale > 1``."""
    if scale < 1:
        raise ValueError(f"bicubic_upscale needs scale >= 1, got {scale}")
    return imresize(img, scale)
