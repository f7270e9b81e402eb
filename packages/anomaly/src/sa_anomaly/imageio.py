"""Image files: PNG/JPEG/BMP/TIFF reading to float RGB, heatmap overlays, titled side-by-side panels with a
colour bar.

PNG writing, the JET scale and titled panels are :mod:`shared_attention.io`'s: :func:`encode_png` (with
``text=`` for ``tEXt`` entries such as the score range of a heatmap's colour scale), :func:`write_png` and
:func:`colourize` are re-exported; :func:`titled_panels` is the core's with this package's defaults (a panel
height kept within 160-512 pixels, float RGB out). Float and bool images mean ``[0, 1]`` and are rounded half
up to 8 bit; files are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared_attention import io as media_io
from shared_attention.io import colourize, encode_png, write_png

__all__ = [
    "IMAGE_SUFFIXES",
    "decode_image",
    "read_image",
    "read_mask",
    "encode_png",
    "write_png",
    "colourize",
    "heatmap_overlay",
    "titled_panels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> ``(H, W, 3)`` float32 RGB in [0, 1] (gray replicated, alpha dropped).

    Raises:
        ValueError: naming ``name`` when the bytes are not a readable image.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ValueError(f"{name}: not a readable image (PNG, JPEG, BMP or TIFF expected)")
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        raise ValueError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"{name}: unsupported channel count {img.shape[2]}")
    return np.ascontiguousarray(img, dtype=np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as ``(H, W, 3)`` float32 RGB in [0, 1]."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from exc
    return decode_image(data, str(p))


def read_mask(path: str | Path) -> np.ndarray:
    """Reads a ground-truth mask as ``(H, W)`` bool (any non-zero pixel is anomalous)."""
    return read_image(path).max(axis=2) > 0


def heatmap_overlay(
    img: np.ndarray, heat: np.ndarray, vmin: float | None = None, vmax: float | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Blends a JET-coloured heatmap over an image: ``(H, W, 3)`` + ``(h, w)`` -> ``(H, W, 3)`` in [0, 1].

    The heatmap is resized to the image and scaled to [0, 1] by ``vmin``/``vmax`` (default: its own range).
    """
    import cv2

    h, w = img.shape[:2]
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    lo = float(heat.min()) if vmin is None else vmin
    hi = float(heat.max()) if vmax is None else vmax
    out = colourize(heat, lo, hi)  # float32; blended in place (full-size maps of large uploads)
    out *= alpha
    out += (1 - alpha) * np.asarray(img, dtype=np.float32)
    return np.clip(out, 0, 1, out=out)


def titled_panels(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    legend: tuple[float, float] | None = None,
    legend_label: str = "score",
    height: int | None = None,
) -> np.ndarray:
    """Side-by-side panels, each with its title above it, and optionally a colour bar for ``legend = (vmin,
    vmax)`` on the right (:func:`shared_attention.io.titled_panels`, float RGB out).

    Args:
        panels: ``(h, w)`` gray or ``(h, w, 3)`` RGB images in [0, 1] (bool masks allowed); sizes may differ.
        titles: one per panel.
        legend: the score values at the two ends of the JET scale used in the panels (``None``: no bar).
        legend_label: the bar's caption.
        height: panel height in pixels (default: the first panel's, kept within 160-512 so titles stay
            legible and previews small); panels are scaled to it with their aspect kept.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1] on a white background.

    Raises:
        ValueError: when ``titles`` and ``panels`` differ in number or there is no panel.
    """
    target = height or (min(512, max(160, int(panels[0].shape[0]))) if panels else None)
    out = media_io.titled_panels(panels, titles, height=target, colour_scale=legend, scale_label=legend_label)
    return out.astype(np.float32) / 255
